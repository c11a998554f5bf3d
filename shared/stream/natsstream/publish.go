package natsstream

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/internal/envelope"
)

// Publishing goes through one lane per partition (per subject, for the backend's
// lifetime). A lane has at most one JetStream publish in flight: a pack of the
// partition's queued messages, up to PackBytes and PackMessages. While it is in
// flight, further messages for the partition queue up, and go out together as the next
// pack once it was acknowledged (group commit); an idle lane sends a message at once,
// alone. A failed pack is retried, the same bytes under the same Nats-Msg-Id, before
// anything behind it, so a key's messages never overtake each other, across retries
// and reconnects, and a pack stored by an attempt whose acknowledgement was lost is
// dropped as a duplicate.

// lane serialises the publishes of one partition.
type lane struct {
	topic   string
	subject string

	mu    sync.Mutex
	queue []*entry
	busy  bool // a drain goroutine is running
}

// entry is one queued message.
type entry struct {
	msg  stream.Message
	call *call
	solo bool // goes alone: a pack holding it was refused as too large
}

// call is one Publish or PublishBatch waiting for its messages.
type call struct {
	// ctx is cancelled when the call returned: its messages not sent yet are dropped
	// from the queue, and a failing pack is no longer retried for it.
	ctx  context.Context
	left atomic.Int64
	once sync.Once
	err  error
	done chan struct{}
	last atomic.Pointer[error] // the last transient error, for the caller's report
}

func (c *call) fail(err error) { c.once.Do(func() { c.err = err; close(c.done) }) }

func (c *call) ok(n int) {
	if c.left.Add(-int64(n)) == 0 {
		c.once.Do(func() { close(c.done) })
	}
}

// laneOf returns the lane of a subject, creating it on first use.
func (b *Backend) laneOf(topic, subject string) *lane {
	b.mu.Lock()
	defer b.mu.Unlock()
	l := b.lanes[subject]
	if l == nil {
		l = &lane{topic: topic, subject: subject}
		b.lanes[subject] = l
	}
	return l
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

// Publish publishes one message, retrying transient errors until ctx ends. Concurrent
// calls for one partition share JetStream messages (see the package comment).
func (b *Backend) Publish(ctx context.Context, topic string, m stream.Message) error {
	if err := b.check(topic, m); err != nil {
		return err
	}
	return b.publish(ctx, topic, []stream.Message{m})
}

// PublishBatch publishes msgs and returns nil only when every message was stored. A
// batch with an invalid message publishes nothing. Its messages go through their
// partitions' lanes like those of Publish, all partitions at once; a message repeating
// an id earlier in the batch is left out (JetStream would drop it as a duplicate).
func (b *Backend) PublishBatch(ctx context.Context, topic string, msgs []stream.Message) error {
	for _, m := range msgs {
		if err := b.check(topic, m); err != nil {
			return err
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	return b.publish(ctx, topic, uniqueIDs(msgs))
}

// uniqueIDs returns msgs without the messages whose id repeats an earlier one.
func uniqueIDs(msgs []stream.Message) []stream.Message {
	if len(msgs) < 2 {
		return msgs
	}
	seen := make(map[string]struct{}, len(msgs))
	var out []stream.Message
	for i, m := range msgs {
		if m.ID != "" {
			if _, dup := seen[m.ID]; dup {
				if out == nil {
					out = append(make([]stream.Message, 0, len(msgs)), msgs[:i]...)
				}
				continue
			}
			seen[m.ID] = struct{}{}
		}
		if out != nil {
			out = append(out, m)
		}
	}
	if out == nil {
		return msgs
	}
	return out
}

func (b *Backend) publish(ctx context.Context, topic string, msgs []stream.Message) error {
	if b.isClosed() {
		return stream.ErrClosed
	}
	t, err := b.resolve(ctx, topic)
	if err != nil {
		return err
	}
	cctx, cancel := context.WithCancel(ctx)
	defer cancel()
	c := &call{ctx: cctx, done: make(chan struct{})}
	c.left.Store(int64(len(msgs)))
	entries := make([]entry, len(msgs))
	if len(msgs) == 1 {
		entries[0] = entry{msg: msgs[0], call: c}
		b.enqueue(t.lanes[Partition(msgs[0].Key, t.partitions)], []*entry{&entries[0]})
	} else {
		per := make([][]*entry, t.partitions)
		for i, m := range msgs {
			entries[i] = entry{msg: m, call: c}
			p := Partition(m.Key, t.partitions)
			per[p] = append(per[p], &entries[i])
		}
		for p, es := range per {
			if len(es) > 0 {
				b.enqueue(t.lanes[p], es)
			}
		}
	}
	select {
	case <-c.done:
		return c.err
	case <-ctx.Done():
	}
	select {
	case <-c.done:
		return c.err
	default:
	}
	if last := c.last.Load(); last != nil {
		return fmt.Errorf("publishing to %s: %w (last error: %w)", topic, ctx.Err(), *last)
	}
	return fmt.Errorf("publishing to %s: %w", topic, ctx.Err())
}

// resolve returns the topic's streams, retrying until ctx ends.
func (b *Backend) resolve(ctx context.Context, topic string) (*topicState, error) {
	for attempt := 1; ; attempt++ {
		actx, cancel := context.WithTimeout(ctx, b.opts.PublishTimeout)
		t, err := b.topic(actx, topic)
		cancel()
		if err == nil {
			return t, nil
		}
		if perr := b.permanent(err); perr != nil {
			return nil, fmt.Errorf("publishing to %s: %w", topic, perr)
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("publishing to %s: %w (last error: %w)", topic, ctx.Err(), err)
		}
		if attempt == 1 || attempt%20 == 0 {
			b.log.Warn().Err(err).Str("topic", topic).Int("attempt", attempt).Msg("topic's streams not ready; retrying")
		}
		if backoff.Sleep(ctx, b.opts.Retry.Delay(attempt)) != nil {
			return nil, fmt.Errorf("publishing to %s: %w (last error: %w)", topic, ctx.Err(), err)
		}
	}
}

// enqueue appends entries to the lane, and starts its drain unless one runs.
func (b *Backend) enqueue(l *lane, es []*entry) {
	l.mu.Lock()
	l.queue = append(l.queue, es...)
	start := !l.busy
	l.busy = true
	l.mu.Unlock()
	if start {
		go b.drain(l)
	}
}

// drain sends the lane's packs one after the other until the queue is empty.
func (b *Backend) drain(l *lane) {
	maxBytes := b.opts.PackBytes
	for {
		if mp := int(b.nc.MaxPayload()); mp > 0 && mp-packHeaderRoom < maxBytes {
			maxBytes = mp - packHeaderRoom
		}
		l.mu.Lock()
		pack := l.take(maxBytes, b.opts.PackMessages)
		if len(pack) == 0 {
			l.busy = false
			l.mu.Unlock()
			return
		}
		l.mu.Unlock()
		b.send(l, pack)
		// Let the callers just completed run first: a busy caller publishes its next
		// message at once, and it should join the next pack rather than go alone.
		runtime.Gosched()
	}
}

// take removes the next pack from the queue: the first live entry, and the following
// ones while the envelope stays within maxBytes and maxMsgs. Entries of calls that
// returned are dropped unsent.
func (l *lane) take(maxBytes, maxMsgs int) []*entry {
	var out []*entry
	size, i := 0, 0
	for ; i < len(l.queue); i++ {
		e := l.queue[i]
		if e.call.ctx.Err() != nil {
			continue
		}
		s := envelope.MsgSize(envelope.Keyed, e.msg)
		if len(out) > 0 && (e.solo || out[0].solo || len(out) == maxMsgs || envelope.Overhead(len(out)+1)+size+s > maxBytes) {
			break
		}
		out = append(out, e)
		size += s
	}
	clear(l.queue[:i])
	l.queue = l.queue[i:]
	if len(l.queue) == 0 {
		l.queue = nil
	}
	return out
}

// send publishes a pack until it is stored, is refused for good, or every call with a
// message in it returned.
func (b *Backend) send(l *lane, pack []*entry) {
	msgs := make([]stream.Message, len(pack))
	type share struct {
		c *call
		n int
	}
	var shares []share
	for i, e := range pack {
		msgs[i] = e.msg
		if n := len(shares); n > 0 && shares[n-1].c == e.call {
			shares[n-1].n++
		} else {
			shares = append(shares, share{e.call, 1})
		}
	}
	nm, id := packMsg(l.subject, msgs)
	// pctx ends when every call waiting for this pack returned.
	pctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var live atomic.Int64
	live.Store(int64(len(shares)))
	for _, s := range shares {
		stop := context.AfterFunc(s.c.ctx, func() {
			if live.Add(-1) == 0 {
				cancel()
			}
		})
		defer stop()
	}
	for attempt := 1; ; attempt++ {
		err := b.publishPack(pctx, l.topic, nm, id)
		if err == nil {
			for _, s := range shares {
				s.c.ok(s.n)
			}
			return
		}
		perr := b.permanent(err)
		if perr != nil && errors.Is(perr, stream.ErrTooLarge) && len(pack) > 1 {
			// The server (or the stream's own limit) refused the pack: send its messages
			// one by one, so that only a message too large by itself is refused.
			b.log.Warn().Err(err).Str("topic", l.topic).Str("subject", l.subject).Int("messages", len(pack)).
				Msg("pack refused as too large; sending its messages one by one")
			l.mu.Lock()
			for _, e := range pack {
				e.solo = true
			}
			l.queue = append(pack, l.queue...)
			l.mu.Unlock()
			return
		}
		if perr != nil {
			err := fmt.Errorf("publishing to %s: %w", l.topic, perr)
			for _, s := range shares {
				s.c.fail(err)
			}
			return
		}
		if pctx.Err() != nil {
			return // every caller gave up and reported its ctx error
		}
		for _, s := range shares {
			s.c.last.Store(&err)
		}
		if errors.Is(err, jetstream.ErrNoStreamResponse) || errors.Is(err, nats.ErrNoResponders) {
			b.forget(l.topic)
		}
		if attempt == 1 || attempt%20 == 0 {
			b.log.Warn().Err(err).Str("topic", l.topic).Str("subject", l.subject).Int("messages", len(pack)).
				Int("attempt", attempt).Msg("publish failed; retrying")
		}
		if backoff.Sleep(pctx, b.opts.Retry.Delay(attempt)) != nil {
			return
		}
	}
}

// publishPack makes one attempt at storing a pack, bounded by PublishTimeout.
func (b *Backend) publishPack(ctx context.Context, topic string, nm *nats.Msg, id string) error {
	actx, cancel := context.WithTimeout(ctx, b.opts.PublishTimeout)
	defer cancel()
	if _, err := b.topic(actx, topic); err != nil {
		return err
	}
	var opts []jetstream.PublishOpt
	if id != "" {
		opts = []jetstream.PublishOpt{jetstream.WithMsgID(id)}
	}
	_, err := b.js.PublishMsg(actx, nm, opts...)
	return err
}
