package agent

import (
	"context"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"

	"github.com/heartline/heartline/shared/events"
)

// queueConfigGets adds one CONFIG GET per declared parameter to a pipeline.
func queueConfigGets(ctx context.Context, p redis.Pipeliner, params []desiredParam) []*redis.MapStringStringCmd {
	cmds := make([]*redis.MapStringStringCmd, len(params))
	for i, d := range params {
		cmds[i] = p.ConfigGet(ctx, d.Name)
	}
	return cmds
}

// driftFrom compares the CONFIG GET replies of one node with the declared values. An
// error means the check failed: the previous result stands.
func driftFrom(node string, params []desiredParam, cmds []*redis.MapStringStringCmd) (drift []events.ConfigDrift, err error) {
	for i, d := range params {
		if i >= len(cmds) || cmds[i] == nil {
			return nil, context.Canceled
		}
		m, err := cmds[i].Result()
		if err != nil {
			return nil, err
		}
		got, known := m[d.Name]
		if !known {
			got = "(unknown parameter)"
		}
		if !known || !sameSetting(d.Want, got) {
			drift = append(drift, events.ConfigDrift{Node: node, Param: d.Name, Want: d.Want, Got: got})
		}
	}
	return drift, nil
}

// sameSetting compares a declared value with what CONFIG GET returned, the way Redis
// reads its configuration: case-insensitive, blanks collapsed, quotes around the
// declared value ignored, memory sizes in any unit ("1gb" is 1073741824), yes/no.
func sameSetting(want, got string) bool {
	w, g := normSetting(want), normSetting(got)
	if w == g {
		return true
	}
	wb, ok1 := memBytes(w)
	gb, ok2 := memBytes(g)
	return ok1 && ok2 && wb == gb
}

func normSetting(s string) string {
	s = strings.ToLower(strings.Join(strings.Fields(unquote(strings.TrimSpace(s))), " "))
	switch s {
	case "true", "on":
		return "yes"
	case "false", "off":
		return "no"
	}
	return s
}

// memBytes parses a Redis memory value: 1k = 1000, 1kb = 1024, likewise m/mb, g/gb.
func memBytes(s string) (int64, bool) {
	units := []struct {
		suffix string
		mul    int64
	}{{"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30}, {"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"b", 1}}
	mul := int64(1)
	for _, u := range units {
		if strings.HasSuffix(s, u.suffix) {
			s, mul = strings.TrimSuffix(s, u.suffix), u.mul
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, false
	}
	return n * mul, true
}
