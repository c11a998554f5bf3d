package decide

import (
	"fmt"
	"strings"
	"time"
)

// SpareReason is the typed outcome of the spare decision.
type SpareReason string

// Spare decisions.
const (
	// SpareInSync: a replica follows the primary with its link up; nothing to do.
	SpareInSync SpareReason = "REPLICA_IN_SYNC"
	// SpareRecovering: no replica is in sync but one answers (syncing, parked, or
	// following another node): the reconcile pass repoints it; a spare would only
	// cost a full sync.
	SpareRecovering SpareReason = "REPLICA_RECOVERING"
	// SpareGrace: every replica is unreachable, for less than the grace period (a
	// restart comes back faster than a spare syncs).
	SpareGrace SpareReason = "NO_REPLICA_GRACE"
	// SpareNoneFree: a spare is needed and the pool has none that is usable.
	SpareNoneFree SpareReason = "NO_SPARE"
	// SpareAttach: attach Outcome.Spare and move Outcome.Replace to the pool.
	SpareAttach SpareReason = "ATTACH_SPARE"
)

// PoolNode is one spare as checked now.
type PoolNode struct {
	Node Node
	// From is the shard the node was replaced in ("" when an operator added it);
	// FromPrimary is that shard's primary as checked now (zero when From is "").
	From        string
	FromPrimary Node
	// Claimed is the shard another attach holds the spare for.
	Claimed string
}

// SpareInput is what the spare decision needs about one shard whose primary is fine.
type SpareInput struct {
	Primary  Node
	Replicas []Node
	Pool     []PoolNode
	// NoReplicaFor is how long every replica has been unreachable (0: not now).
	NoReplicaFor time.Duration
	// After is the grace period before a spare is attached.
	After time.Duration
}

// SpareOutcome is the decision.
type SpareOutcome struct {
	Reason SpareReason
	Detail string
	// Spare is the node to attach; Replace the shard's replicas it replaces (they join
	// the pool, From the shard).
	Spare   string
	Replace []string
	// Rejected says why each spare of the pool was not chosen.
	Rejected map[string]string
}

// InSync reports whether replica r follows primary p with its link up and no sync in
// progress: a replica that acknowledges writes (min-replicas-to-write counts it).
func InSync(r, p Node) bool {
	return r.Reachable && !r.Loading && r.Role == "slave" && !r.Parked && r.MasterAddr == p.Addr && r.LinkUp && !r.SyncInProgress
}

// Spare decides whether a shard needs a spare, and which one. It never picks a spare
// whose data a full resync would lose: a spare must be empty, already follow the
// primary, or hold data its old shard's primary also holds (SafeToFollow).
func Spare(in SpareInput) SpareOutcome {
	for _, r := range in.Replicas {
		if InSync(r, in.Primary) {
			return SpareOutcome{Reason: SpareInSync, Detail: r.Addr + " is in sync"}
		}
	}
	for _, r := range in.Replicas {
		if r.Reachable {
			return SpareOutcome{Reason: SpareRecovering, Detail: fmt.Sprintf("%s answers (role %s, follows %q, link up %v, syncing %v, parked %v)",
				r.Addr, r.Role, r.MasterAddr, r.LinkUp, r.SyncInProgress, r.Parked)}
		}
	}
	if in.NoReplicaFor < in.After {
		return SpareOutcome{Reason: SpareGrace, Detail: fmt.Sprintf("no replica answers for %s, grace %s", in.NoReplicaFor.Round(time.Millisecond), in.After)}
	}
	var replace []string
	for _, r := range in.Replicas {
		replace = append(replace, r.Addr)
	}
	rejected := map[string]string{}
	best, bestRank := "", 0
	for _, s := range in.Pool {
		n := s.Node
		rank := 0
		switch {
		case s.Claimed != "":
			rejected[n.Addr] = "claimed for shard " + s.Claimed
		case !n.Reachable:
			rejected[n.Addr] = "unreachable: " + n.Err
		case n.Loading:
			rejected[n.Addr] = "loading"
		case n.Addr == in.Primary.Addr:
			rejected[n.Addr] = "it is the shard's primary"
		case n.Role == "slave" && n.MasterAddr == in.Primary.Addr && !n.Parked:
			rank = 3 // already follows this primary: the quickest sync
		case n.Keys == 0:
			rank = 2
		case s.From != "":
			if ok, why := SafeToFollow(n, s.FromPrimary); ok {
				rank = 1
			} else {
				rejected[n.Addr] = fmt.Sprintf("holds %d keys that shard %s's primary may not: %s", n.Keys, s.From, why)
			}
		default:
			rejected[n.Addr] = fmt.Sprintf("holds %d keys of unknown origin: empty it (FLUSHALL) or remove it from the pool", n.Keys)
		}
		if rank > bestRank {
			best, bestRank = n.Addr, rank
		}
	}
	if best == "" {
		return SpareOutcome{Reason: SpareNoneFree, Replace: replace, Rejected: rejected,
			Detail: "no usable spare: " + describeRejectedOr(rejected, "the pool is empty")}
	}
	delete(rejected, best)
	return SpareOutcome{Reason: SpareAttach, Spare: best, Replace: replace, Rejected: rejected,
		Detail: fmt.Sprintf("no replica answers for %s; attaching %s in place of %s", in.NoReplicaFor.Round(time.Millisecond), best, strings.Join(replace, ","))}
}

func describeRejectedOr(m map[string]string, none string) string {
	if len(m) == 0 {
		return none
	}
	return describeRejected(m)
}
