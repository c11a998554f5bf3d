// Package fault is the chaos injector's fault layer. Every fault is an Apply/Recover
// pair acting on one concrete target (see package target): process faults go through
// a driver (local processes, Docker containers, Kubernetes pods), Redis-level faults
// talk to the node, and network faults add toxics to the links the chaos runner routes
// through its embedded toxiproxy. The Catalogue says, for every kind, what it may
// target and which parameters it takes; parameters are validated before anything acts.
package fault

import (
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/heartline/heartline/services/chaos/internal/target"
)

// Errors.
var (
	ErrUnknownKind = errors.New("unknown fault kind")
	ErrBadParam    = errors.New("bad fault parameter")
	ErrBadTarget   = errors.New("fault cannot act on this target")
)

// Kind names a fault.
type Kind string

// The fault kinds.
const (
	Kill               Kind = "kill"
	Terminate          Kind = "terminate"
	Pause              Kind = "pause"
	Restart            Kind = "restart"
	RestartWrongConfig Kind = "restart-wrong-config"
	ShutdownNoSave     Kind = "shutdown-nosave"
	ClientPause        Kind = "client-pause"
	ResyncStorm        Kind = "resync-storm"
	LoadSpike          Kind = "load-spike"
	Partition          Kind = "partition"
	Latency            Kind = "latency"
	Reset              Kind = "reset"
	Bandwidth          Kind = "bandwidth"
)

// DurationUse says what a fault's duration means.
type DurationUse int

const (
	// DurationOptional: the fault is recovered after the duration if one is given,
	// else when the attack is recovered or halted.
	DurationOptional DurationUse = iota
	// DurationRequired: the fault is a timed one (pause, CLIENT PAUSE).
	DurationRequired
)

// ParamType is the type of a parameter's value.
type ParamType string

const (
	TDuration ParamType = "duration"
	TInt      ParamType = "int"
	TBool     ParamType = "bool"
	TEnum     ParamType = "enum"
	TString   ParamType = "string"
	// TRestart is a supervisor restart policy: "supervisor" (its default delay),
	// "never" (until recovery), or a duration ("0s": at once).
	TRestart ParamType = "restart"
)

// Param describes one parameter.
type Param struct {
	Name     string    `json:"name"`
	Type     ParamType `json:"type"`
	Default  string    `json:"default,omitempty"`
	Enum     []string  `json:"enum,omitempty"`
	Min, Max int64     `json:"-"`
	Help     string    `json:"help"`
}

// Info describes a fault kind.
type Info struct {
	Kind    Kind          `json:"kind"`
	Group   string        `json:"group"` // process, redis, network
	Help    string        `json:"help"`
	Targets []target.Kind `json:"targets"`
	// Role restricts node targets ("" any).
	Role     string      `json:"role,omitempty"`
	Duration DurationUse `json:"-"`
	Params   []Param     `json:"params"`
	// Recover says what recovery does, for the docs.
	Recover string `json:"recover"`
}

// MaxDuration bounds any fault's duration.
const MaxDuration = 24 * time.Hour

var restartAfter = Param{Name: "restart_after", Type: TRestart, Default: "supervisor",
	Help: `when the local driver's supervisor starts the process again: "supervisor" (its configured delay), "never" (at recovery), or a duration ("0s": at once)`}

// Catalogue lists every fault kind.
var Catalogue = []Info{
	{Kind: Kill, Group: "process", Targets: []target.Kind{target.Node, target.Service},
		Help:    "kill -9 the process (docker kill; Kubernetes: delete the pod with no grace period)",
		Params:  []Param{restartAfter},
		Recover: "start it again if it is still down"},
	{Kind: Terminate, Group: "process", Targets: []target.Kind{target.Node, target.Service},
		Help:    "SIGTERM the process and wait for it to exit (Kubernetes: delete the pod with its grace period)",
		Params:  []Param{restartAfter},
		Recover: "start it again if it is still down"},
	{Kind: Pause, Group: "process", Targets: []target.Kind{target.Node, target.Service}, Duration: DurationRequired,
		Help:    "SIGSTOP the process (docker pause) for the duration: connections are accepted, nothing answers",
		Recover: "SIGCONT (docker unpause)"},
	{Kind: Restart, Group: "process", Targets: []target.Kind{target.Node, target.Service},
		Help: "stop the process and start it again after a delay, with its data or empty",
		Params: []Param{
			{Name: "delay", Type: TDuration, Default: "0s", Help: "time between the stop and the start (0s: immediately)"},
			{Name: "wipe", Type: TBool, Default: "false", Help: "delete the node's RDB/AOF first: it comes back empty (the restart-with-persistence-off case)"},
			{Name: "graceful", Type: TBool, Default: "false", Help: "stop with SIGTERM instead of SIGKILL"},
		},
		Recover: "start it again if it is still down"},
	{Kind: RestartWrongConfig, Group: "process", Targets: []target.Kind{target.Node},
		Help: "restart a Redis node with a wrong configuration file (local driver)",
		Params: []Param{
			{Name: "config", Type: TEnum, Default: "no-min-replicas", Enum: []string{"no-min-replicas", "persistence-off", "custom"},
				Help: "no-min-replicas: min-replicas-to-write removed; persistence-off: save \"\" and appendonly no; custom: the directives parameter"},
			{Name: "directives", Type: TString, Help: `for config=custom: "name value; name value" (an empty value removes the directive)`},
			{Name: "delay", Type: TDuration, Default: "0s", Help: "time between the stop and the start"},
			{Name: "wipe", Type: TBool, Default: "false", Help: "delete the node's data files first"},
		},
		Recover: "write the declared config file back and apply it with CONFIG SET (no second restart)"},
	{Kind: ShutdownNoSave, Group: "redis", Targets: []target.Kind{target.Node},
		Help:    "SHUTDOWN NOSAVE: the node exits without saving (the supervisor may start it again)",
		Params:  []Param{restartAfter},
		Recover: "start it again if it is still down"},
	{Kind: ClientPause, Group: "redis", Targets: []target.Kind{target.Node}, Duration: DurationRequired,
		Help: "CLIENT PAUSE for the duration: the node stops serving clients (all commands or writes only)",
		Params: []Param{
			{Name: "mode", Type: TEnum, Default: "all", Enum: []string{"all", "write"}, Help: "pause every command or only writes"},
		},
		Recover: "CLIENT UNPAUSE"},
	{Kind: ResyncStorm, Group: "redis", Targets: []target.Kind{target.Node}, Role: target.RoleReplica,
		Help:    "force a full resync of replicas at once: REPLICAOF NO ONE then REPLICAOF <its primary> in one MULTI, which gives the replica a new replication id so that its primary must send a full RDB",
		Recover: "nothing to undo: the sync completes by itself"},
	{Kind: LoadSpike, Group: "redis", Targets: []target.Kind{target.Node}, Role: target.RolePrimary, Duration: DurationRequired,
		Help: "a bounded write-load spike on a primary: clients pushing filler values onto one capped list key",
		Params: []Param{
			{Name: "rate", Type: TInt, Default: "2000", Min: 1, Max: 100000, Help: "writes per second, all clients together"},
			{Name: "clients", Type: TInt, Default: "4", Min: 1, Max: 64, Help: "concurrent connections"},
			{Name: "value_bytes", Type: TInt, Default: "1024", Min: 1, Max: 1 << 20, Help: "size of each value"},
			{Name: "max_items", Type: TInt, Default: "10000", Min: 1, Max: 1000000, Help: "the list is trimmed to this length: memory stays bounded"},
		},
		Recover: "stop the writers and UNLINK the filler key (it also expires on its own)"},
	{Kind: Partition, Group: "network", Targets: []target.Kind{target.Link},
		Help: "cut the link",
		Params: []Param{
			{Name: "mode", Type: TEnum, Default: "blackhole", Enum: []string{"blackhole", "refuse"},
				Help: "blackhole: bytes are dropped and connections hang (a toxiproxy timeout toxic with timeout 0); refuse: the proxy stops listening and closes its connections (connection refused)"},
		},
		Recover: "remove the toxic / start the proxy again"},
	{Kind: Latency, Group: "network", Targets: []target.Kind{target.Link},
		Help: "add latency with jitter to every chunk of data on the link",
		Params: []Param{
			{Name: "latency", Type: TDuration, Default: "100ms", Help: "added delay"},
			{Name: "jitter", Type: TDuration, Default: "0s", Help: "random +/- variation of the delay"},
			{Name: "direction", Type: TEnum, Default: "both", Enum: []string{"both", "upstream", "downstream"}, Help: "upstream: client to server; downstream: server to client"},
		},
		Recover: "remove the toxics"},
	{Kind: Reset, Group: "network", Targets: []target.Kind{target.Link},
		Help: "reset connections (TCP RST) on the link",
		Params: []Param{
			{Name: "after", Type: TDuration, Default: "0s", Help: "reset each connection this long after it sends data (0s: at once)"},
		},
		Recover: "remove the toxic"},
	{Kind: Bandwidth, Group: "network", Targets: []target.Kind{target.Link},
		Help: "limit the link's bandwidth",
		Params: []Param{
			{Name: "rate_kbps", Type: TInt, Default: "64", Min: 1, Max: 10 << 20, Help: "KB per second"},
			{Name: "direction", Type: TEnum, Default: "both", Enum: []string{"both", "upstream", "downstream"}, Help: "which direction is limited"},
		},
		Recover: "remove the toxics"},
}

// Lookup returns the description of a kind.
func Lookup(k Kind) (Info, error) {
	for _, i := range Catalogue {
		if i.Kind == k {
			return i, nil
		}
	}
	return Info{}, fmt.Errorf("%w %q (want one of %s)", ErrUnknownKind, truncate(string(k)), strings.Join(KindNames(), ", "))
}

// KindNames lists every kind.
func KindNames() []string {
	var out []string
	for _, i := range Catalogue {
		out = append(out, string(i.Kind))
	}
	return out
}

// Params are validated parameter values with defaults filled in.
type Params map[string]string

// CheckParams validates raw parameters against the kind and fills in defaults. Every
// problem is reported (joined), each naming the parameter.
func (i Info) CheckParams(raw map[string]string) (Params, error) {
	out := Params{}
	var errs []error
	known := map[string]Param{}
	for _, p := range i.Params {
		known[p.Name] = p
		if p.Default != "" {
			out[p.Name] = p.Default
		}
	}
	names := make([]string, 0, len(raw))
	for n := range raw {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		v := raw[n]
		p, ok := known[n]
		if !ok {
			var have []string
			for _, p := range i.Params {
				have = append(have, p.Name)
			}
			hint := "it takes none"
			if len(have) > 0 {
				hint = "it takes " + strings.Join(have, ", ")
			}
			errs = append(errs, fmt.Errorf("%w: %s has no parameter %q (%s)", ErrBadParam, i.Kind, truncate(n), hint))
			continue
		}
		if err := p.check(v); err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: %s: %v", ErrBadParam, i.Kind, n, err))
			continue
		}
		out[n] = strings.TrimSpace(v)
	}
	if i.Kind == RestartWrongConfig && out["config"] == "custom" && strings.TrimSpace(out["directives"]) == "" {
		errs = append(errs, fmt.Errorf("%w: %s: config custom needs directives", ErrBadParam, i.Kind))
	}
	if i.Kind == RestartWrongConfig && out["directives"] != "" {
		if _, err := ParseDirectives(out["directives"]); err != nil {
			errs = append(errs, fmt.Errorf("%w: %s: directives: %v", ErrBadParam, i.Kind, err))
		}
	}
	return out, errors.Join(errs...)
}

func (p Param) check(v string) error {
	v = strings.TrimSpace(v)
	switch p.Type {
	case TDuration:
		d, err := ParseDuration(v)
		if err != nil {
			return err
		}
		if d < 0 {
			return fmt.Errorf("%q: must not be negative", v)
		}
	case TRestart:
		if v == "supervisor" || v == "never" {
			return nil
		}
		d, err := ParseDuration(v)
		if err != nil || d < 0 {
			return fmt.Errorf("%q: want supervisor, never or a duration such as 0s or 2s", truncate(v))
		}
	case TInt:
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			return fmt.Errorf("%q: want an integer", truncate(v))
		}
		if n < p.Min || (p.Max > 0 && n > p.Max) {
			return fmt.Errorf("%d: want %d to %d", n, p.Min, p.Max)
		}
	case TBool:
		if _, err := strconv.ParseBool(v); err != nil {
			return fmt.Errorf("%q: want true or false", truncate(v))
		}
	case TEnum:
		for _, e := range p.Enum {
			if v == e {
				return nil
			}
		}
		return fmt.Errorf("%q: want one of %s", truncate(v), strings.Join(p.Enum, ", "))
	case TString:
		if len(v) > 1024 {
			return fmt.Errorf("longer than 1024 bytes")
		}
	}
	return nil
}

// ParseDuration parses a Go duration ("500ms", "2s", "1m30s"), with a clear error.
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("%q is not a duration (want for example 500ms, 2s, 1m30s)", truncate(s))
	}
	if d > MaxDuration {
		return 0, fmt.Errorf("%q is longer than %s", truncate(s), MaxDuration)
	}
	return d, nil
}

// Duration reads a validated duration parameter.
func (p Params) Duration(name string) time.Duration {
	d, _ := time.ParseDuration(p[name])
	return d
}

// Int reads a validated integer parameter.
func (p Params) Int(name string) int64 {
	n, _ := strconv.ParseInt(p[name], 10, 64)
	return n
}

// Bool reads a validated boolean parameter.
func (p Params) Bool(name string) bool {
	b, _ := strconv.ParseBool(p[name])
	return b
}

// CheckTarget reports whether the kind can act on t.
func (i Info) CheckTarget(t target.Target) error {
	ok := false
	for _, k := range i.Targets {
		if k == t.Kind {
			ok = true
		}
	}
	if !ok {
		var names []string
		for _, k := range i.Targets {
			names = append(names, string(k))
		}
		return fmt.Errorf("%w: %s acts on %s targets, not %s (%s)", ErrBadTarget, i.Kind, strings.Join(names, " or "), t.Kind, t)
	}
	if i.Role != "" && t.Kind == target.Node && t.Role != i.Role {
		return fmt.Errorf("%w: %s acts on a %s, and %s is a %s", ErrBadTarget, i.Kind, i.Role, t, t.Role)
	}
	return nil
}

// CheckSelector reports whether the kind can act on what sel selects, before
// resolution (for validating experiment files and API requests).
func (i Info) CheckSelector(sel target.Selector) error {
	t := target.Target{Kind: sel.Kind, Role: sel.Role, Shard: "x"}
	if sel.Kind == target.Node && sel.Role == "" {
		t.Role = i.Role // a node given by address: its role is known at resolution
	}
	err := i.CheckTarget(t)
	if err != nil {
		return fmt.Errorf("%w: %s acts on %s", ErrBadTarget, i.Kind, i.targetWords())
	}
	return nil
}

func (i Info) targetWords() string {
	var w []string
	for _, k := range i.Targets {
		switch k {
		case target.Node:
			if i.Role != "" {
				w = append(w, "a shard's "+i.Role+" (shard:<id>/"+i.Role+")")
			} else {
				w = append(w, "a Redis node (shard:<id>/primary, shard:<id>/replica, node:<addr>)")
			}
		case target.Service:
			w = append(w, "a service instance (ratequeue:instance:<n>)")
		case target.Link:
			w = append(w, "a link (link:<from>-><to>[@shard])")
		}
	}
	return strings.Join(w, " or ")
}

// ParseDirectives parses "name value; name value" (an empty value removes the
// directive from the config file).
func ParseDirectives(s string) ([][2]string, error) {
	var out [][2]string
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		k, v, _ := strings.Cut(part, " ")
		k = strings.ToLower(strings.TrimSpace(k))
		for _, c := range k {
			if !(c >= 'a' && c <= 'z' || c == '-' || c >= '0' && c <= '9') {
				return nil, fmt.Errorf("directive name %q: want letters, digits and -", truncate(k))
			}
		}
		switch k {
		case "port", "bind", "dir", "dbfilename", "logfile", "pidfile", "replicaof", "slaveof", "include", "rename-command":
			return nil, fmt.Errorf("directive %q may not be overridden (it would move or rename the node)", k)
		}
		out = append(out, [2]string{k, strings.TrimSpace(v)})
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("no directive")
	}
	return out, nil
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
