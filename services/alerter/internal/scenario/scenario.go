// Package scenario reads the alerter's golden scenario files and renders the alerts
// they produce, so that one file of heartbeats in and one golden file of alerts out are
// checked both against the pure state machine (package detector) and through the
// service on a stream. Test support only.
//
// A scenario is a list of lines; each advances a fake clock and then feeds one or more
// heartbeats, or a timer tick:
//
//	# comment
//	shard shard-1                      the shard (default shard-1)
//	primary 10.0.0.1:6379              the primary agents probe (default 10.0.0.1:6379)
//	config fail-threshold=3 ...        detector settings by flag name
//	+0 a ok                            agent a: a healthy probe
//	+250ms a,b fail err="refused" *3   a and b: a failed probe, three times 250ms apart
//	+250ms tick                        a timer tick
//	+0 a dup                           a's last heartbeat again (new event id, same seq)
//	+0 a old                           a heartbeat with a seq below a's last one
//	+0 a restart ok                    a new agent run (new AgentStart, seq 1)
//	+0 a prev                          a late heartbeat of a's previous run (next seq)
//
// Options after ok/fail: err="..." primary=ADDR epoch=N flags=F1,F2 frozen role=slave
// drift=param:want:got interval=1s age=40s (probed that long before it is sent).
package scenario

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/heartline/heartline/services/alerter/detector"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/redisinfo"
)

// Start is the scenario clock's origin.
var Start = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// Step is one moment of a scenario: a timer tick or one heartbeat.
type Step struct {
	At     time.Duration // since Start
	Tick   bool
	Event  events.Event // the heartbeat (when not Tick)
	Line   int
	Remark string // "dup" or "old" for the duplicates a scenario sends on purpose
}

// Scenario is a parsed scenario file.
type Scenario struct {
	Name   string
	Shard  string
	Config detector.Config
	Steps  []Step
}

type agentState struct {
	copies   int // duplicates sent, to give each its own event id
	run      int
	seq      uint64
	last     *events.Event
	prevLast *events.Event // last heartbeat of the previous run
}

// Parse reads a scenario.
func Parse(name string, data []byte) (Scenario, error) {
	sc := Scenario{Name: name, Shard: "shard-1", Config: detector.DefaultConfig()}
	primary := "10.0.0.1:6379"
	agents := map[string]*agentState{}
	var clock time.Duration
	s := bufio.NewScanner(bytes.NewReader(data))
	for n := 1; s.Scan(); n++ {
		line := strings.TrimSpace(s.Text())
		if i := strings.Index(line, "#"); i >= 0 && !strings.Contains(line[:i], `"`) {
			line = strings.TrimSpace(line[:i])
		}
		if line == "" {
			continue
		}
		words, err := split(line)
		if err != nil {
			return sc, fmt.Errorf("%s:%d: %v", name, n, err)
		}
		fail := func(format string, a ...any) error {
			return fmt.Errorf("%s:%d: %s", name, n, fmt.Sprintf(format, a...))
		}
		switch words[0] {
		case "shard":
			sc.Shard = words[1]
			continue
		case "primary":
			primary = words[1]
			continue
		case "config":
			for _, kv := range words[1:] {
				if err := setConfig(&sc.Config, kv); err != nil {
					return sc, fail("%v", err)
				}
			}
			continue
		}
		if !strings.HasPrefix(words[0], "+") {
			return sc, fail("want +DURATION at the start of %q", line)
		}
		step, err := time.ParseDuration(strings.TrimPrefix(words[0], "+"))
		if words[0] == "+0" {
			step, err = 0, nil
		}
		if err != nil {
			return sc, fail("%v", err)
		}
		repeat := 1
		if last := words[len(words)-1]; strings.HasPrefix(last, "*") {
			if repeat, err = strconv.Atoi(last[1:]); err != nil || repeat < 1 {
				return sc, fail("bad repeat %q", last)
			}
			words = words[:len(words)-1]
		}
		if len(words) < 2 {
			return sc, fail("want an agent list or tick")
		}
		for r := 0; r < repeat; r++ {
			clock += step
			if words[1] == "tick" {
				sc.Steps = append(sc.Steps, Step{At: clock, Tick: true, Line: n})
				continue
			}
			for _, name := range strings.Split(words[1], ",") {
				a := agents[name]
				if a == nil {
					a = &agentState{run: 1}
					agents[name] = a
				}
				ev, remark, err := heartbeat(sc.Shard, primary, name, a, clock, words[2:])
				if err != nil {
					return sc, fail("%v", err)
				}
				sc.Steps = append(sc.Steps, Step{At: clock, Event: ev, Line: n, Remark: remark})
			}
		}
	}
	return sc, s.Err()
}

func heartbeat(shard, primary, name string, a *agentState, clock time.Duration, words []string) (events.Event, string, error) {
	if len(words) == 0 {
		return events.Event{}, "", fmt.Errorf("want ok, fail, dup, old or restart after the agent")
	}
	switch words[0] {
	case "dup", "old":
		if a.last == nil {
			return events.Event{}, "", fmt.Errorf("%s %s before any heartbeat", name, words[0])
		}
		e := *a.last
		hb := *(e.Payload.(*events.Heartbeat))
		a.copies++
		e.ID += fmt.Sprintf("-%s%d", words[0], a.copies)
		e.CorrelationID = e.ID
		if words[0] == "old" {
			if hb.Seq < 2 {
				return events.Event{}, "", fmt.Errorf("%s old needs two heartbeats first", name)
			}
			hb.Seq--
		}
		e.Payload = &hb
		return e, words[0], nil
	case "prev":
		if a.prevLast == nil {
			return events.Event{}, "", fmt.Errorf("%s prev before a restart", name)
		}
		e := *a.prevLast
		hb := *(e.Payload.(*events.Heartbeat))
		hb.Seq++
		a.copies++
		e.ID = fmt.Sprintf("%s-%d-%d-late%d", name, a.run-1, hb.Seq, a.copies)
		e.CorrelationID = e.ID
		e.Payload = &hb
		return e, "prev", nil
	case "restart":
		a.prevLast = a.last
		a.run++
		a.seq = 0
		words = words[1:]
		if len(words) == 0 {
			return events.Event{}, "", fmt.Errorf("want ok or fail after restart")
		}
	}
	a.seq++
	hb := &events.Heartbeat{Seq: a.seq, AgentStart: Start.Add(time.Duration(a.run) * time.Millisecond), Interval: 250 * time.Millisecond,
		Replica: events.ReplicaState{Addr: "replica-" + name + ":6379", Reachable: true, Role: "slave", LinkUp: true,
			LastIOSeconds: 0, Offset: 5000, ReplID: "replid-1", Keys: 100},
		Primary: events.PrimaryProbe{Addr: primary, OK: true, Role: "master", Offset: 5000, ReplID: "replid-1", Keys: 100, Replicas: 2}}
	var epoch uint64
	var age time.Duration
	switch words[0] {
	case "ok":
	case "fail":
		hb.Primary = events.PrimaryProbe{Addr: primary, OK: false, Error: "connection refused"}
		hb.Replica.LinkUp = false
	default:
		return events.Event{}, "", fmt.Errorf("want ok or fail, got %q", words[0])
	}
	for _, opt := range words[1:] {
		k, v, _ := strings.Cut(opt, "=")
		switch k {
		case "err":
			hb.Primary.Error = v
		case "primary":
			hb.Primary.Addr = v
		case "epoch":
			n, err := strconv.ParseUint(v, 10, 64)
			if err != nil {
				return events.Event{}, "", fmt.Errorf("epoch %q: %v", v, err)
			}
			epoch = n
		case "flags":
			for _, f := range strings.Split(v, ",") {
				hb.Flags = append(hb.Flags, events.Flag(f))
			}
		case "frozen":
			hb.Replica.Frozen = true
			hb.Replica.MasterHost, hb.Replica.MasterPort, hb.Replica.LinkUp = redisinfo.DefaultPark.Host, redisinfo.DefaultPark.Port, false
		case "role":
			hb.Primary.Role = v
		case "regressed":
			hb.Primary.Offset, hb.Primary.ReplID, hb.Primary.Keys = 0, "replid-2", 0
		case "drift":
			parts := strings.SplitN(v, ":", 3)
			if len(parts) != 3 {
				return events.Event{}, "", fmt.Errorf("drift %q: want param:want:got", v)
			}
			hb.Drift = append(hb.Drift, events.ConfigDrift{Node: hb.Primary.Addr, Param: parts[0], Want: parts[1], Got: parts[2]})
		case "age":
			d, err := time.ParseDuration(v)
			if err != nil {
				return events.Event{}, "", err
			}
			age = d
		case "interval":
			d, err := time.ParseDuration(v)
			if err != nil {
				return events.Event{}, "", err
			}
			hb.Interval = d
		default:
			return events.Event{}, "", fmt.Errorf("unknown option %q", opt)
		}
	}
	id := fmt.Sprintf("%s-%d-%d", name, a.run, a.seq)
	e := events.Event{ID: id, Schema: events.SchemaVersion, Kind: events.KindHeartbeat, Shard: shard,
		Source: events.Source{Service: "agent", Instance: name}, Time: Start.Add(clock - age), CorrelationID: id, Epoch: epoch, Payload: hb}
	if err := events.Validate(e); err != nil {
		return events.Event{}, "", err
	}
	a.last = &e
	return e, "", nil
}

// split splits a line into words, keeping double-quoted values (err="a b") whole.
func split(line string) ([]string, error) {
	var out []string
	var cur strings.Builder
	quoted := false
	for _, c := range line {
		switch {
		case c == '"':
			quoted = !quoted
		case (c == ' ' || c == '\t') && !quoted:
			if cur.Len() > 0 {
				out = append(out, cur.String())
				cur.Reset()
			}
		default:
			cur.WriteRune(c)
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote")
	}
	if cur.Len() > 0 {
		out = append(out, cur.String())
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty line")
	}
	return out, nil
}

func setConfig(c *detector.Config, kv string) error {
	k, v, ok := strings.Cut(kv, "=")
	if !ok {
		return fmt.Errorf("config %q: want name=value", kv)
	}
	dur := func(p *time.Duration) error {
		d, err := time.ParseDuration(v)
		*p = d
		return err
	}
	num := func(p *int) error {
		n, err := strconv.Atoi(v)
		*p = n
		return err
	}
	switch k {
	case "fail-threshold":
		return num(&c.FailThreshold)
	case "down-after":
		return dur(&c.DownAfter)
	case "recency-intervals":
		return num(&c.RecencyIntervals)
	case "recency-min":
		return dur(&c.RecencyMin)
	case "agent-lost-after":
		return dur(&c.AgentLostAfter)
	case "recover-probes":
		return num(&c.RecoverProbes)
	case "flap-changes":
		return num(&c.FlapChanges)
	case "flap-window":
		return dur(&c.FlapWindow)
	case "max-heartbeat-age":
		return dur(&c.MaxAge)
	}
	return fmt.Errorf("unknown config %q", k)
}

// Output renders alerts and the end state of a run in the golden format. Incident ids
// are numbered in order of appearance (#1, #2) so that random ids compare equal.
type Output struct {
	b         strings.Builder
	incidents map[string]int
}

func rel(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return fmt.Sprintf("@%.3fs", t.Sub(Start).Seconds())
}

// Alert renders one alert event decided at the scenario time at.
func (o *Output) Alert(at time.Duration, e events.Event) {
	a, ok := e.Payload.(*events.Alert)
	if !ok {
		fmt.Fprintf(&o.b, "@%.3fs %s: not an alert payload (%T)\n", at.Seconds(), e.Kind, e.Payload)
		return
	}
	if o.incidents == nil {
		o.incidents = map[string]int{}
	}
	n, ok := o.incidents[a.IncidentID]
	if !ok {
		n = len(o.incidents) + 1
		o.incidents[a.IncidentID] = n
	}
	fmt.Fprintf(&o.b, "@%.3fs %s %s %s %s incident=#%d corr=%s epoch=%d flapping=%t primary=%s agents_down=%d/%d failed_probes=%d down_for=%s first_failure=%s last_hb=%s\n",
		at.Seconds(), strings.TrimPrefix(string(e.Kind), "alert."), a.Code, a.Severity, a.State, n, e.CorrelationID, e.Epoch,
		a.Flapping, a.Primary, a.AgentsDown, a.AgentsReporting, a.FailedProbes, a.DownFor, rel(a.FirstFailure), a.LastHeartbeatID)
	fmt.Fprintf(&o.b, "    %s\n", a.Reason)
}

// End renders the heartbeat counts and the shard's final state.
func (o *Output) End(results map[string]int, state events.State) {
	keys := make([]string, 0, len(results))
	for k := range results {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	o.b.WriteString("heartbeats:")
	for _, k := range keys {
		fmt.Fprintf(&o.b, " %s=%d", k, results[k])
	}
	fmt.Fprintf(&o.b, "\nfinal state: %s\n", state)
}

// String is the rendered output.
func (o *Output) String() string { return o.b.String() }

// WriteTo writes the rendered output.
func (o *Output) WriteTo(w io.Writer) (int64, error) {
	n, err := io.WriteString(w, o.b.String())
	return int64(n), err
}
