// Package experiment is the chaos experiment file format, in the spirit of the
// Principles of Chaos Engineering: a title, the steady state as probes with tolerances,
// a hypothesis with measurable bounds, the method (faults with targets, delays and
// durations), rollbacks, and abort conditions. Files are YAML and are parsed strictly:
// an unknown field, a bad duration, an unknown fault kind or target selector is an error
// that names the file, the line and column, and the field path; every problem in a
// file is reported at once.
package experiment

import (
	"time"

	"github.com/heartline/heartline/services/chaos/internal/fault"
	"github.com/heartline/heartline/services/chaos/internal/target"
)

// Experiment is a parsed, validated experiment file.
type Experiment struct {
	File        string      `json:"file"`
	Title       string      `json:"title"`
	Description string      `json:"description,omitempty"`
	Tags        []string    `json:"tags,omitempty"`
	SteadyState SteadyState `json:"steady_state"`
	Load        Load        `json:"load"`
	Hypothesis  Hypothesis  `json:"hypothesis"`
	Method      []Step      `json:"method"`
	// Observe is how long the run keeps watching after the last fault was recovered
	// (or the method ended), before load stops.
	Observe   time.Duration `json:"observe_ns"`
	Rollbacks []Rollback    `json:"rollbacks"`
	Abort     Abort         `json:"abort"`
	Safety    Safety        `json:"safety"`
}

// ProbeKind names a steady-state probe.
type ProbeKind string

// The probes.
const (
	// EnqueueSuccessRate: acknowledged enqueues / attempted enqueues over the window
	// (ideal 1).
	EnqueueSuccessRate ProbeKind = "enqueue_success_rate"
	// DequeueKeepsUp: deliveries / acknowledged enqueues over the window (ideal 1: the
	// dequeue rate is not below the enqueue rate).
	DequeueKeepsUp ProbeKind = "dequeue_keeps_up"
	// EnqueueLatencyP99: the 99th percentile latency of acknowledged enqueues, seconds.
	EnqueueLatencyP99 ProbeKind = "enqueue_latency_p99"
	// NoOpenAlerts: the number of shards with an open alert (ideal 0).
	NoOpenAlerts ProbeKind = "no_open_alerts"
	// ShardsHealthy: the number of unhealthy shards (ideal 0).
	ShardsHealthy ProbeKind = "shards_healthy"
)

// ProbeInfo describes a probe kind: its ideal value and default bound.
type ProbeInfo struct {
	Kind ProbeKind
	// Rate probes have a lower bound (min), count and latency probes an upper one (max).
	Lower   bool
	Ideal   float64
	Default float64
	Seconds bool // the value is a duration in seconds (bounds are written as durations)
	Help    string
}

// Probes lists every probe kind.
var Probes = []ProbeInfo{
	{EnqueueSuccessRate, true, 1, 0.99, false, "acknowledged / attempted enqueues over the window"},
	{DequeueKeepsUp, true, 1, 0.9, false, "deliveries / acknowledged enqueues over the window: the dequeue rate is not below the enqueue rate"},
	{EnqueueLatencyP99, false, 0, 1, true, "p99 latency of acknowledged enqueues over the window"},
	{NoOpenAlerts, false, 0, 0, false, "shards with an open alert (alerter incidents in kv and the alerts topic)"},
	{ShardsHealthy, false, 0, 0, false, "shards that are not healthy (a node down, a replica parked or lagging, an odd topology)"},
}

// LookupProbe returns a probe kind's description.
func LookupProbe(k ProbeKind) (ProbeInfo, bool) {
	for _, p := range Probes {
		if p.Kind == k {
			return p, true
		}
	}
	return ProbeInfo{}, false
}

// Probe is a probe with its bound.
type Probe struct {
	Kind ProbeKind `json:"probe"`
	// Min or Max is the bound (one applies, per the kind).
	Min *float64 `json:"min,omitempty"`
	Max *float64 `json:"max,omitempty"`
	// Window is the span of history a rate or latency probe looks at (default 5 s).
	Window time.Duration `json:"window_ns,omitempty"`
	// For (abort conditions): how long the deviation must last before the run aborts.
	For  time.Duration `json:"for_ns,omitempty"`
	Line int           `json:"line"`
}

// Bound returns the probe's effective bound and whether it is a lower bound.
func (p Probe) Bound() (float64, bool) {
	info, _ := LookupProbe(p.Kind)
	switch {
	case info.Lower && p.Min != nil:
		return *p.Min, true
	case !info.Lower && p.Max != nil:
		return *p.Max, false
	}
	return info.Default, info.Lower
}

// Holds reports whether value is within the probe's bound.
func (p Probe) Holds(value float64) bool {
	b, lower := p.Bound()
	if lower {
		return value >= b
	}
	return value <= b
}

// SteadyState is what normal looks like.
type SteadyState struct {
	// Warmup is how long load runs before the steady state is judged (default 3 s).
	Warmup time.Duration `json:"warmup_ns"`
	Probes []Probe       `json:"probes"`
}

// Load is the Ratequeue workload driven during the run.
type Load struct {
	Disabled  bool     `json:"disabled,omitempty"`
	Queues    int      `json:"queues"`
	Rate      int      `json:"rate"`
	Consumers int      `json:"consumers"`
	Args      []string `json:"args,omitempty"`
}

// Hypothesis holds the measurable bounds; nil means "not asserted".
type Hypothesis struct {
	// FirstFailedHeartbeatWithin: an agent reports the attacked shard's primary down.
	FirstFailedHeartbeatWithin *time.Duration `json:"first_failed_heartbeat_within_ns,omitempty"`
	// DetectedWithin: an alert opens for the attacked shard (of AlertCode, if set).
	DetectedWithin *time.Duration `json:"detected_within_ns,omitempty"`
	AlertCode      string         `json:"alert_code,omitempty"`
	// FailedOverWithin: the topology of the attacked shard changes (new primary).
	FailedOverWithin *time.Duration `json:"failed_over_within_ns,omitempty"`
	// WritesResumedWithin: the first acknowledged enqueue on the attacked shard after
	// the fault (after the first failure, if writes failed).
	WritesResumedWithin *time.Duration `json:"writes_resumed_within_ns,omitempty"`
	// HealthyWithin: every shard is healthy again after the method ended.
	HealthyWithin *time.Duration `json:"healthy_within_ns,omitempty"`
	// Counts from the loss checker and the stream.
	Lost                *int64 `json:"lost,omitempty"`
	RateLimitViolations *int64 `json:"rate_limit_violations,omitempty"`
	Unexpected          *int64 `json:"unexpected,omitempty"`
	// Failovers is the exact number of failovers of the attacked shards.
	Failovers *int64 `json:"failovers,omitempty"`
	// FailedRequestP99: failed enqueues fail fast (p99 of their latency).
	FailedRequestP99 *time.Duration `json:"failed_request_p99_ns,omitempty"`
	// EnqueueLatencyP99: p99 latency of acknowledged enqueues during the fault window.
	EnqueueLatencyP99 *time.Duration `json:"enqueue_latency_p99_ns,omitempty"`
}

// Step is one fault of the method.
type Step struct {
	Name     string          `json:"name,omitempty"`
	Fault    fault.Kind      `json:"fault"`
	Target   string          `json:"target"`
	Selector target.Selector `json:"-"`
	// After is the delay from the start of the method.
	After time.Duration `json:"after_ns"`
	// Duration: how long the fault stays before it is recovered (0: until the end of
	// the method).
	Duration time.Duration `json:"duration_ns"`
	Params   fault.Params  `json:"params,omitempty"`
	Line     int           `json:"line"`
}

// Rollback actions.
const (
	RollbackRecoverFaults = "recover_faults" // recover every fault of the run (always done first)
	RollbackStartStopped  = "start_stopped"  // start every Redis node and service that is down
	RollbackWaitHealthy   = "wait_healthy"   // wait until every shard is healthy (timeout)
	RollbackResetLinks    = "reset_links"    // remove every toxic, start every proxy
)

// RollbackActions lists the rollback actions.
var RollbackActions = []string{RollbackRecoverFaults, RollbackStartStopped, RollbackWaitHealthy, RollbackResetLinks}

// Rollback is one rollback action.
type Rollback struct {
	Action  string        `json:"action"`
	Timeout time.Duration `json:"timeout_ns,omitempty"`
}

// Abort says when a run stops early and rolls back.
type Abort struct {
	// MaxDuration bounds the whole run (default 10 min).
	MaxDuration time.Duration `json:"max_duration_ns"`
	When        []Probe       `json:"when"`
}

// Safety holds the explicit exceptions to the default safety rules.
type Safety struct {
	// MaxShards allows the run to attack more than one shard at a time.
	MaxShards int `json:"max_shards,omitempty"`
}

// End is when the method's last fault is recovered (or the last starts, for faults
// without a duration).
func (e Experiment) End() time.Duration {
	var end time.Duration
	for _, s := range e.Method {
		if t := s.After + s.Duration; t > end {
			end = t
		}
	}
	return end
}
