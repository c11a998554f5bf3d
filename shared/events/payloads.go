package events

import "time"

// ---- Heartbeat ----

// Flag is a condition the agent recognises at once, without waiting for thresholds.
type Flag string

const (
	// FlagPrimaryRestarted: the primary's run id changed since the last probe.
	FlagPrimaryRestarted Flag = "PRIMARY_RESTARTED"
	// FlagPrimaryDataRegressed: the primary came back empty, or its replication offset
	// went backwards, while this replica still holds data. A full resync from it would
	// wipe the replica.
	FlagPrimaryDataRegressed Flag = "PRIMARY_DATA_REGRESSED"
	// FlagPrimaryRoleChanged: the node the topology names as primary reports itself as
	// a replica.
	FlagPrimaryRoleChanged Flag = "PRIMARY_ROLE_CHANGED"
	// FlagConfigDrift: a node's configuration differs from the declared one.
	FlagConfigDrift Flag = "CONFIG_DRIFT"
	// FlagReplicationFrozen: the agent froze this replica's replication (the link to the
	// primary dropped) so that it cannot resync from an empty primary.
	FlagReplicationFrozen Flag = "REPLICATION_FROZEN"
	// FlagParkGuardOff: something accepts connections at the park address, so the
	// agent will not park this replica when its primary dies (the restart-wipe guard
	// is off until the park address refuses connections again).
	FlagParkGuardOff Flag = "PARK_GUARD_OFF"
)

var knownFlags = map[Flag]bool{FlagPrimaryRestarted: true, FlagPrimaryDataRegressed: true,
	FlagPrimaryRoleChanged: true, FlagConfigDrift: true, FlagReplicationFrozen: true, FlagParkGuardOff: true}

// Heartbeat is one probe by a replica-side agent of its replica and of the shard's
// primary.
type Heartbeat struct {
	// Seq increases by one per probe of this agent instance (it restarts at 1 when the
	// agent restarts; Source.Instance and AgentStart tell runs apart).
	Seq        uint64        `json:"seq"`
	AgentStart time.Time     `json:"agent_start"`
	Interval   time.Duration `json:"interval_ns"`
	Replica    ReplicaState  `json:"replica"`
	Primary    PrimaryProbe  `json:"primary"`
	Flags      []Flag        `json:"flags,omitempty"`
	Drift      []ConfigDrift `json:"drift,omitempty"`
}

// ReplicaState is the agent's replica as seen through INFO replication.
type ReplicaState struct {
	Addr           string `json:"addr"`
	Reachable      bool   `json:"reachable"`
	Error          string `json:"error,omitempty"`
	Role           string `json:"role,omitempty"` // "slave" or "master" as Redis says
	MasterHost     string `json:"master_host,omitempty"`
	MasterPort     int    `json:"master_port,omitempty"`
	LinkUp         bool   `json:"link_up"`
	LastIOSeconds  int64  `json:"last_io_seconds"` // -1 when Redis does not report it
	SyncInProgress bool   `json:"sync_in_progress"`
	Offset         int64  `json:"offset"` // replication offset this replica has processed
	ReplID         string `json:"repl_id,omitempty"`
	ReplID2        string `json:"repl_id2,omitempty"`
	Keys           int64  `json:"keys"`
	Frozen         bool   `json:"frozen"` // parked by the agent; see FlagReplicationFrozen
}

// PrimaryProbe is the agent's own direct probe of the primary.
type PrimaryProbe struct {
	Addr      string        `json:"addr"`
	OK        bool          `json:"ok"` // answered PING within the probe timeout
	Latency   time.Duration `json:"latency_ns"`
	Error     string        `json:"error,omitempty"`
	RunID     string        `json:"run_id,omitempty"`
	Role      string        `json:"role,omitempty"`
	Offset    int64         `json:"offset"`
	ReplID    string        `json:"repl_id,omitempty"`
	Loading   bool          `json:"loading"`
	Keys      int64         `json:"keys"`
	Replicas  int           `json:"connected_replicas"`
	UptimeSec int64         `json:"uptime_seconds"`
}

// ConfigDrift is one configuration parameter that differs from the declared value.
type ConfigDrift struct {
	Node  string `json:"node"` // address
	Param string `json:"param"`
	Want  string `json:"want"`
	Got   string `json:"got"`
}

func (h *Heartbeat) validate(Kind) []*FieldError {
	var errs []*FieldError
	req(&errs, h.Seq == 0, "payload.seq")
	req(&errs, h.Replica.Addr == "", "payload.replica.addr")
	req(&errs, h.Primary.Addr == "", "payload.primary.addr")
	bad(&errs, h.Interval < 0, "payload.interval_ns", "negative")
	for i, f := range h.Flags {
		bad(&errs, !knownFlags[f], path("payload.flags", i), "unknown flag %q", f)
	}
	for i, d := range h.Drift {
		req(&errs, d.Param == "", path("payload.drift", i)+".param")
	}
	return errs
}

// Has reports whether the heartbeat carries flag f.
func (h *Heartbeat) Has(f Flag) bool {
	for _, x := range h.Flags {
		if x == f {
			return true
		}
	}
	return false
}

// ---- Alert ----

// AlertCode is what an alert is about.
type AlertCode string

const (
	AlertPrimaryDown          AlertCode = "PRIMARY_DOWN"
	AlertPrimaryDataRegressed AlertCode = "PRIMARY_DATA_REGRESSED" // restarted empty or offset went back
	AlertPrimaryRoleChanged   AlertCode = "PRIMARY_ROLE_CHANGED"
	AlertReplicaProblem       AlertCode = "REPLICA_PROBLEM" // a minority of replicas cannot see the primary
	AlertAgentLost            AlertCode = "AGENT_LOST"      // agents went silent: a warning, not a failure
	AlertConfigDrift          AlertCode = "CONFIG_DRIFT"
)

var knownAlertCodes = map[AlertCode]bool{AlertPrimaryDown: true, AlertPrimaryDataRegressed: true,
	AlertPrimaryRoleChanged: true, AlertReplicaProblem: true, AlertAgentLost: true, AlertConfigDrift: true}

// Severity of an alert.
type Severity string

const (
	SeverityWarning  Severity = "warning"
	SeverityCritical Severity = "critical"
)

// State of a shard in the alerter.
type State string

const (
	StateOK        State = "OK"
	StateSoft      State = "SOFT" // failing, under the threshold
	StateHard      State = "HARD" // threshold breached
	StateAgentLost State = "AGENT_LOST"
)

// Alert is published by the alerter on a change of a shard's state.
type Alert struct {
	IncidentID string    `json:"incident_id"`
	Code       AlertCode `json:"code"`
	Severity   Severity  `json:"severity"`
	State      State     `json:"state"`
	// Flapping is set when the shard changed state too often in the flap window; lazarus
	// holds off a shard that is flapping.
	Flapping bool   `json:"flapping"`
	Primary  string `json:"primary,omitempty"` // the primary's address as the agents see it
	Reason   string `json:"reason"`
	// Evidence behind the decision.
	FailedProbes    int           `json:"failed_probes"`
	DownFor         time.Duration `json:"down_for_ns"`
	AgentsReporting int           `json:"agents_reporting"`
	AgentsDown      int           `json:"agents_down"`
	FirstFailure    time.Time     `json:"first_failure,omitempty"`
	LastHeartbeatID string        `json:"last_heartbeat_id,omitempty"`
	// LastHeartbeatAt is when the heartbeat that completed the decision was published.
	LastHeartbeatAt time.Time `json:"last_heartbeat_at,omitempty"`
}

func (a *Alert) validate(Kind) []*FieldError {
	var errs []*FieldError
	req(&errs, a.IncidentID == "", "payload.incident_id")
	req(&errs, a.Code == "", "payload.code")
	bad(&errs, a.Code != "" && !knownAlertCodes[a.Code], "payload.code", "unknown alert code %q", a.Code)
	bad(&errs, a.Severity != SeverityWarning && a.Severity != SeverityCritical, "payload.severity", "want warning or critical, got %q", a.Severity)
	req(&errs, a.State == "", "payload.state")
	bad(&errs, a.FailedProbes < 0 || a.AgentsReporting < 0 || a.AgentsDown < 0, "payload", "negative count")
	return errs
}

// ---- Failover ----

// Decision is lazarus's decision on an alert.
type Decision string

const (
	DecisionFailover Decision = "failover"
	DecisionNoAction Decision = "no_action"
	DecisionHold     Decision = "hold"
	DecisionAbort    Decision = "abort"
)

var knownDecisions = map[Decision]bool{DecisionFailover: true, DecisionNoAction: true, DecisionHold: true, DecisionAbort: true}

// Phase timings of a failover, as absolute times so that each phase's share can be
// computed by anyone.
type Phases struct {
	Detected time.Time `json:"detected,omitzero"` // the alert's first failed heartbeat
	Alerted  time.Time `json:"alerted,omitzero"`  // the alert was published
	Decided  time.Time `json:"decided,omitzero"`
	Promoted time.Time `json:"promoted,omitzero"`
	Routed   time.Time `json:"routed,omitzero"` // new topology published
	Verified time.Time `json:"verified,omitzero"`
}

// Failover reports lazarus's decisions and each step of a failover.
type Failover struct {
	FailoverID string   `json:"failover_id,omitempty"` // empty for a decision without action
	IncidentID string   `json:"incident_id,omitempty"`
	Decision   Decision `json:"decision"`
	// Reason is a typed code, such as PRIMARY_HEALTHY or COOLDOWN.
	Reason string `json:"reason"`
	Detail string `json:"detail,omitempty"`
	// Override tells an operator how to lift a hold.
	Override   string `json:"override,omitempty"`
	Step       string `json:"step,omitempty"` // for failover.step
	StepError  string `json:"step_error,omitempty"`
	OldPrimary string `json:"old_primary,omitempty"`
	NewPrimary string `json:"new_primary,omitempty"`
	FromEpoch  uint64 `json:"from_epoch,omitempty"`
	ToEpoch    uint64 `json:"to_epoch,omitempty"`
	// LossWindow is the replication offset difference, in bytes, between the last
	// offset the old primary was known to have and the promoted replica's offset; -1
	// when the old primary's offset is unknown.
	LossWindow int64  `json:"loss_window_bytes"`
	Phases     Phases `json:"phases"`
	Worker     string `json:"worker,omitempty"`
	Planned    bool   `json:"planned,omitempty"` // a switchover, not a failover
}

func (f *Failover) validate(k Kind) []*FieldError {
	var errs []*FieldError
	bad(&errs, !knownDecisions[f.Decision], "payload.decision", "want failover, no_action, hold or abort, got %q", f.Decision)
	req(&errs, f.Reason == "", "payload.reason")
	if k != KindFailoverDecision {
		req(&errs, f.FailoverID == "", "payload.failover_id")
	}
	if k == KindFailoverStep {
		req(&errs, f.Step == "", "payload.step")
	}
	bad(&errs, f.LossWindow < -1, "payload.loss_window_bytes", "below -1")
	return errs
}

// ---- TopologyChanged ----

// TopologyChanged announces a shard's new primary and epoch (Event.Epoch).
type TopologyChanged struct {
	Primary         string   `json:"primary"`
	Replicas        []string `json:"replicas"`
	PreviousPrimary string   `json:"previous_primary,omitempty"`
	Reason          string   `json:"reason"`
	FailoverID      string   `json:"failover_id,omitempty"`
}

func (t *TopologyChanged) validate(Kind) []*FieldError {
	var errs []*FieldError
	req(&errs, t.Primary == "", "payload.primary")
	req(&errs, t.Reason == "", "payload.reason")
	for i, r := range t.Replicas {
		req(&errs, r == "", path("payload.replicas", i))
	}
	return errs
}

// ---- ChaosAttack ----

// ChaosAttack reports a fault the chaos injector applied, recovered or halted. The
// event's correlation id is the attack id.
type ChaosAttack struct {
	AttackID   string            `json:"attack_id"`
	Fault      string            `json:"fault"`  // such as "kill", "pause", "partition"
	Target     string            `json:"target"` // such as "shard-1/primary"
	Node       string            `json:"node,omitempty"`
	Experiment string            `json:"experiment,omitempty"`
	RunID      string            `json:"run_id,omitempty"`
	Duration   time.Duration     `json:"duration_ns,omitempty"`
	DryRun     bool              `json:"dry_run"`
	Params     map[string]string `json:"params,omitempty"`
	Error      string            `json:"error,omitempty"`
}

func (c *ChaosAttack) validate(Kind) []*FieldError {
	var errs []*FieldError
	req(&errs, c.AttackID == "", "payload.attack_id")
	req(&errs, c.Fault == "", "payload.fault")
	req(&errs, c.Target == "", "payload.target")
	bad(&errs, c.Duration < 0, "payload.duration_ns", "negative")
	return errs
}

// ---- ExperimentResult ----

// HypothesisResult is one bound of an experiment's hypothesis, expected against actual.
type HypothesisResult struct {
	Name     string `json:"name"`
	Expected string `json:"expected"`
	Actual   string `json:"actual"`
	Held     bool   `json:"held"`
}

// ExperimentResult is the outcome of one chaos experiment run.
type ExperimentResult struct {
	RunID      string             `json:"run_id"`
	Experiment string             `json:"experiment"`
	Passed     bool               `json:"passed"`
	Aborted    bool               `json:"aborted"`
	Hypotheses []HypothesisResult `json:"hypotheses"`
	Acked      int64              `json:"acked"`
	Delivered  int64              `json:"delivered"`
	Lost       int64              `json:"lost"`
	Report     string             `json:"report,omitempty"` // path of report.json
	Started    time.Time          `json:"started"`
	Ended      time.Time          `json:"ended"`
}

func (r *ExperimentResult) validate(Kind) []*FieldError {
	var errs []*FieldError
	req(&errs, r.RunID == "", "payload.run_id")
	req(&errs, r.Experiment == "", "payload.experiment")
	bad(&errs, r.Acked < 0 || r.Delivered < 0 || r.Lost < 0, "payload", "negative count")
	for i, h := range r.Hypotheses {
		req(&errs, h.Name == "", path("payload.hypotheses", i)+".name")
	}
	return errs
}
