package queue

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every error the Client returns is an *Error that wraps one of them,
// so callers branch with errors.Is and read the Category with errors.As.
var (
	// ErrInvalidQueue: the queue key is empty, too long or has a forbidden character.
	ErrInvalidQueue = errors.New("invalid queue key")
	// ErrInvalidID: a message id is malformed.
	ErrInvalidID = errors.New("invalid message id")
	// ErrInvalidIdempotencyKey: the idempotency key is malformed.
	ErrInvalidIdempotencyKey = errors.New("invalid idempotency key")
	// ErrBodyTooLarge: the body is above Config.MaxBody.
	ErrBodyTooLarge = errors.New("message body too large")
	// ErrUnknownShard: the named shard is not in the topology.
	ErrUnknownShard = errors.New("unknown shard")
	// ErrNoTopology: the topology has no shards.
	ErrNoTopology = errors.New("no topology")
	// ErrNotInFlight: an ack for a message that is stored but not in flight (its
	// visibility timeout expired and it went back to its queue: it will be delivered
	// again).
	ErrNotInFlight = errors.New("message is not in flight")
	// ErrUnavailable: the shard could not be reached or refused the write on every
	// attempt until the deadline; the write was definitely not applied.
	ErrUnavailable = errors.New("shard unavailable")
	// ErrShardDown: the shard's circuit is open (its calls failed for BreakerAfter
	// without a success), so the call failed at once without being sent; it wraps
	// under ErrUnavailable (or ErrUnknownOutcome if an earlier attempt may have been
	// applied).
	ErrShardDown = errors.New("shard down (circuit open)")
	// ErrUnknownOutcome: at least one attempt may have been applied (a timeout or
	// broken connection after the command was sent, or WAIT saw no replica). Retry
	// an enqueue with the same idempotency key to learn its id without storing it
	// twice.
	ErrUnknownOutcome = errors.New("outcome unknown")
	// ErrInternal: a reply the client does not understand (a bug, or a node that is
	// not a Ratequeue node).
	ErrInternal = errors.New("internal error")
	// ErrClosed: the client was closed.
	ErrClosed = errors.New("client closed")
)

// Category groups errors by what the caller should do about them.
type Category string

// Categories.
const (
	// CategoryInvalid: the request is bad; do not retry it (HTTP 400/413).
	CategoryInvalid Category = "invalid"
	// CategoryNotFound: an unknown shard, or an ack for a message not in flight.
	CategoryNotFound Category = "not_found"
	// CategoryUnavailable: nothing was applied; retry later (HTTP 503).
	CategoryUnavailable Category = "unavailable"
	// CategoryUnknown: the write may have been applied; retry with the same
	// idempotency key (HTTP 503 with outcome "unknown").
	CategoryUnknown Category = "unknown_outcome"
	// CategoryCanceled: the caller's context ended before anything was sent.
	CategoryCanceled Category = "canceled"
	// CategoryInternal: a bug or a misconfigured node (HTTP 500).
	CategoryInternal Category = "internal"
)

// Error is the error type of every failed Client call.
type Error struct {
	Op       string // enqueue, dequeue, ack, depth, stats, check
	Queue    string
	Shard    string
	Category Category
	Attempts int
	// Reason is the last retry reason ("dial", "timeout", "noreplicas", ...).
	Reason string
	Err    error
}

func (e *Error) Error() string {
	s := e.Op
	if e.Queue != "" {
		s += " queue " + e.Queue
	}
	if e.Shard != "" {
		s += " on shard " + e.Shard
	}
	if e.Attempts > 1 {
		s += fmt.Sprintf(" (%d attempts)", e.Attempts)
	}
	return s + ": " + e.Err.Error()
}

func (e *Error) Unwrap() error { return e.Err }

// CategoryOf returns the category of err ("" for nil, internal for foreign errors).
func CategoryOf(err error) Category {
	if err == nil {
		return ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Category
	}
	return CategoryInternal
}
