package injector

import "errors"

// Sentinel errors. Refusals say "not attacking: ..." and wrap one of these.
var (
	// ErrInvalid: the request is malformed (unknown fault, bad selector, bad parameter).
	ErrInvalid = errors.New("invalid attack request")
	// ErrNotAllowed: a target is not on the allowlist.
	ErrNotAllowed = errors.New("target not on the allowlist")
	// ErrTooManyShards: the attack would put more shards under attack than allowed.
	ErrTooManyShards = errors.New("too many shards under attack")
	// ErrDegraded: the shard is already degraded (a node down, a replica parked or
	// lagging, automation paused, an odd topology).
	ErrDegraded = errors.New("shard is degraded")
	// ErrOpenAlert: the shard has an open alert (a real incident).
	ErrOpenAlert = errors.New("shard has an open alert")
	// ErrBusy: the target is already under attack by another run.
	ErrBusy = errors.New("target already under attack")
	// ErrUnknownAttack: no active attack has that id.
	ErrUnknownAttack = errors.New("unknown attack")
	// ErrNotRecorded: the attack's event could not be published, so it was not made.
	ErrNotRecorded = errors.New("attack event not published")
	// ErrHalted: the injector is halting; no new attack starts until it is done.
	ErrHalted = errors.New("injector is halting")
)
