// Package decide is lazarus's decision engine: a pure function from an alert, lazarus's
// own checks of the shard's nodes, the topology entry and the holds in force to a typed
// decision (fail over, no action, hold, abort), with the replica to promote and the
// measured data-loss window. It does no I/O and reads no clock: the caller passes Now.
package decide

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/topology"
)

// Node is lazarus's own view of one Redis node, from its vantage point.
type Node struct {
	Addr      string
	Reachable bool
	Err       string // why it is unreachable
	Loading   bool
	Role      string // "master" or "slave"
	// MasterAddr is the replica's configured primary (host:port); Parked says it is the
	// park address (the agent froze the replica).
	MasterAddr     string
	Parked         bool
	LinkUp         bool
	SyncInProgress bool
	RunID          string
	ReplID         string
	ReplID2        string
	// Offset is the replication offset the node holds (for a parked replica, the
	// offset it had when parked).
	Offset int64
	Keys   int64
	// Epoch is the node's heartline:epoch (0 when absent).
	Epoch uint64
	// AckedOffset is, on a primary, the highest offset any attached replica reports
	// (INFO slaveN offset); -1 when none.
	AckedOffset int64
	// AttachedReplicas is the number of replicas the primary lists as online.
	AttachedReplicas int
	// MinReplicasToWrite is the node's min-replicas-to-write (-1 unknown).
	MinReplicasToWrite int
}

// IsMaster reports whether the node answers as a primary.
func (n Node) IsMaster() bool { return n.Reachable && n.Role == "master" }

// Shares reports whether n and o have a replication history in common: one's
// replication id is the other's current or previous one.
func (n Node) Shares(o Node) bool {
	return shareHistory(n, o.ReplID) || shareHistory(o, n.ReplID)
}

func shareHistory(n Node, replID string) bool {
	return replID != "" && (n.ReplID == replID || n.ReplID2 == replID)
}

// Known is what lazarus last saw of the shard's primary while it was healthy, from its
// reconcile checks: the floor for candidate offsets and the base of the loss window.
type Known struct {
	Epoch       uint64 // the topology epoch it was seen at; ignored at another epoch
	Addr        string
	RunID       string
	ReplID      string
	Offset      int64 // the primary's own offset
	AckedOffset int64 // the highest offset a replica acknowledged; -1 unknown
	At          time.Time
}

// Alert is the part of an alert event the decision needs.
type Alert struct {
	Kind          events.Kind
	Code          events.AlertCode
	Flapping      bool
	Epoch         uint64 // 0: the alert does not say
	IncidentID    string
	CorrelationID string
	Primary       string // the primary's address as the agents saw it
}

// Pause is an operator's pause of automation.
type Pause struct {
	All    bool // lazarus.pause.all rather than the shard's own flag
	By     string
	At     time.Time
	Reason string
}

// Holds are the conditions that hold back a warranted failover.
type Holds struct {
	Paused *Pause
	// CooldownUntil: the shard failed over recently (After names the failover).
	CooldownUntil time.Time
	CooldownAfter string
	Fleet         Fleet
}

// Fleet is the fleet-wide rate of failovers.
type Fleet struct {
	Running       int
	MaxConcurrent int // 0: no limit
	InWindow      int // failovers started within Window
	MaxPerWindow  int // 0: no limit
	Window        time.Duration
	// OldestInWindow is when the oldest failover counted in InWindow started.
	OldestInWindow time.Time
}

// Handled says what lazarus already did about this shard.
type Handled struct {
	InProgress string // id of an unfinished failover of the shard
	Incident   string // id of a failover that already handled the alert's incident
}

// Input is everything Decide looks at.
type Input struct {
	Now      time.Time
	Alert    Alert
	Known    bool // the shard is in the topology
	Shard    topology.Shard
	Primary  Node
	Replicas []Node // in topology (priority) order
	Last     *Known
	Handled  Handled
	Holds    Holds
	// MaxLag is the most a candidate may be behind the last known primary offset, in
	// bytes (0: no bound other than the acknowledged offset).
	MaxLag int64
	// Force skips the holds (a manual failover); it never skips the health check.
	Force bool
}

// Outcome is the decision.
type Outcome struct {
	Decision events.Decision
	Reason   Reason
	Detail   string
	Override string
	// Candidate is the replica to promote (failover only).
	Candidate       string
	CandidateOffset int64
	// Bound is the acknowledged offset no candidate may be behind; -1 unknown.
	Bound int64
	// LossWindow is the offset difference between the last known primary offset and
	// the candidate's, in bytes; -1 unknown.
	LossWindow int64
	// Rejected says why each other replica was not chosen.
	Rejected map[string]string
}

// Actionable reports whether an alert code can warrant a failover.
func Actionable(c events.AlertCode) bool {
	switch c {
	case events.AlertPrimaryDown, events.AlertPrimaryDataRegressed, events.AlertPrimaryRoleChanged:
		return true
	}
	return false
}

// Decide returns the decision for in.
func Decide(in Input) Outcome {
	out := Outcome{Bound: -1, LossWindow: -1}
	noAction := func(r Reason, format string, args ...any) Outcome {
		out.Decision, out.Reason, out.Detail = events.DecisionNoAction, r, fmt.Sprintf(format, args...)
		return out
	}
	shard := in.Shard.ID
	if in.Alert.Kind == events.KindAlertResolved {
		return noAction(AlertResolved, "the alerter resolved incident %s", in.Alert.IncidentID)
	}
	if !in.Force && !Actionable(in.Alert.Code) {
		return noAction(WarningOnly, "%s is a warning: recorded, not acted on", in.Alert.Code)
	}
	if !in.Known {
		return noAction(UnknownShard, "shard %q is not in the topology", shard)
	}
	if in.Alert.Epoch != 0 && in.Alert.Epoch < in.Shard.Epoch {
		return noAction(StaleAlert, "alert is about epoch %d; the shard is at epoch %d (primary %s)", in.Alert.Epoch, in.Shard.Epoch, in.Shard.Primary)
	}
	if in.Handled.InProgress != "" {
		return noAction(AlreadyHandled, "failover %s of this shard is in progress", in.Handled.InProgress)
	}
	if in.Handled.Incident != "" {
		return noAction(AlreadyHandled, "failover %s already handled incident %s", in.Handled.Incident, in.Alert.IncidentID)
	}
	if in.Alert.Primary != "" && in.Alert.Primary != in.Shard.Primary {
		return noAction(AlreadyHandled, "the alert is about %s; the topology names %s as primary at epoch %d", in.Alert.Primary, in.Shard.Primary, in.Shard.Epoch)
	}
	last := in.Last
	if last != nil && (last.Epoch != in.Shard.Epoch || last.Addr != in.Shard.Primary) {
		last = nil
	}
	cond, detail := Condition(in.Primary, in.Replicas, last)
	if cond == "" {
		return noAction(PrimaryHealthy, "%s", detail)
	}
	out.Detail = detail
	if !in.Force {
		if h, ok := hold(in, shard); ok {
			h.Detail = detail + "; " + h.Detail
			h.Bound, h.LossWindow = -1, -1
			return h
		}
	}
	c := Choose(in.Primary, in.Replicas, last, in.MaxLag)
	out.Bound, out.Rejected = c.Bound, c.Rejected
	if c.Candidate == "" {
		out.Decision, out.Reason = events.DecisionAbort, NoEligibleReplica
		out.Detail = detail + "; no replica can be promoted: " + describeRejected(c.Rejected)
		return out
	}
	out.Decision, out.Reason = events.DecisionFailover, cond
	if in.Force {
		out.Reason = ManualFailover
		out.Detail = string(cond) + ": " + detail
	}
	out.Candidate, out.CandidateOffset, out.LossWindow = c.Candidate, c.Offset, c.LossWindow
	return out
}

// Condition says what is wrong with the primary from lazarus's vantage point ("" when
// it is healthy), with a detail line either way.
func Condition(p Node, replicas []Node, last *Known) (Reason, string) {
	switch {
	case !p.Reachable:
		return PrimaryDown, fmt.Sprintf("primary %s unreachable from lazarus: %s", p.Addr, p.Err)
	case p.Loading:
		return PrimaryDown, fmt.Sprintf("primary %s is loading its dataset", p.Addr)
	case p.Role != "master":
		return PrimaryRoleChanged, fmt.Sprintf("primary %s reports role %s (of %s)", p.Addr, p.Role, p.MasterAddr)
	}
	for _, r := range replicas {
		// Only replicas are evidence about the primary's data: a node answering as
		// master (an old primary back from the dead) is the reconcile loop's business.
		if !r.Reachable || r.Role != "slave" || r.ReplID == "" || p.Shares(r) {
			continue
		}
		if r.Keys > p.Keys || (r.Keys == p.Keys && r.Offset > p.Offset) {
			return PrimaryDataRegressed, fmt.Sprintf("primary %s has a new replication history (%s) holding %d keys at offset %d; replica %s holds %d keys at offset %d of history %s",
				p.Addr, short(p.ReplID), p.Keys, p.Offset, r.Addr, r.Keys, r.Offset, short(r.ReplID))
		}
	}
	if last != nil && last.ReplID != "" && !shareHistory(p, last.ReplID) && p.Offset < last.Offset {
		return PrimaryDataRegressed, fmt.Sprintf("primary %s restarted (run id %s -> %s) and its offset went back from %d to %d",
			p.Addr, short(last.RunID), short(p.RunID), last.Offset, p.Offset)
	}
	attached, parked := 0, 0
	for _, r := range replicas {
		switch {
		case r.Reachable && r.Parked:
			parked++
		case r.Reachable && r.MasterAddr == p.Addr:
			attached++
		}
	}
	return "", fmt.Sprintf("primary %s answers as master (run id %s, offset %d, %d keys); %d replica(s) attached, %d parked",
		p.Addr, short(p.RunID), p.Offset, p.Keys, attached, parked)
}

func hold(in Input, shard string) (Outcome, bool) {
	o := Outcome{Decision: events.DecisionHold}
	manual := fmt.Sprintf("`lazarus failover --shard %s`", shard)
	h := in.Holds
	switch {
	case h.Paused != nil:
		o.Reason = Paused
		scope, resume := "shard "+shard, fmt.Sprintf("`lazarus resume --shard %s`", shard)
		if h.Paused.All {
			scope, resume = "the whole fleet", "`lazarus resume`"
		}
		o.Detail = fmt.Sprintf("automation is paused for %s (by %s at %s%s)", scope, orUnknown(h.Paused.By),
			h.Paused.At.UTC().Format(time.RFC3339), withReason(h.Paused.Reason))
		o.Override = fmt.Sprintf("run %s, or fail over by hand with %s", resume, manual)
		return o, true
	case in.Alert.Flapping:
		o.Reason = Flapping
		o.Detail = "the alerter marks the shard as flapping"
		o.Override = fmt.Sprintf("lazarus acts on the next alert once the shard stops flapping; if the primary is really gone, run %s", manual)
		return o, true
	case in.Now.Before(h.CooldownUntil):
		o.Reason = Cooldown
		o.Detail = fmt.Sprintf("the shard failed over (%s) less than the cooldown ago", h.CooldownAfter)
		o.Override = fmt.Sprintf("wait until %s, or run `lazarus resume --shard %s` to lift the cooldown, or %s",
			h.CooldownUntil.UTC().Format("15:04:05Z"), shard, manual)
		return o, true
	case h.Fleet.MaxConcurrent > 0 && h.Fleet.Running >= h.Fleet.MaxConcurrent:
		o.Reason = FleetLimit
		o.Detail = fmt.Sprintf("%d failover(s) running, the fleet limit is %d", h.Fleet.Running, h.Fleet.MaxConcurrent)
		o.Override = fmt.Sprintf("lazarus retries when a running failover ends; to move this shard now run %s", manual)
		return o, true
	case h.Fleet.MaxPerWindow > 0 && h.Fleet.InWindow >= h.Fleet.MaxPerWindow:
		o.Reason = FleetLimit
		until := h.Fleet.OldestInWindow.Add(h.Fleet.Window)
		o.Detail = fmt.Sprintf("%d failovers in the last %s, the fleet limit is %d", h.Fleet.InWindow, h.Fleet.Window, h.Fleet.MaxPerWindow)
		o.Override = fmt.Sprintf("wait until %s, or run %s", until.UTC().Format("15:04:05Z"), manual)
		return o, true
	}
	return Outcome{}, false
}

// Choice is the result of Choose.
type Choice struct {
	Candidate  string
	Offset     int64
	Bound      int64
	LossWindow int64
	Rejected   map[string]string
}

// Choose picks the replica to promote: reachable, not loading or full-syncing, in the
// shard's replication history, not behind the acknowledged offset when it is known and
// not lagging beyond maxLag; the highest offset wins, then the topology order.
func Choose(primary Node, replicas []Node, last *Known, maxLag int64) Choice {
	c := Choice{Bound: -1, LossWindow: -1, Rejected: map[string]string{}}
	// The best known offset of the old primary's history, and that history's id.
	base, baseID := int64(-1), ""
	if last != nil {
		base, baseID = last.Offset, last.ReplID
		if last.AckedOffset >= 0 {
			c.Bound = last.AckedOffset
		}
	}
	regressed := primary.Reachable && primary.Role == "master" && regressedAgainst(primary, replicas)
	if primary.Reachable && primary.Role == "master" && (baseID == "" || shareHistory(primary, baseID)) && !regressed {
		// A live primary in the same history (a manual failover, a role change): its
		// own offset is the best reference.
		if primary.Offset > base {
			base, baseID = primary.Offset, primary.ReplID
		}
		if primary.AckedOffset > c.Bound {
			c.Bound = primary.AckedOffset
		}
	}
	if primary.Reachable && primary.Role != "master" && baseID != "" && shareHistory(primary, baseID) && primary.Offset > base {
		base = primary.Offset
	}
	type cand struct {
		n    Node
		prio int
	}
	var ok []cand
	for i, r := range replicas {
		why := ""
		switch {
		case !r.Reachable:
			why = "unreachable: " + r.Err
		case r.Loading:
			why = "loading its dataset"
		case r.SyncInProgress:
			why = "a full sync is in progress: its data is incomplete"
		case regressed && r.Shares(primary):
			why = fmt.Sprintf("it follows the regressed primary's new history %s: its data was replaced", short(primary.ReplID))
		case baseID != "" && r.ReplID != "" && !shareHistory(r, baseID):
			why = fmt.Sprintf("its replication history %s is not the primary's %s", short(r.ReplID), short(baseID))
		case c.Bound >= 0 && r.Offset < c.Bound:
			why = fmt.Sprintf("offset %d is behind the acknowledged offset %d", r.Offset, c.Bound)
		case maxLag > 0 && base >= 0 && base-r.Offset > maxLag:
			why = fmt.Sprintf("lagging %d bytes behind the primary's last known offset %d (bound %d)", base-r.Offset, base, maxLag)
		}
		if why != "" {
			c.Rejected[r.Addr] = why
			continue
		}
		ok = append(ok, cand{r, i})
	}
	if len(ok) == 0 {
		return c
	}
	sort.SliceStable(ok, func(i, j int) bool {
		if ok[i].n.Offset != ok[j].n.Offset {
			return ok[i].n.Offset > ok[j].n.Offset
		}
		return ok[i].prio < ok[j].prio
	})
	best := ok[0].n
	for _, o := range ok[1:] {
		c.Rejected[o.n.Addr] = fmt.Sprintf("offset %d, below the chosen %s at %d (or later in priority)", o.n.Offset, best.Addr, best.Offset)
	}
	c.Candidate, c.Offset = best.Addr, best.Offset
	if base >= 0 {
		c.LossWindow = max(0, base-best.Offset)
	}
	return c
}

// regressedAgainst reports whether any replica holds more data in a history the
// primary does not share.
func regressedAgainst(p Node, replicas []Node) bool {
	r, _ := Condition(p, replicas, nil)
	return r == PrimaryDataRegressed
}

// SafeToFollow reports whether node n may be made a replica of primary p without
// wiping data that p does not have: the restart-wipe guard for every REPLICAOF lazarus
// issues. Bytes of n beyond p's history are writes that no replica acknowledged; they
// are discarded as Redis does on any failover.
func SafeToFollow(n, p Node) (bool, string) {
	switch {
	case !p.IsMaster():
		return false, fmt.Sprintf("%s is not a reachable primary", p.Addr)
	case n.Keys == 0:
		return true, "it holds no keys"
	case n.Shares(p) && n.Offset <= p.Offset:
		return true, "same replication history, not ahead of the primary"
	case p.Keys == 0:
		return false, fmt.Sprintf("it holds %d keys and %s holds none: following would wipe them", n.Keys, p.Addr)
	case n.Shares(p):
		return true, "same replication history"
	case n.Keys > p.Keys:
		return false, fmt.Sprintf("it holds %d keys of another replication history and %s only %d: following would wipe them", n.Keys, p.Addr, p.Keys)
	}
	return true, fmt.Sprintf("%s holds at least as many keys (%d >= %d)", p.Addr, p.Keys, n.Keys)
}

func describeRejected(m map[string]string) string {
	if len(m) == 0 {
		return "the shard has no replicas"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = k + " " + m[k]
	}
	return strings.Join(parts, "; ")
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	if id == "" {
		return "?"
	}
	return id
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func withReason(s string) string {
	if s == "" {
		return ""
	}
	return ": " + s
}
