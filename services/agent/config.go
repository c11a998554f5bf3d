package agent

import (
	"fmt"
	"net"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/config"
	"github.com/heartline/heartline/shared/connect"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/topology"
)

// Config is the agent's whole configuration.
type Config struct {
	// Shard is the id of the shard the replica belongs to (the heartbeats' partition key).
	Shard string
	// Replica is the host:port of the replica this agent runs beside.
	Replica string
	// Primary is the host:port of the shard's primary. Empty: the topology's primary,
	// else the primary the replica follows (INFO master_host/master_port, unless parked).
	Primary string
	// Interval between probes.
	Interval time.Duration
	// ProbeTimeout bounds each probe of the replica and of the primary.
	ProbeTimeout time.Duration
	// UnfreezeAfter is how long a partial resync must look certain before the agent
	// unparks a replica it froze.
	UnfreezeAfter time.Duration
	// Freeze turns the restart-wipe guard on (default true).
	Freeze bool
	// ParkAddr is where a parked replica points (default 127.0.0.1:1, loopback; see
	// redisinfo.Park). It must be a loopback IP and a port where nothing listens.
	ParkAddr string
	// Desired is the declared configuration, "param=value,param=value", checked on the
	// primary and the replica every DriftEvery probes.
	Desired    string
	DriftEvery int
	// BufferSize bounds the heartbeats held while the stream is unavailable.
	BufferSize int
	// HTTPListen serves /healthz, /readyz and /metrics ("" = none).
	HTTPListen string
	// Instance names this agent in its heartbeats (default "agent-<replica>").
	Instance string
	// TopologyFile is the topology follower's local fallback copy ("" = none).
	TopologyFile    string
	LogLevel        string
	LogFormat       string
	ShutdownTimeout time.Duration
	Connect         connect.Config

	desired []desiredParam // parsed by Validate
	park    redisinfo.Park // parsed by Validate
}

// DefaultConfig returns the defaults, as the flags have them.
func DefaultConfig() Config {
	return Config{Interval: 250 * time.Millisecond, ProbeTimeout: 150 * time.Millisecond,
		UnfreezeAfter: time.Second, Freeze: true, ParkAddr: redisinfo.DefaultPark.Addr(), DriftEvery: 40, BufferSize: 2400,
		HTTPListen: "127.0.0.1:9101", ShutdownTimeout: 5 * time.Second}
}

// Register binds every setting to a flag (and its AGENT_ or HEARTLINE_ environment
// variable).
func (c *Config) Register(l *config.Loader) {
	d := DefaultConfig()
	l.String(&c.Shard, "shard", "", "id of the shard the replica belongs to (empty: the shard whose topology entry lists -replica, followed as lazarus moves the node between shards and the spare pool; no heartbeats while it is a spare)")
	l.String(&c.Replica, "replica", "", "host:port of the replica this agent runs beside (required)")
	l.String(&c.Primary, "primary", "", "host:port of the shard's primary; when set it wins over the topology, so leave it empty where lazarus fails over (default: the topology's primary, else the primary the replica follows)")
	l.Duration(&c.Interval, "interval", d.Interval, "time between probes")
	l.Duration(&c.ProbeTimeout, "probe-timeout", d.ProbeTimeout, "timeout of each probe of the replica and of the primary (below interval)")
	l.Duration(&c.UnfreezeAfter, "unfreeze-after", d.UnfreezeAfter, "how long a partial resync must look certain before the agent unparks the replica it froze")
	l.Bool(&c.Freeze, "freeze", d.Freeze, "park the replica (REPLICAOF <park-addr>) when its primary dies, so that it cannot resync from a primary that came back empty")
	l.String(&c.ParkAddr, "park-addr", d.ParkAddr, redisinfo.ParkUsage)
	l.Shared("park-addr")
	l.String(&c.Desired, "desired", "", `declared configuration checked on the primary and the replica, such as "min-replicas-to-write=1,appendonly=yes" (empty: no drift checks)`)
	l.Int(&c.DriftEvery, "drift-every", d.DriftEvery, "check configuration drift every this many probes (and after every primary restart)")
	l.Int(&c.BufferSize, "buffer", d.BufferSize, "heartbeats kept while the stream is unavailable (the oldest are dropped beyond this)")
	l.String(&c.HTTPListen, "http-listen", d.HTTPListen, "address of /healthz, /readyz and /metrics (empty: none)")
	l.String(&c.Instance, "instance", "", `this agent's name in its heartbeats (default "agent-<replica>")`)
	l.String(&c.TopologyFile, "topology-file", "", "local fallback copy of the topology, used when the kv store is unreachable at start (empty: none)")
	l.String(&c.LogLevel, "log-level", "info", "trace, debug, info, warn or error")
	l.Shared("log-level")
	l.String(&c.LogFormat, "log-format", "", "json or console (default: console on a terminal, else json)")
	l.Shared("log-format")
	l.Duration(&c.ShutdownTimeout, "shutdown-timeout", d.ShutdownTimeout, "how long to wait for buffered heartbeats and probes on shutdown")
	c.Connect.Register(l)
}

// Validate reports every problem with the configuration. It also parses Desired.
func (c *Config) Validate() error {
	var p config.Problems
	c.validate(&p)
	c.Connect.Validate(&p)
	p.Check(c.Shard == "" && c.Connect.Stream == "" && c.Connect.KV == "" && c.TopologyFile == "",
		"shard: without -shard (AGENT_SHARD) the agent follows its node in the topology, so it needs one: set -kv or -stream (HEARTLINE_KV, HEARTLINE_STREAM), or -topology-file")
	return p.Err()
}

// validate checks the agent's own settings (without the stream and kv settings, which
// tests that inject a publisher do not set).
func (c *Config) validate(p *config.Problems) {
	switch {
	case c.Shard == "":
		// Membership mode: the shard is the one whose topology entry lists -replica
		// (none while the node is a spare); checked against the topology at run time.
	case !events.ValidShardID(c.Shard):
		p.Addf("shard %q: want 1-64 of A-Z a-z 0-9 _ -", c.Shard)
	}
	if c.Replica == "" {
		p.Addf("replica is required (-replica host:port or AGENT_REPLICA)")
	} else if err := topology.CheckAddr(c.Replica); err != nil {
		p.Addf("replica %q: %v", c.Replica, err)
	}
	if c.Primary != "" {
		if err := topology.CheckAddr(c.Primary); err != nil {
			p.Addf("primary %q: %v", c.Primary, err)
		} else if c.Primary == c.Replica {
			p.Addf("primary and replica are the same address %s", c.Primary)
		}
	}
	p.Positive("interval", c.Interval)
	p.Positive("probe-timeout", c.ProbeTimeout)
	p.Check(c.ProbeTimeout > 0 && c.Interval > 0 && c.ProbeTimeout >= c.Interval,
		"probe-timeout (%s) must be below interval (%s): a probe must end before the next one starts", c.ProbeTimeout, c.Interval)
	p.Positive("unfreeze-after", c.UnfreezeAfter)
	if pk, err := redisinfo.ParsePark(c.ParkAddr); err != nil {
		p.Addf("park-addr: %v", err)
	} else {
		c.park = pk
	}
	p.Check(c.DriftEvery < 1, "drift-every must be at least 1, got %d", c.DriftEvery)
	p.Check(c.BufferSize < 10, "buffer must be at least 10 heartbeats, got %d", c.BufferSize)
	if c.HTTPListen != "" {
		if _, _, err := net.SplitHostPort(c.HTTPListen); err != nil {
			p.Addf("http-listen %q: want host:port: %v", c.HTTPListen, err)
		}
	}
	if c.LogLevel != "" {
		if l, err := zerolog.ParseLevel(strings.ToLower(c.LogLevel)); err != nil || l == zerolog.NoLevel {
			p.Addf("log-level %q: want trace, debug, info, warn or error", c.LogLevel)
		}
	}
	p.Check(c.LogFormat != "" && c.LogFormat != "json" && c.LogFormat != "console",
		"log-format %q: want json or console", c.LogFormat)
	p.Check(c.ShutdownTimeout <= 0, "shutdown-timeout must be positive, got %s", c.ShutdownTimeout)
	d, errs := parseDesired(c.Desired)
	for _, e := range errs {
		p.Addf("desired: %v", e)
	}
	c.desired = d
}

// InstanceName returns the configured instance or "agent-<replica>": stable across
// restarts of the agent, so that the alerter counts it once.
func (c *Config) InstanceName() string {
	if c.Instance != "" {
		return c.Instance
	}
	return "agent-" + c.Replica
}

// desiredParam is one declared configuration parameter.
type desiredParam struct {
	Name string
	Want string
}

var paramName = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}$`)

// parseDesired parses "param=value,param=value". Names are Redis configuration
// parameters (lower case); a value may be empty ("save=" declares persistence off) and
// may be quoted. It returns every problem found.
func parseDesired(s string) ([]desiredParam, []error) {
	var out []desiredParam
	var errs []error
	seen := map[string]bool{}
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	for i, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, want, ok := strings.Cut(item, "=")
		name = strings.ToLower(strings.TrimSpace(name))
		switch {
		case !ok:
			errs = append(errs, fmt.Errorf("%w: item %d %q: want param=value", ErrBadDesired, i+1, truncate(item)))
			continue
		case !paramName.MatchString(name):
			errs = append(errs, fmt.Errorf("%w: item %d: parameter %q: want a Redis configuration name such as min-replicas-to-write", ErrBadDesired, i+1, truncate(name)))
			continue
		case seen[name]:
			errs = append(errs, fmt.Errorf("%w: parameter %q declared twice", ErrBadDesired, name))
			continue
		}
		seen[name] = true
		out = append(out, desiredParam{Name: name, Want: unquote(strings.TrimSpace(want))})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, errs
}

func unquote(s string) string {
	if len(s) >= 2 && (s[0] == '"' && s[len(s)-1] == '"' || s[0] == '\'' && s[len(s)-1] == '\'') {
		return s[1 : len(s)-1]
	}
	return s
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
