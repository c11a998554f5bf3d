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
//   - per consumer group and partition one durable pull consumer, <group>_p<N>, with
//     the ack-all policy: acknowledging a message acknowledges the partition's earlier
//     ones, which is exact because they are handled strictly in order.
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
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/kv/natskv"
	"github.com/heartline/heartline/shared/lease"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/group"
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
	// FetchBatch is how many messages a partition prefetches (default 256).
	FetchBatch int
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
}

type topicState struct {
	topic      string
	partitions int
	streams    []string
	subjects   []string
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
		topics: map[string]*topicState{}, cancels: map[*context.CancelFunc]struct{}{}}, nil
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
	t = &topicState{topic: topic, partitions: parts, streams: make([]string, parts), subjects: make([]string, parts)}
	for i := range t.subjects {
		t.streams[i] = StreamName(topic, i)
		t.subjects[i] = Subject(topic, i)
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

// check validates a message, including against the server's payload limit.
func (b *Backend) check(topic string, m stream.Message) error {
	if err := stream.CheckMessage(topic, m); err != nil {
		return err
	}
	h, id := encodeHeaders(m.Key, m.ID)
	if max := b.nc.MaxPayload(); max > 0 && int64(len(m.Data)+headerSize(h, id)) > max {
		return fmt.Errorf("%w: %d bytes with headers, the NATS server accepts at most %d", stream.ErrTooLarge,
			len(m.Data)+headerSize(h, id), max)
	}
	return nil
}

func (t *topicState) msg(m stream.Message) (*nats.Msg, []jetstream.PublishOpt) {
	h, id := encodeHeaders(m.Key, m.ID)
	nm := &nats.Msg{Subject: t.subjects[Partition(m.Key, t.partitions)], Header: h, Data: m.Data}
	if id == "" {
		return nm, nil
	}
	return nm, []jetstream.PublishOpt{jetstream.WithMsgID(id)}
}

// permanent returns the error to report at once for a publish error retrying cannot
// fix, or nil for a transient one.
func (b *Backend) permanent(err error) error {
	switch {
	case errors.Is(err, nats.ErrMaxPayload), errors.Is(err, jetstream.ErrStreamMessageExceedsMaximum):
		return fmt.Errorf("%w: %w", stream.ErrTooLarge, err)
	case errors.Is(err, nats.ErrBadSubject), errors.Is(err, nats.ErrBadHeaderMsg):
		return fmt.Errorf("%w: %w", stream.ErrInvalid, err)
	case errors.Is(err, nats.ErrConnectionClosed), b.isClosed():
		return fmt.Errorf("%w: %w", stream.ErrClosed, err)
	}
	return nil
}

// Publish publishes one message, retrying transient errors until ctx ends.
func (b *Backend) Publish(ctx context.Context, topic string, m stream.Message) error {
	if err := b.check(topic, m); err != nil {
		return err
	}
	if b.isClosed() {
		return stream.ErrClosed
	}
	return b.publishSync(ctx, topic, m)
}

func (b *Backend) publishSync(ctx context.Context, topic string, m stream.Message) error {
	for attempt := 1; ; attempt++ {
		err := b.publishOnce(ctx, topic, m)
		if err == nil {
			return nil
		}
		if perr := b.permanent(err); perr != nil {
			return fmt.Errorf("publishing to %s: %w", topic, perr)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("publishing to %s: %w (last error: %w)", topic, ctx.Err(), err)
		}
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			b.forget(topic)
		}
		if attempt == 1 || attempt%20 == 0 {
			b.log.Warn().Err(err).Str("topic", topic).Str("key", m.Key).Int("attempt", attempt).
				Msg("publish failed; retrying")
		}
		if backoff.Sleep(ctx, b.opts.Retry.Delay(attempt)) != nil {
			return fmt.Errorf("publishing to %s: %w (last error: %w)", topic, ctx.Err(), err)
		}
	}
}

func (b *Backend) publishOnce(ctx context.Context, topic string, m stream.Message) error {
	actx, cancel := context.WithTimeout(ctx, b.opts.PublishTimeout)
	defer cancel()
	t, err := b.topic(actx, topic)
	if err != nil {
		return err
	}
	nm, opts := t.msg(m)
	_, err = b.js.PublishMsg(actx, nm, opts...)
	return err
}

// PublishBatch publishes msgs and returns nil only when every message was stored. A
// batch with an invalid message publishes nothing.
//
// Messages of different keys are published asynchronously and their acknowledgements
// awaited together; a key's next message is sent only after its previous one was
// acknowledged. The batch goes out in waves: wave n holds the n-th message of every
// key. Pipelining two messages of one key is not safe: across a reconnect the first
// can be lost on the dead connection while the second, buffered for the new one, is
// stored, and no retry could put them back in order. A failed message is retried
// (sequentially, with backoff; its id makes a retry of a message that was in fact
// stored a duplicate JetStream drops) before the next wave starts.
func (b *Backend) PublishBatch(ctx context.Context, topic string, msgs []stream.Message) error {
	for _, m := range msgs {
		if err := b.check(topic, m); err != nil {
			return err
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	if b.isClosed() {
		return stream.ErrClosed
	}
	if len(msgs) == 1 {
		return b.publishSync(ctx, topic, msgs[0])
	}
	var t *topicState
	for attempt := 1; t == nil; attempt++ {
		var err error
		actx, cancel := context.WithTimeout(ctx, b.opts.PublishTimeout)
		t, err = b.topic(actx, topic)
		cancel()
		if err == nil {
			break
		}
		if perr := b.permanent(err); perr != nil {
			return fmt.Errorf("publishing to %s: %w", topic, perr)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("publishing to %s: %w (last error: %w)", topic, ctx.Err(), err)
		}
		if attempt == 1 || attempt%20 == 0 {
			b.log.Warn().Err(err).Str("topic", topic).Int("attempt", attempt).Msg("topic's stream not ready; retrying")
		}
		if backoff.Sleep(ctx, b.opts.Retry.Delay(attempt)) != nil {
			return fmt.Errorf("publishing to %s: %w (last error: %w)", topic, ctx.Err(), err)
		}
	}
	for _, wave := range waves(msgs) {
		if err := b.publishWave(ctx, t, msgs, wave); err != nil {
			return err
		}
	}
	return nil
}

// waves splits msgs into waves: wave n lists the indexes of the n-th message of each
// key, in batch order.
func waves(msgs []stream.Message) [][]int {
	seen := make(map[string]int, len(msgs))
	var out [][]int
	for i, m := range msgs {
		n := seen[m.Key]
		seen[m.Key] = n + 1
		if n == len(out) {
			out = append(out, make([]int, 0, len(msgs)-i))
		}
		out[n] = append(out[n], i)
	}
	return out
}

// publishWave publishes messages of distinct keys asynchronously, waits for their
// acknowledgements and retries the failed ones one by one.
func (b *Backend) publishWave(ctx context.Context, t *topicState, msgs []stream.Message, wave []int) error {
	futures := make([]jetstream.PubAckFuture, len(wave))
	var retry []int
	for j, i := range wave {
		f, err := b.publishAsync(ctx, t, msgs[i], futures[:j])
		if err != nil {
			if perr := b.permanent(err); perr != nil {
				return fmt.Errorf("publishing to %s: %w", t.topic, perr)
			}
			if ctx.Err() != nil {
				return fmt.Errorf("publishing to %s: %w", t.topic, ctx.Err())
			}
			retry = append(retry, i)
			continue
		}
		futures[j] = f
	}
	for j, f := range futures {
		if f == nil {
			continue
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			if perr := b.permanent(err); perr != nil {
				return fmt.Errorf("publishing to %s: %w", t.topic, perr)
			}
			retry = append(retry, wave[j])
		case <-ctx.Done():
			return fmt.Errorf("publishing to %s: %w", t.topic, ctx.Err())
		}
	}
	for _, i := range retry {
		if err := b.publishSync(ctx, t.topic, msgs[i]); err != nil {
			return err
		}
	}
	if len(retry) > 0 {
		b.log.Debug().Str("topic", t.topic).Int("retried", len(retry)).Msg("part of a batch was published again")
	}
	return nil
}

// publishAsync starts one asynchronous publish. When too many publishes are in flight
// it waits for the earliest of this batch (or a moment) and tries again.
func (b *Backend) publishAsync(ctx context.Context, t *topicState, m stream.Message, earlier []jetstream.PubAckFuture) (jetstream.PubAckFuture, error) {
	nm, opts := t.msg(m)
	next := 0
	for {
		f, err := b.js.PublishMsgAsync(nm, opts...)
		if err == nil {
			return f, nil
		}
		if !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
			return nil, err
		}
		for next < len(earlier) && earlier[next] == nil {
			next++
		}
		var wait <-chan time.Time
		var ok <-chan *jetstream.PubAck
		var fail <-chan error
		if next < len(earlier) {
			ok, fail = earlier[next].Ok(), earlier[next].Err()
			next++
		} else {
			wait = time.After(5 * time.Millisecond)
		}
		select {
		case <-ok:
		case <-fail: // judged when all are waited for
		case <-wait:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Consume works this member's share of the group's partitions until ctx is cancelled
// or the backend is closed; then it returns nil once the in-flight handlers returned.
func (b *Backend) Consume(ctx context.Context, sub stream.Subscription, h stream.Handler) error {
	if err := sub.Validate(); err != nil {
		return err
	}
	b.mu.Lock()
	closed := b.closed
	b.mu.Unlock()
	if h == nil && !closed {
		return fmt.Errorf("%w: nil handler", stream.ErrInvalid)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b.mu.Lock()
	if b.closed {
		b.mu.Unlock()
		return stream.ErrClosed
	}
	b.cancels[&cancel] = struct{}{}
	b.running.Add(1)
	b.mu.Unlock()
	defer func() {
		b.mu.Lock()
		delete(b.cancels, &cancel)
		b.mu.Unlock()
		b.running.Done()
	}()
	// A connection closed under the backend (not by Close) ends Consume with ErrClosed.
	var connClosed atomic.Bool
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				if b.nc.IsClosed() && !b.isClosed() {
					connClosed.Store(true)
					cancel()
					return
				}
			}
		}
	}()
	ended := func() error {
		if connClosed.Load() {
			return fmt.Errorf("not consuming %s: the NATS connection was closed: %w", sub.Topic, stream.ErrClosed)
		}
		return nil
	}

	member := sub.Instance
	if member == "" {
		host, _ := os.Hostname()
		member = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	}
	member = group.MemberID(member)
	log := b.log.With().Str("topic", sub.Topic).Str("group", sub.Group).Str("member", member).Logger()

	// Create the stream and every partition's consumer before taking partitions, so that
	// a new StartLatest group starts at the same moment on all partitions.
	var t *topicState
	for attempt := 1; ; attempt++ {
		err := b.prepare(ctx, sub, &t)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return ended()
		}
		if errors.Is(err, jetstream.ErrJetStreamNotEnabledForAccount) {
			return fmt.Errorf("not consuming %s: %w", sub.Topic, err)
		}
		if attempt == 1 || attempt%20 == 0 {
			log.Warn().Err(err).Int("attempt", attempt).Msg("cannot set up the consumer group yet; retrying")
		}
		if backoff.Sleep(ctx, b.opts.Retry.Delay(attempt)) != nil {
			return ended()
		}
	}
	parts := make([]string, t.partitions)
	for i := range parts {
		parts[i] = strconv.Itoa(i)
	}
	runner := stream.Runner{Group: sub.Group, Retry: b.opts.HandlerRetry, Publish: b, Log: log}
	err := group.Run(ctx, group.Config{
		Leases:     lease.Manager{Store: b.kv},
		Prefix:     kv.Key("stream", sub.Topic, sub.Group),
		Member:     member,
		TTL:        b.opts.LeaseTTL,
		Interval:   b.opts.LeaseInterval,
		Log:        log,
		Partitions: func(context.Context) ([]string, error) { return parts, nil },
		Work: func(ctx context.Context, part string) {
			p, _ := strconv.Atoi(part)
			w := &worker{b: b, t: t, sub: sub, p: p, runner: runner, h: h,
				log: log.With().Int("partition", p).Logger()}
			w.run(ctx)
		},
	})
	if err != nil {
		return fmt.Errorf("not consuming %s: %w", sub.Topic, err)
	}
	return ended()
}

func (b *Backend) prepare(ctx context.Context, sub stream.Subscription, t **topicState) error {
	var err error
	if *t == nil {
		if *t, err = b.topic(ctx, sub.Topic); err != nil {
			return err
		}
	}
	for p := 0; p < (*t).partitions; p++ {
		if _, err := b.consumer(ctx, *t, sub, p); err != nil {
			return err
		}
	}
	return nil
}

// consumer returns the durable consumer of a group's partition, creating it when it
// does not exist. An existing consumer is used as it is: its start position must not
// change, and clients with other options must not undo each other's settings.
// Concurrent creators all succeed.
func (b *Backend) consumer(ctx context.Context, t *topicState, sub stream.Subscription, p int) (jetstream.Consumer, error) {
	name := ConsumerName(sub.Group, p)
	deliver := jetstream.DeliverAllPolicy
	if sub.Start == stream.StartLatest {
		deliver = jetstream.DeliverNewPolicy
	}
	cfg := jetstream.ConsumerConfig{
		Durable:           name,
		Description:       fmt.Sprintf("Heartline group %s, partition %d", sub.Group, p),
		DeliverPolicy:     deliver,
		AckPolicy:         jetstream.AckAllPolicy,
		AckWait:           b.opts.AckWait,
		MaxDeliver:        -1,
		MaxAckPending:     4 * b.opts.FetchBatch,
		InactiveThreshold: b.opts.MaxAge,
	}
	for attempt := 0; ; attempt++ {
		c, err := b.js.Consumer(ctx, t.streams[p], name)
		if err == nil {
			return c, nil
		}
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			b.forget(t.topic)
			return nil, err
		}
		if !errors.Is(err, jetstream.ErrConsumerNotFound) {
			return nil, err
		}
		c, err = b.js.CreateConsumer(ctx, t.streams[p], cfg)
		if err == nil {
			return c, nil
		}
		if attempt < 3 && (errors.Is(err, jetstream.ErrConsumerExists) || errors.Is(err, jetstream.ErrConsumerNameAlreadyInUse)) {
			continue
		}
		return nil, err
	}
}

// worker pulls one partition while this member holds its lease.
type worker struct {
	b      *Backend
	t      *topicState
	sub    stream.Subscription
	p      int
	runner stream.Runner
	h      stream.Handler
	log    zerolog.Logger
}

func (w *worker) run(ctx context.Context) {
	w.log.Debug().Msg("partition consumer starting")
	for attempt := 1; ctx.Err() == nil; attempt++ {
		start := time.Now()
		err := w.pull(ctx)
		if ctx.Err() != nil {
			return
		}
		if time.Since(start) > time.Minute {
			attempt = 1
		}
		if errors.Is(err, errDeliveryGap) {
			w.log.Info().Err(err).Msg("deliveries lost in transit; restarting the partition from its ack floor")
			attempt = 0
			continue
		}
		w.log.Warn().Err(err).Int("attempt", attempt).Msg("partition consumer failed; restarting it")
		if backoff.Sleep(ctx, w.b.opts.Retry.Delay(attempt)) != nil {
			return
		}
	}
}

// errDeliveryGap: deliveries were lost in transit; the partition restarts from its ack
// floor.
var errDeliveryGap = errors.New("gap in the consumer's delivery sequence")

// ackEvery bounds how many handled messages share one acknowledgement, and
// maxAckDelay how long a handled message waits for its acknowledgement (a crash
// redelivers what was handled but not acknowledged yet).
const (
	ackEvery    = 64
	maxAckDelay = 20 * time.Millisecond
)

// pull consumes the partition until ctx ends (nil) or the subscription fails.
//
// Messages are handled one at a time in stream order. Acknowledgements use JetStream's
// ack-all policy: acknowledging a message acknowledges every earlier one of the
// partition, which is exact here because they were all handled before it. So one ack
// covers up to ackEvery messages, or what was handled within maxAckDelay.
func (w *worker) pull(ctx context.Context) error {
	b := w.b
	c, err := b.consumer(ctx, w.t, w.sub, w.p)
	if err != nil {
		return err
	}
	info := c.CachedInfo()
	ackWait := info.Config.AckWait
	if ackWait <= 0 {
		ackWait = 30 * time.Second
	}
	// next is the consumer sequence of the next delivery. Deliveries are numbered
	// consecutively; a gap means deliveries were lost in transit (sent just before a
	// server restart or a connection loss), and handling what follows would break the
	// order, and with ack-all acknowledge the lost ones.
	next := info.Delivered.Consumer + 1
	if info.NumAckPending > 0 {
		if next, err = w.resetOutstanding(ctx, info); err != nil {
			return err
		}
	}
	it, err := c.Messages(jetstream.PullMaxMessages(b.opts.FetchBatch))
	if err != nil {
		return err
	}
	// A reader hands messages over through a channel, whose length tells whether more
	// are waiting (the iterator does not).
	msgs := make(chan jetstream.Msg, b.opts.FetchBatch)
	readErr := make(chan error, 1)
	go func() {
		defer close(msgs)
		for {
			m, err := it.Next()
			if err != nil {
				readErr <- err
				return
			}
			msgs <- m
		}
	}()
	defer func() {
		it.Stop()
		for range msgs {
		}
	}()

	// Keep the message in hand alive while its handler runs or retries.
	var inHand atomic.Pointer[jetstream.Msg]
	done := make(chan struct{})
	defer close(done)
	go func() {
		tick := time.NewTicker(ackWait / 3)
		defer tick.Stop()
		for {
			select {
			case <-done:
				return
			case <-tick.C:
				if m := inHand.Load(); m != nil {
					_ = (*m).InProgress()
				}
			}
		}
	}()

	var handled jetstream.Msg // handled, not acknowledged yet
	unacked := 0
	flush := func() {
		if handled == nil {
			return
		}
		if err := handled.Ack(); err != nil {
			w.log.Warn().Err(err).Msg("ack not sent; the messages since the last ack will be delivered again")
		}
		handled, unacked = nil, 0
	}
	// When the partition has caught up, the acknowledgement waits up to ackDelay for
	// more messages to cover: one ack per message at a steady trickle costs the server
	// as much as the messages themselves.
	ackDelay := min(maxAckDelay, ackWait/10)
	ackTimer := time.NewTimer(ackDelay)
	ackTimer.Stop()
	defer ackTimer.Stop()
	armed := false
	for {
		var m jetstream.Msg
		var ok bool
		select {
		case m, ok = <-msgs:
		default:
			if handled != nil && !armed {
				ackTimer.Reset(ackDelay)
				armed = true
			}
			select {
			case m, ok = <-msgs:
			case <-ackTimer.C:
				armed = false
				flush()
				continue
			case <-ctx.Done():
				flush()
				w.giveBack(it, msgs, nil)
				return nil
			}
		}
		if !ok {
			flush()
			err := <-readErr
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("pulling partition %d: %w", w.p, err)
		}
		if ctx.Err() != nil {
			flush()
			w.giveBack(it, msgs, m)
			return nil
		}
		md, err := m.Metadata()
		if err != nil {
			flush()
			w.log.Error().Err(err).Str("subject", m.Subject()).Msg("message without JetStream metadata; terminating it")
			_ = m.Term()
			continue
		}
		if md.Sequence.Consumer != next {
			flush()
			return fmt.Errorf("%w: expected delivery %d, got %d", errDeliveryGap, next, md.Sequence.Consumer)
		}
		next++
		key, id := decodeHeaders(m.Headers())
		d := stream.Delivery{
			Message:   stream.Message{Key: key, ID: id, Data: m.Data()},
			Topic:     w.sub.Topic,
			Partition: strconv.Itoa(w.p),
			Position:  strconv.FormatUint(md.Sequence.Stream, 10),
			Attempt:   int(md.NumDelivered),
			Published: md.Timestamp,
		}
		inHand.Store(&m)
		r := w.runner
		r.Touch = func() { _ = m.InProgress() }
		handledOK := r.Handle(ctx, d, w.h)
		inHand.Store(nil)
		if !handledOK {
			flush()
			w.giveBack(it, msgs, m)
			return nil
		}
		handled = m
		if unacked++; unacked >= ackEvery {
			flush()
		}
	}
}

// resetOutstanding makes messages that a previous owner (or an earlier pull of this
// one) left unacknowledged deliverable again, in order, before anything newer. It
// returns the consumer sequence of the next delivery.
func (w *worker) resetOutstanding(ctx context.Context, info *jetstream.ConsumerInfo) (uint64, error) {
	r, err := w.b.js.ResetConsumer(ctx, w.t.streams[w.p], info.Name)
	if err == nil && r.ConsumerInfo != nil {
		w.log.Info().Int("outstanding", info.NumAckPending).Uint64("ack_floor", info.AckFloor.Stream).
			Msg("partition had unacknowledged deliveries; redelivering from the ack floor")
		return r.Delivered.Consumer + 1, nil
	}
	if err == nil {
		err = errors.New("consumer reset answered without consumer info")
	}
	if ctx.Err() != nil {
		return 0, err
	}
	// Servers before 2.14 have no consumer reset: wait until the outstanding messages'
	// ack wait ran out (they are then redelivered before newer ones).
	wait := info.Config.AckWait + 100*time.Millisecond
	if info.Delivered.Last != nil {
		wait = time.Until(info.Delivered.Last.Add(info.Config.AckWait)) + 100*time.Millisecond
	}
	w.log.Warn().Err(err).Dur("wait", wait).Msg("consumer reset failed; waiting for outstanding messages to expire")
	return info.Delivered.Consumer + 1, backoff.Sleep(ctx, wait)
}

// giveBack negatively acknowledges the message in hand and everything prefetched, in
// order, so that they are redelivered at once (the next owner resets the consumer to
// its ack floor in any case).
func (w *worker) giveBack(it jetstream.MessagesContext, msgs <-chan jetstream.Msg, inHand jetstream.Msg) {
	it.Drain()
	var back []jetstream.Msg
	if inHand != nil {
		back = append(back, inHand)
	}
	timeout := time.NewTimer(2 * time.Second)
	defer timeout.Stop()
collect:
	for {
		select {
		case m, ok := <-msgs:
			if !ok {
				break collect
			}
			back = append(back, m)
		case <-timeout.C:
			it.Stop()
			break collect
		}
	}
	for _, m := range back {
		_ = m.Nak()
	}
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
