package decide

import "github.com/heartline/heartline/shared/events"

// Reason is the typed code of a decision, like orchestrator's AnalysisCode. It travels
// in events.Failover.Reason, in logs (field "reason") and in metrics labels.
type Reason string

// Reasons for failing over: the condition lazarus confirmed from its own vantage point.
const (
	// PrimaryDown: lazarus cannot reach the primary (refused, timed out, loading).
	PrimaryDown Reason = "PRIMARY_DOWN"
	// PrimaryDataRegressed: the primary answers as master but with a new replication
	// history and less data than a replica holds (it restarted empty).
	PrimaryDataRegressed Reason = "PRIMARY_DATA_REGRESSED"
	// PrimaryRoleChanged: the node the topology names as primary reports itself as a
	// replica.
	PrimaryRoleChanged Reason = "PRIMARY_ROLE_CHANGED"
	// ManualFailover: an operator ran `lazarus failover`.
	ManualFailover Reason = "MANUAL_FAILOVER"
	// PlannedSwitchover: an operator ran `lazarus switchover`.
	PlannedSwitchover Reason = "PLANNED_SWITCHOVER"
)

// Reasons for taking no action.
const (
	PrimaryHealthy Reason = "PRIMARY_HEALTHY"
	StaleAlert     Reason = "STALE_ALERT"
	AlreadyHandled Reason = "ALREADY_HANDLED"
	WarningOnly    Reason = "WARNING_ONLY"
	AlertResolved  Reason = "ALERT_RESOLVED"
	UnknownShard   Reason = "UNKNOWN_SHARD"
)

// Reasons for holding a failover that is otherwise warranted.
const (
	Flapping   Reason = "FLAPPING"
	Cooldown   Reason = "COOLDOWN"
	Paused     Reason = "PAUSED"
	FleetLimit Reason = "FLEET_LIMIT"
)

// Reasons for aborting.
const (
	NoEligibleReplica Reason = "NO_ELIGIBLE_REPLICA"
	// StepFailed: a failover step failed and could not be finished; the record tells
	// which (set by the executor, not by Decide).
	StepFailed Reason = "STEP_FAILED"
	// RouteConflict: the topology changed under the failover (set by the executor).
	RouteConflict Reason = "ROUTE_CONFLICT"
	// RolledBack: a failover interrupted before promotion was rolled back by the next
	// lease holder (set by the executor).
	RolledBack Reason = "ROLLED_BACK"
)

// ReasonInfo documents one reason for on-call.
type ReasonInfo struct {
	Reason   Reason
	Decision events.Decision
	Meaning  string
	OnCall   string
}

// Catalog lists every reason with its meaning and what on-call should do. The README's
// table is generated from it (see TestReadmeListsEveryReason).
var Catalog = []ReasonInfo{
	{PrimaryDown, events.DecisionFailover, "lazarus could not reach the primary either (refused, timed out or loading) and failed over", "Check why the old node died; lazarus rejoins it as a replica when it comes back."},
	{PrimaryDataRegressed, events.DecisionFailover, "the primary came back with a new replication id and less data than a replica (restart without data); the replica with the data was promoted", "Check the node's persistence and restart policy; the empty node is rejoined as a replica."},
	{PrimaryRoleChanged, events.DecisionFailover, "the node named as primary reports itself as a replica; lazarus promoted the best replica", "Find who ran REPLICAOF on the primary (an operator, a stray Sentinel)."},
	{ManualFailover, events.DecisionFailover, "an operator forced a failover with `lazarus failover`", "None."},
	{PlannedSwitchover, events.DecisionFailover, "an operator ran `lazarus switchover` (writes paused, replica caught up, zero loss)", "None."},
	{PrimaryHealthy, events.DecisionNoAction, "lazarus reaches the primary as master with the same identity and its replicas attached (or parked while it is fine): a false alarm from the alerter's side", "Look at the agent that reported the failure: a partitioned replica host or a broken agent."},
	{StaleAlert, events.DecisionNoAction, "the alert's epoch is below the shard's current epoch: it is about a primary that was already replaced", "None."},
	{AlreadyHandled, events.DecisionNoAction, "a failover for this incident already ran or is running, or the topology no longer names the alerted primary", "None; see `lazarus events --shard N`."},
	{WarningOnly, events.DecisionNoAction, "the alert is a warning (AGENT_LOST, REPLICA_PROBLEM, CONFIG_DRIFT): recorded, never acted on", "Fix the agent, replica or configuration the alert names."},
	{AlertResolved, events.DecisionNoAction, "the alerter resolved the incident; any held re-evaluation is dropped", "None."},
	{UnknownShard, events.DecisionNoAction, "the alert names a shard that is not in the topology", "Seed the shard (`lazarus seed`) or fix the agent's shard id."},
	{Flapping, events.DecisionHold, "the alerter marks the shard as flapping; lazarus does not fail over a flapping shard", "Find the cause of the flapping; lift with `lazarus failover --shard N` if the primary is really gone."},
	{Cooldown, events.DecisionHold, "the shard failed over less than the cooldown ago", "Wait for the time in the Override field, or `lazarus resume --shard N` to lift the cooldown."},
	{Paused, events.DecisionHold, "automation is paused for the shard or for the fleet (`lazarus pause`)", "`lazarus resume [--shard N]` when the maintenance is over."},
	{FleetLimit, events.DecisionHold, "too many failovers are running, or ran in the fleet window: a network blip must not fail over half the fleet", "Check the network; `lazarus failover --shard N` for a shard that must move now."},
	{NoEligibleReplica, events.DecisionAbort, "no replica can be promoted: all unreachable, loading, full-syncing, behind the acknowledged offset or lagging beyond the bound", "Bring a replica back; lazarus re-evaluates every reconcile interval while the alert is open."},
	{StepFailed, events.DecisionAbort, "a failover step failed and could not be finished; the failover record names the step", "Read the step error in `lazarus events`; fix the node and run `lazarus failover --shard N`."},
	{RouteConflict, events.DecisionAbort, "the topology changed between the decision and the routing step", "Check who wrote the topology (`lazarus status`); the reconcile loop aligns the nodes."},
	{RolledBack, events.DecisionAbort, "a failover interrupted before its promotion was rolled back by the next worker", "None; the alert is re-evaluated."},
}

// Info returns the catalog entry of r.
func Info(r Reason) (ReasonInfo, bool) {
	for _, i := range Catalog {
		if i.Reason == r {
			return i, true
		}
	}
	return ReasonInfo{}, false
}
