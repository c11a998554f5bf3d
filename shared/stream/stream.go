// Package stream is Heartline's one port to its message stream. Services publish and
// consume through the small role interfaces of this package; the backends (NATS
// JetStream, embedded NATS, Amazon Kinesis, and an in-memory one for unit tests) live in
// sub-packages, and streamtest holds the conformance suite that proves every backend
// keeps the same guarantees:
//
//   - At-least-once delivery: a message is acknowledged only after its handler returned
//     nil. A handler error (or a crash) has it delivered again; nothing is lost.
//   - Order per partition key: messages with the same key are handled in the order they
//     were published, one at a time. Messages of different keys may interleave.
//   - Durable consumer groups: a group's position survives restarts. A consumer that is
//     killed resumes, in its next incarnation, from its last acknowledged message.
//   - Sharing: instances of one group split the partitions between them (each key is
//     handled by one instance at a time, so its order holds); separate groups each see
//     every message.
//   - Publishing retries transient errors with backoff and returns permanent ones at once
//     (ErrTooLarge, ErrInvalid). A message id lets the stream drop duplicates where the
//     backend can (JetStream de-duplicates on it within its window).
//
// Handlers are called sequentially per partition, so a handler that blocks holds back the
// messages behind it on the same partition: keep handlers short.
package stream

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// MaxMessageSize is the largest payload every backend accepts (a Kinesis record is at
// most 1 MiB including its partition key; NATS's default max payload is 1 MiB).
const MaxMessageSize = 1<<20 - 512

// Message is what a publisher sends.
type Message struct {
	// Key is the partition key: the shard id for Heartline's events. Order is kept per key.
	Key string
	// ID identifies the message for de-duplication (the event id).
	ID string
	// Data is the payload, at most MaxMessageSize bytes.
	Data []byte
}

// Delivery is a message as a consumer receives it.
type Delivery struct {
	Message
	Topic string
	// Partition is the backend's partition the message came from (a Kinesis shard id, a
	// JetStream partition subject).
	Partition string
	// Position is the backend's position of the message within its partition (a
	// sequence number), for logs.
	Position string
	// Attempt is 1 on first delivery and counts redeliveries within this consumer.
	Attempt int
	// Published is when the stream accepted the message.
	Published time.Time
}

// Handler processes one delivery. Returning nil acknowledges it. Returning an error has
// it delivered again after a backoff, before any later message of its partition. Wrap
// the error with Permanent when retrying cannot help (a malformed message): the message
// is then moved to the dead-letter topic and acknowledged, so it is kept, not lost, and
// does not block its partition.
type Handler func(ctx context.Context, d Delivery) error

// Publisher publishes messages to a topic.
type Publisher interface {
	Publish(ctx context.Context, topic string, msg Message) error
	// PublishBatch publishes msgs, keeping their order per key. It returns nil only when
	// every message was accepted.
	PublishBatch(ctx context.Context, topic string, msgs []Message) error
}

// Consumer consumes a topic as a member of a durable consumer group.
type Consumer interface {
	// Consume calls h for the group's messages until ctx is cancelled (then it returns
	// nil after in-flight handlers returned) or a permanent error occurs.
	Consume(ctx context.Context, sub Subscription, h Handler) error
}

// Start says where a new group begins; an existing group always resumes where it was.
type Start int

const (
	// StartOldest reads a new group from the oldest retained message.
	StartOldest Start = iota
	// StartLatest reads a new group from messages published after it was created.
	StartLatest
)

// Subscription names what to consume.
type Subscription struct {
	Topic string
	// Group is the durable consumer group name ([A-Za-z0-9_-]).
	Group string
	// Instance names this member of the group (defaults to a random id); used for
	// partition leases and logs.
	Instance string
	// Start applies to a group that does not exist yet.
	Start Start
	// Ephemeral marks a private group that lives only as long as this subscription (a
	// watcher's random group): a backend may delete its state soon after the
	// subscription ends instead of keeping it for the retention period.
	Ephemeral bool
}

// Validate reports a bad subscription.
func (s Subscription) Validate() error {
	if !validName(s.Topic) {
		return fmt.Errorf("%w: topic %q: want 1-64 of A-Z a-z 0-9 _ -", ErrInvalid, s.Topic)
	}
	if !validName(s.Group) {
		return fmt.Errorf("%w: group %q: want 1-64 of A-Z a-z 0-9 _ -", ErrInvalid, s.Group)
	}
	return nil
}

// Backend is a whole stream backend: both roles, and the resources behind them.
type Backend interface {
	Publisher
	Consumer
	// Close releases connections (and stops an embedded server).
	Close() error
}

// Errors every backend reports the same way.
var (
	// ErrTooLarge: the message exceeds MaxMessageSize (or the backend's own limit).
	ErrTooLarge = errors.New("stream: message too large")
	// ErrInvalid: a bad topic, group, key or id.
	ErrInvalid = errors.New("stream: invalid argument")
	// ErrClosed: the backend was closed.
	ErrClosed = errors.New("stream: closed")
	// ErrPermanent marks handler errors that must not be retried (see Permanent).
	ErrPermanent = errors.New("permanent failure")
)

// Permanent marks a handler error as one that retrying cannot fix.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%w: %w", ErrPermanent, err)
}

// DeadLetterTopic is where a group's permanently failed messages are kept.
const DeadLetterTopic = "deadletter"

// CheckMessage returns a permanent error for a message no backend would accept.
func CheckMessage(topic string, m Message) error {
	if !validName(topic) {
		return fmt.Errorf("%w: topic %q", ErrInvalid, topic)
	}
	if m.Key == "" || len(m.Key) > 256 {
		return fmt.Errorf("%w: partition key must be 1-256 bytes, got %d", ErrInvalid, len(m.Key))
	}
	if len(m.ID) > 128 {
		return fmt.Errorf("%w: message id longer than 128 bytes", ErrInvalid)
	}
	if len(m.Data) > MaxMessageSize {
		return fmt.Errorf("%w: %d bytes, at most %d", ErrTooLarge, len(m.Data), MaxMessageSize)
	}
	return nil
}

func validName(s string) bool {
	if len(s) == 0 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
