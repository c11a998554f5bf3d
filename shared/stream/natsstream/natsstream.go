// Package natsstream is the stream backend of the NATS profile, on NATS JetStream
// (nats-server 2.14 or newer for the fast handover described below).
//
// Layout on the server:
//
//   - a message goes to subject hl.<topic>.<partition>, partition = FNV-1a 32(key)
//     mod P (default 16);
//   - each partition is its own stream, HL_<topic>_<partition>, file storage. One stream
//     per topic with a filtered consumer per partition was measured 3 to 4 times slower
//     to consume on this project's machines: every filtered consumer reads past the
//     other partitions' messages, and their reads contend. P is recorded in the
//     streams' metadata when partition 0's stream is created, and every client uses the
//     recorded value, so publishers and consumers always agree;
//   - headers: Hl-Key (the partition key), Nats-Msg-Id (the message id: JetStream drops
//     a repeated id within the duplicate window; a key always maps to the same stream,
//     so a message's repeats meet there);
//   - packs (publish.go, pack.go): messages published to one partition while an
//     earlier publish to it is in flight go out together as one JetStream message,
//     whose Nats-Msg-Id derives from their ids. A pack retried by the backend is
//     dropped as a duplicate; a message the caller publishes again after a failed call
//     is de-duplicated when it travels alone, but may be stored twice when it lands in
//     a different pack (delivery is at-least-once in any case);
//   - per consumer group and partition one durable pull consumer, <group>_p<N>, with
//     the ack-all policy: acknowledging a message acknowledges the partition's earlier
//     ones, which is exact because they are handled strictly in order.
//     A consumer is deleted by the server after MaxAge without a pull, or after
//     EphemeralInactive for an ephemeral subscription (a watcher's private group).
//
// Members of a group share the partitions through leases in a kv.Store
// (stream/group, keys stream.<topic>.<group>.{p,m}.*; by default the "heartline" NATS KV
// bucket on the same connection). Only the lease holder pulls a partition, and it
// handles the partition's messages one at a time through stream.Runner, so per-key
// order holds across the group, across retries and across handovers: when a member
// takes a partition whose consumer still has messages outstanding at a previous owner
// (one that crashed, or stopped with messages prefetched), it resets the consumer to
// its acknowledgement floor first (JetStream consumer reset), so delivery resumes at
// the first unacknowledged message, in order. On servers without consumer reset it
// waits out the ack wait instead.
//
// Delivery.Attempt is JetStream's delivery count plus the in-process retries; a reset
// restarts the delivery count, so after a handover a redelivered message may show
// attempt 1 again. Partition is the partition number, Position the stream sequence
// within the partition's stream.
package natsstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/kv/natskv"
	"github.com/heartline/heartline/shared/stream"
)

var (
	_ stream.Backend   = (*Backend)(nil)
	_ stream.Publisher = (*Backend)(nil)
	_ stream.Consumer  = (*Backend)(nil)
)

// metaPartitions is the stream metadata key that records the partition count.
const metaPartitions = "heartline.partitions"

// Options configure New. Give either Conn (shared: Close leaves it open) or URL.
type Options struct {
	URL  string
	Conn *nats.Conn
	// Name is the connection name when New dials URL (shows in server monitoring).
	Name string
	// Partitions per topic for streams this client creates (default 16). An existing
	// stream keeps the count it was created with.
	Partitions int
	// LeaseTTL of partition leases (default 10 s): a crashed member's partitions move
	// to another member after about this long.
	LeaseTTL time.Duration
	// LeaseInterval between lease renewals and rebalancing (default LeaseTTL/4).
	LeaseInterval time.Duration
	// AckWait before JetStream redelivers an unacknowledged message (default
	// LeaseTTL/2; it must stay below LeaseTTL). A handler that runs longer is kept
	// alive by progress acks, so this bounds only how long a dead member's messages
	// stay held.
	AckWait time.Duration
	// Replicas of new streams (default 1; 3 on a NATS cluster).
	Replicas int
	// MaxAge is how long new streams retain messages (default 7 days). Consumers of
	// groups idle for this long are removed as well (a private group such as
	// chaos-<run id> leaves nothing behind).
	MaxAge time.Duration
	// MaxBytes bounds each new partition stream's size (default unlimited; oldest
	// dropped first).
	MaxBytes int64
	// DuplicateWindow is how long a message id is remembered for de-duplication
	// (default 2 min).
	DuplicateWindow time.Duration
	// FetchBatch is how many JetStream messages (plain messages or packs) a partition
	// prefetches (default 256).
	FetchBatch int
	// FetchBytes bounds what a partition prefetches in bytes (default 8 MiB).
	FetchBytes int
	// PackBytes bounds a pack: consecutive messages of one partition published as one
	// JetStream message (default 64 KiB, at most the server's max payload). A message
	// larger than this goes alone.
	PackBytes int
	// PackMessages bounds the messages of one pack (default 256). A crash of a consumer
	// in the middle of a pack redelivers the pack's messages already handled.
	PackMessages int
	// EphemeralInactive is how long the consumers of an ephemeral group (a watcher that
	// crashed without deleting them) outlive their last pull (default 1 min).
	EphemeralInactive time.Duration
	// PublishTimeout bounds one publish attempt (default 5 s); failed attempts are
	// retried with Retry until the caller's ctx ends.
	PublishTimeout time.Duration
	// Retry is the backoff between publish attempts and consumer restarts (default
	// 50 ms to 2 s).
	Retry backoff.Policy
	// HandlerRetry is the backoff between handler retries (default stream.DefaultRetry).
	HandlerRetry backoff.Policy
	// KV holds the group leases (default: a natskv store in bucket KVBucket on the
	// same connection).
	KV kv.Store
	// KVBucket is the bucket of the default KV (default "heartline").
	KVBucket string
	// Embedded, when set, is shut down by Close after the connection is closed.
	Embedded *Embedded
	Log      zerolog.Logger
}

func (o *Options) defaults() error {
	if o.Partitions <= 0 {
		o.Partitions = 16
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 10 * time.Second
	}
	if o.LeaseInterval <= 0 {
		o.LeaseInterval = o.LeaseTTL / 4
	}
	if o.AckWait <= 0 {
		o.AckWait = o.LeaseTTL / 2
	}
	if o.AckWait >= o.LeaseTTL {
		return fmt.Errorf("%w: ack wait %s must be below the lease TTL %s", stream.ErrInvalid, o.AckWait, o.LeaseTTL)
	}
	if o.LeaseInterval >= o.LeaseTTL {
		return fmt.Errorf("%w: lease interval %s must be below the lease TTL %s", stream.ErrInvalid, o.LeaseInterval, o.LeaseTTL)
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	if o.MaxAge <= 0 {
		o.MaxAge = 7 * 24 * time.Hour
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = -1
	}
	if o.DuplicateWindow <= 0 {
		o.DuplicateWindow = 2 * time.Minute
	}
	if o.DuplicateWindow > o.MaxAge {
		o.DuplicateWindow = o.MaxAge
	}
	if o.FetchBatch <= 0 {
		o.FetchBatch = 256
	}
	if o.FetchBytes <= 0 {
		o.FetchBytes = 8 << 20
	}
	if o.PackBytes <= 0 {
		o.PackBytes = 64 << 10
	}
	if o.PackMessages <= 0 {
		o.PackMessages = 256
	}
	if o.EphemeralInactive <= 0 {
		o.EphemeralInactive = time.Minute
	}
	if o.PublishTimeout <= 0 {
		o.PublishTimeout = 5 * time.Second
	}
	if o.Retry.Initial <= 0 {
		o.Retry = backoff.Policy{Initial: 50 * time.Millisecond, Max: 2 * time.Second}
	}
	if o.HandlerRetry.Initial <= 0 {
		o.HandlerRetry = stream.DefaultRetry
	}
	return nil
}

// Backend is a stream.Backend on NATS JetStream.
type Backend struct {
	opts    Options
	nc      *nats.Conn
	ownConn bool
	js      jetstream.JetStream
	kv      kv.Store
	log     zerolog.Logger

	mu      sync.Mutex
	topics  map[string]*topicState
	closed  bool
	cancels map[*context.CancelFunc]struct{}
	running sync.WaitGroup
	lanes   map[string]*lane // by subject
}

type topicState struct {
	topic      string
	partitions int
	streams    []string
	subjects   []string
	lanes      []*lane
}

// New connects (or uses o.Conn) and returns a backend. Streams and consumers are
// created on first use. With a URL it waits for the server until ctx ends.
func New(ctx context.Context, o Options) (*Backend, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	nc, own := o.Conn, false
	if nc == nil {
		var err error
		nc, err = natskv.Dial(ctx, o.URL, natskv.DialOptions{Name: o.Name, Log: o.Log})
		if err != nil {
			return nil, fmt.Errorf("not opening the NATS stream: %w", err)
		}
		own = true
	}
	fail := func(err error) (*Backend, error) {
		if own {
			nc.Close()
		}
		return nil, fmt.Errorf("not opening the NATS stream: %w", err)
	}
	js, err := jetstream.New(nc,
		jetstream.WithPublishAsyncMaxPending(4096),
		jetstream.WithPublishAsyncTimeout(o.PublishTimeout))
	if err != nil {
		return fail(err)
	}
	store := o.KV
	if store == nil {
		s, err := natskv.New(ctx, natskv.Options{Conn: nc, Bucket: o.KVBucket, Replicas: o.Replicas, Log: o.Log})
		if err != nil {
			return fail(err)
		}
		store = s
	}
	return &Backend{opts: o, nc: nc, ownConn: own, js: js, kv: store, log: o.Log,
		topics: map[string]*topicState{}, cancels: map[*context.CancelFunc]struct{}{}, lanes: map[string]*lane{}}, nil
}

// Conn is the backend's NATS connection (to share it with a natskv store).
func (b *Backend) Conn() *nats.Conn { return b.nc }

// KV is the store holding the group leases.
func (b *Backend) KV() kv.Store { return b.kv }

// StreamName is the JetStream stream of a topic's partition.
func StreamName(topic string, partition int) string {
	return "HL_" + topic + "_" + strconv.Itoa(partition)
}

// Subject is the subject of a topic's partition.
func Subject(topic string, partition int) string {
	return "hl." + topic + "." + strconv.Itoa(partition)
}

// ConsumerName is the durable consumer of a group on a partition's stream.
func ConsumerName(group string, partition int) string {
	return group + "_p" + strconv.Itoa(partition)
}

func (b *Backend) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// topic returns the topic's partition streams, creating those that do not exist.
// Partition 0's stream is created (or found) first and its metadata decides the
// partition count. Concurrent creators (in this or other processes) all succeed:
// creating a stream that exists with the same configuration is a no-op on the server,
// and one that exists with another configuration (another client's options) is used
// as it is.
func (b *Backend) topic(ctx context.Context, topic string) (*topicState, error) {
	b.mu.Lock()
	t := b.topics[topic]
	b.mu.Unlock()
	if t != nil {
		return t, nil
	}
	info, err := b.ensureStream(ctx, topic, 0, b.opts.Partitions)
	if err != nil {
		return nil, err
	}
	parts := b.opts.Partitions
	if v, ok := info.Config.Metadata[metaPartitions]; ok {
		if n, err := strconv.Atoi(v); err == nil && n > 0 {
			parts = n
		}
	}
	if parts != b.opts.Partitions {
		b.log.Warn().Str("topic", topic).Int("stream_partitions", parts).Int("configured_partitions", b.opts.Partitions).
			Msg("the topic has another partition count than configured; using the topic's")
	}
	for p := 1; p < parts; p++ {
		if _, err := b.ensureStream(ctx, topic, p, parts); err != nil {
			return nil, err
		}
	}
	t = &topicState{topic: topic, partitions: parts, streams: make([]string, parts), subjects: make([]string, parts),
		lanes: make([]*lane, parts)}
	for i := range t.subjects {
		t.streams[i] = StreamName(topic, i)
		t.subjects[i] = Subject(topic, i)
		t.lanes[i] = b.laneOf(topic, t.subjects[i])
	}
	b.mu.Lock()
	if prev := b.topics[topic]; prev != nil {
		t = prev
	} else {
		b.topics[topic] = t
	}
	b.mu.Unlock()
	return t, nil
}

// ensureStream returns the info of a partition's stream, creating it when missing.
func (b *Backend) ensureStream(ctx context.Context, topic string, p, parts int) (*jetstream.StreamInfo, error) {
	name := StreamName(topic, p)
	cfg := jetstream.StreamConfig{
		Name:        name,
		Description: fmt.Sprintf("Heartline topic %s, partition %d of %d", topic, p, parts),
		Subjects:    []string{Subject(topic, p)},
		Retention:   jetstream.LimitsPolicy,
		Discard:     jetstream.DiscardOld,
		Storage:     jetstream.FileStorage,
		MaxAge:      b.opts.MaxAge,
		MaxBytes:    b.opts.MaxBytes,
		MaxMsgs:     -1,
		Duplicates:  b.opts.DuplicateWindow,
		Replicas:    b.opts.Replicas,
		Metadata:    map[string]string{metaPartitions: strconv.Itoa(parts)},
	}
	for attempt := 0; ; attempt++ {
		s, err := b.js.Stream(ctx, name)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			s, err = b.js.CreateStream(ctx, cfg)
			if errors.Is(err, jetstream.ErrStreamNameAlreadyInUse) && attempt < 3 {
				continue // created meanwhile with other options: use it
			}
			if err == nil && p == 0 {
				b.log.Info().Str("topic", topic).Int("partitions", parts).Msg("creating the topic's partition streams")
			}
		}
		if err != nil {
			return nil, fmt.Errorf("stream %s: %w", name, err)
		}
		return s.CachedInfo(), nil
	}
}

// forget drops a topic's cached stream, so that the next use checks (and recreates)
// it: after "no responders" the stream may have been deleted.
func (b *Backend) forget(topic string) {
	b.mu.Lock()
	delete(b.topics, topic)
	b.mu.Unlock()
}

// Close stops this backend's consumers (waiting for their handlers), then drains and
// closes the connection if New dialed it, then shuts an embedded server down.
func (b *Backend) Close() error {
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return nil
	}
	b.closed = true
	for c := range b.cancels {
		(*c)()
	}
	b.mu.Unlock()
	done := make(chan struct{})
	go func() {
		b.running.Wait()
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		b.log.Warn().Msg("consumers did not stop within 30s of Close; closing the connection under them")
	}
	if b.ownConn {
		closed := make(chan struct{})
		b.nc.SetClosedHandler(func(*nats.Conn) { close(closed) })
		if err := b.nc.Drain(); err != nil {
			b.nc.Close()
		} else {
			select {
			case <-closed:
			case <-time.After(15 * time.Second):
				b.nc.Close()
			}
		}
	}
	if b.opts.Embedded != nil {
		b.opts.Embedded.Shutdown()
	}
	return nil
}
