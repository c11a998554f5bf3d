package alerter

import "errors"

// Sentinel errors.
var (
	// ErrNotHeartbeat: a message on the heartbeats topic that is not a heartbeat event.
	ErrNotHeartbeat = errors.New("not a heartbeat event")
	// ErrKeyMismatch: the message's partition key is not the event's shard, so per-shard
	// order cannot be trusted for it.
	ErrKeyMismatch = errors.New("partition key does not match the event's shard")
	// ErrBadRecord: an incident record in the kv store that cannot be read.
	ErrBadRecord = errors.New("unreadable incident record")
	// ErrContention: the incident record kept changing under this instance.
	ErrContention = errors.New("incident record keeps changing")
)
