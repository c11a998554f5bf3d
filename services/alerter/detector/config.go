package detector

import (
	"time"

	"github.com/heartline/heartline/shared/config"
)

// Config holds the thresholds of the rules. The zero value is not valid; start from
// DefaultConfig.
type Config struct {
	// FailThreshold is the number of consecutive failed probes after which an agent sees
	// the primary down (together with DownAfter).
	FailThreshold int
	// DownAfter is how long, on the agent's clock, the primary must have gone without a
	// healthy probe before the agent sees it down.
	DownAfter time.Duration
	// RecencyIntervals and RecencyMin make an agent's recency window: the agents that
	// reported within max(RecencyIntervals × its heartbeat interval, RecencyMin) vote in
	// the quorum.
	RecencyIntervals int
	RecencyMin       time.Duration
	// DefaultInterval stands in for a heartbeat that does not say its interval.
	DefaultInterval time.Duration
	// AgentLostAfter is how long every agent of a shard must have been silent for
	// AGENT_LOST.
	AgentLostAfter time.Duration
	// RecoverProbes is the number of consecutive clean heartbeats (a majority of the
	// agents for a primary incident, every agent for a replica problem or a flag) after
	// which an incident resolves.
	RecoverProbes int
	// FlapChanges and FlapWindow: more than FlapChanges state changes within FlapWindow
	// is flapping.
	FlapChanges int
	FlapWindow  time.Duration
	// MaxAge: a heartbeat whose probe time is older than this (on the alerter's clock)
	// is ignored. After an outage of the alerter the backlog is history: deciding on it
	// would publish alerts about incidents long over.
	MaxAge time.Duration
}

// DefaultConfig returns the defaults of docs/design.md.
func DefaultConfig() Config {
	return Config{
		FailThreshold:    3,
		DownAfter:        500 * time.Millisecond,
		RecencyIntervals: 3,
		RecencyMin:       time.Second,
		DefaultInterval:  250 * time.Millisecond,
		AgentLostAfter:   3 * time.Second,
		RecoverProbes:    2,
		FlapChanges:      4,
		FlapWindow:       2 * time.Minute,
		MaxAge:           30 * time.Second,
	}
}

// Validate adds every problem with c to p; names are the service's flag names.
func (c Config) Validate(p *config.Problems) {
	p.Check(c.FailThreshold < 1, "fail-threshold must be at least 1, got %d", c.FailThreshold)
	p.Check(c.DownAfter < 0, "down-after must not be negative, got %s", c.DownAfter)
	p.Check(c.RecencyIntervals < 1, "recency-intervals must be at least 1, got %d", c.RecencyIntervals)
	p.Positive("recency-min", c.RecencyMin)
	p.Positive("default-interval", c.DefaultInterval)
	p.Positive("agent-lost-after", c.AgentLostAfter)
	p.Check(c.RecoverProbes < 1, "recover-probes must be at least 1, got %d", c.RecoverProbes)
	p.Check(c.FlapChanges < 2, "flap-changes must be at least 2, got %d", c.FlapChanges)
	p.Positive("flap-window", c.FlapWindow)
	p.Check(c.MaxAge <= c.AgentLostAfter, "max-heartbeat-age (%s) must be above agent-lost-after (%s)", c.MaxAge, c.AgentLostAfter)
	p.Check(c.AgentLostAfter > 0 && c.RecencyMin > 0 && c.AgentLostAfter < c.RecencyMin,
		"agent-lost-after (%s) must not be below recency-min (%s): an agent still voting cannot be lost", c.AgentLostAfter, c.RecencyMin)
}
