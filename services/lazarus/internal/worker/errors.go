package worker

import "errors"

// Sentinel errors.
var (
	// ErrLeaseHeld: another worker holds the shard's lease.
	ErrLeaseHeld = errors.New("shard lease held by another worker")
	// ErrLeaseLost: the shard's lease was lost while working.
	ErrLeaseLost = errors.New("shard lease lost")
	// ErrRecordTaken: the failover record was changed by another worker.
	ErrRecordTaken = errors.New("failover record taken over")
	// ErrRouteConflict: the topology changed between decision and routing.
	ErrRouteConflict = errors.New("topology changed under the failover")
	// ErrBadShard: a shard id that cannot be one.
	ErrBadShard = errors.New("invalid shard id")
	// ErrUnknownShard: the shard is not in the topology.
	ErrUnknownShard = errors.New("unknown shard")
	// ErrNotAlert: a message on the alerts topic that is not an alert.
	ErrNotAlert = errors.New("not an alert event")
	// ErrCrashed is returned by a Hooks function to simulate the death of the worker
	// process at that point: nothing more is written, the lease is not released.
	ErrCrashed = errors.New("worker crashed (injected)")
	// ErrSwitchover: a switchover cannot run.
	ErrSwitchover = errors.New("switchover refused")
	// ErrNoFailover: a manual failover found nothing to do.
	ErrNoFailover = errors.New("no failover")
)
