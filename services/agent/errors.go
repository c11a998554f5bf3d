package agent

import "errors"

// Sentinel errors. They are wrapped with %w naming the skipped action.
var (
	// ErrNoPrimary: the agent does not know the primary's address (no -primary, no
	// topology entry, and the replica is parked or not a replica).
	ErrNoPrimary = errors.New("primary address unknown")
	// ErrNotFollowing: the replica does not replicate from the primary the agent
	// guards, so the agent leaves its replication alone.
	ErrNotFollowing = errors.New("replica does not follow the guarded primary")
	// ErrNamedPrimary: the topology names this replica as the shard's primary; the
	// agent never touches its replication.
	ErrNamedPrimary = errors.New("the topology names this node as primary")
	// ErrFreezeDisabled: freezing is turned off (-freeze=false).
	ErrFreezeDisabled = errors.New("freezing is disabled")
	// ErrNothingToProtect: the replica holds no keys, so parking it would protect
	// nothing and only keep it from syncing.
	ErrNothingToProtect = errors.New("the replica holds no data")
	// ErrParkUnsafe: something accepts connections at the park address, so a replica
	// parked there could resync from it; the agent does not park (wraps
	// redisinfo.ErrParkAnswers).
	ErrParkUnsafe = errors.New("park address is not safe")
	// ErrSpare: without -shard, the node is in no shard of the topology (a spare);
	// the agent publishes no heartbeats until lazarus attaches it to a shard.
	ErrSpare = errors.New("the node is in no shard (a spare)")
	// ErrAlreadyParked: the replica is already parked.
	ErrAlreadyParked = errors.New("replica already parked")
	// ErrBadDesired: the declared desired configuration cannot be parsed.
	ErrBadDesired = errors.New("bad desired configuration")
)
