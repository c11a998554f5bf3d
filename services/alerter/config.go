package alerter

import (
	"fmt"
	"os"
	"time"

	"github.com/heartline/heartline/services/alerter/detector"
	"github.com/heartline/heartline/shared/config"
	"github.com/heartline/heartline/shared/connect"
	"github.com/heartline/heartline/shared/stream"
)

// Config is the alerter's whole configuration.
type Config struct {
	Detector detector.Config
	// Group is the consumer group on the heartbeats topic.
	Group string
	// Instance names this process in the consumer group and in incident records
	// (default host-pid).
	Instance string
	// Tick is how often every shard is evaluated on the clock (AGENT_LOST, the end of
	// flapping).
	Tick            time.Duration
	HTTPListen      string
	LogLevel        string
	LogFormat       string
	ShutdownTimeout time.Duration
	Connect         connect.Config
}

// DefaultConfig returns the defaults, as the flags have them.
func DefaultConfig() Config {
	return Config{Detector: detector.DefaultConfig(), Group: "alerter", Tick: 250 * time.Millisecond,
		HTTPListen: "127.0.0.1:9102", ShutdownTimeout: 10 * time.Second}
}

// Register binds every setting to a flag (and its ALERTER_ or HEARTLINE_ environment
// variable).
func (c *Config) Register(l *config.Loader) {
	d := DefaultConfig()
	dc := &c.Detector
	l.Int(&dc.FailThreshold, "fail-threshold", d.Detector.FailThreshold, "consecutive failed probes before an agent sees the primary down")
	l.Duration(&dc.DownAfter, "down-after", d.Detector.DownAfter, "time without a healthy probe (on the agent's clock) before an agent sees the primary down")
	l.Int(&dc.RecencyIntervals, "recency-intervals", d.Detector.RecencyIntervals, "an agent votes in the quorum while its last heartbeat is within this many of its intervals")
	l.Duration(&dc.RecencyMin, "recency-min", d.Detector.RecencyMin, "lower bound of an agent's recency window")
	l.Duration(&dc.DefaultInterval, "default-interval", d.Detector.DefaultInterval, "heartbeat interval assumed when a heartbeat does not say")
	l.Duration(&dc.AgentLostAfter, "agent-lost-after", d.Detector.AgentLostAfter, "silence of every agent of a shard before AGENT_LOST")
	l.Int(&dc.RecoverProbes, "recover-probes", d.Detector.RecoverProbes, "consecutive clean heartbeats (by a majority of agents) before an incident resolves")
	l.Int(&dc.FlapChanges, "flap-changes", d.Detector.FlapChanges, "a shard with more state changes than this within flap-window is FLAPPING")
	l.Duration(&dc.FlapWindow, "flap-window", d.Detector.FlapWindow, "window of flap detection")
	l.Duration(&dc.MaxAge, "max-heartbeat-age", d.Detector.MaxAge, "heartbeats probed longer ago than this are ignored (a backlog after an outage is history)")
	l.String(&c.Group, "group", d.Group, "consumer group on the heartbeats topic")
	l.String(&c.Instance, "instance", "", "this instance's name in the consumer group and incident records (default host-pid)")
	l.Duration(&c.Tick, "tick", d.Tick, "how often every shard is evaluated on the clock (AGENT_LOST, end of flapping)")
	l.String(&c.HTTPListen, "http-listen", d.HTTPListen, "address of /healthz, /readyz and /metrics (empty: none)")
	l.String(&c.LogLevel, "log-level", "info", "trace, debug, info, warn or error")
	l.Shared("log-level")
	l.String(&c.LogFormat, "log-format", "", "json or console (default: console on a terminal, else json)")
	l.Shared("log-format")
	l.Duration(&c.ShutdownTimeout, "shutdown-timeout", d.ShutdownTimeout, "how long to wait for in-flight work on shutdown")
	c.Connect.Register(l)
}

// Validate reports every problem with the configuration.
func (c *Config) Validate() error {
	var p config.Problems
	c.Detector.Validate(&p)
	if err := (stream.Subscription{Topic: "heartbeats", Group: c.Group}).Validate(); err != nil {
		p.Addf("group %q: want 1-64 of A-Z a-z 0-9 _ -", c.Group)
	}
	p.Positive("tick", c.Tick)
	p.Check(c.Tick > c.Detector.AgentLostAfter && c.Detector.AgentLostAfter > 0,
		"tick (%s) must not exceed agent-lost-after (%s)", c.Tick, c.Detector.AgentLostAfter)
	p.Positive("shutdown-timeout", c.ShutdownTimeout)
	c.Connect.Validate(&p)
	return p.Err()
}

// InstanceName returns the configured instance or host-pid.
func (c *Config) InstanceName() string {
	if c.Instance != "" {
		return c.Instance
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "alerter"
	}
	return fmt.Sprintf("%s-%d", host, os.Getpid())
}
