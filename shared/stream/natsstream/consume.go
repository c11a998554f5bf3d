package natsstream

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/lease"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/group"
)

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
	if sub.Ephemeral {
		cfg.InactiveThreshold = b.opts.EphemeralInactive
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
	it, err := c.Messages(jetstream.PullMaxMessagesWithBytesLimit(b.opts.FetchBatch, b.opts.FetchBytes))
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
		inHand.Store(&m)
		n, handledOK := w.handle(ctx, m, md)
		inHand.Store(nil)
		if !handledOK {
			flush()
			w.giveBack(it, msgs, m)
			return nil
		}
		handled = m
		if unacked += n; unacked >= ackEvery {
			flush()
		}
	}
}

// handle hands the messages of one JetStream message (one, or a pack's) to the handler
// in order. It returns how many were handled, and whether all were (the JetStream
// message may then be acknowledged).
func (w *worker) handle(ctx context.Context, m jetstream.Msg, md *jetstream.MsgMetadata) (int, bool) {
	seq := strconv.FormatUint(md.Sequence.Stream, 10)
	msgs, err := Unpack(m.Headers(), m.Data())
	if err != nil {
		// Corrupt: deliver the data as it is; the handler decides (a decoding error is
		// permanent and dead-letters it). Nothing is dropped.
		w.log.Error().Err(err).Str("position", seq).Msg("pack does not decode; delivering its data as one message")
		msgs = []stream.Message{{Data: m.Data()}}
	}
	r := w.runner
	r.Touch = func() { _ = m.InProgress() }
	for i, msg := range msgs {
		if msg.Key == "" {
			// Published by another client without Heartline headers. A key is needed to
			// dead-letter it, and an empty one would block the partition.
			msg.Key = m.Subject()
		}
		pos := seq
		if len(msgs) > 1 {
			pos = seq + "/" + strconv.Itoa(i)
		}
		d := stream.Delivery{
			Message:   msg,
			Topic:     w.sub.Topic,
			Partition: strconv.Itoa(w.p),
			Position:  pos,
			Attempt:   int(md.NumDelivered),
			Published: md.Timestamp,
		}
		if !r.Handle(ctx, d, w.h) {
			return i, false
		}
	}
	return len(msgs), true
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
