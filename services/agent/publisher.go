package agent

import (
	"context"
	"errors"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/stream"
)

// DefaultPublishRetry is the backoff between attempts to publish while the stream is
// unavailable.
var DefaultPublishRetry = backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second}

// publishTimeout bounds one publish attempt, so a hung stream is retried, not waited on.
const publishTimeout = 5 * time.Second

// outbox is the bounded buffer between the probe loop and the stream. Add never
// blocks: when the buffer is full the oldest heartbeat is dropped (and counted). A
// single goroutine (Run) publishes in order, in batches, retrying with backoff, so a
// slow or absent stream never delays a probe or a freeze.
type outbox struct {
	pub   stream.Publisher
	size  int
	batch int
	retry backoff.Policy
	// timeout bounds one publish attempt (publishTimeout).
	timeout time.Duration
	log     zerolog.Logger
	m       *metrics

	mu       sync.Mutex
	buf      []stream.Message // waiting, oldest first
	inflight int              // messages taken by Run and not yet published
	wake     chan struct{}
	failing  bool      // the last attempt failed
	failedAt time.Time // first failure of the current outage
	dropped  int       // dropped during the current outage
	lastOK   time.Time
}

func newOutbox(pub stream.Publisher, size int, retry backoff.Policy, log zerolog.Logger, m *metrics) *outbox {
	if retry.Initial <= 0 {
		retry = DefaultPublishRetry
	}
	return &outbox{pub: pub, size: size, batch: max(1, min(100, size/2)), retry: retry, timeout: publishTimeout, log: log, m: m,
		wake: make(chan struct{}, 1)}
}

// Add queues one message without blocking. It reports whether an older message had to
// be dropped to make room.
func (o *outbox) Add(msg stream.Message) (droppedOne bool) {
	o.mu.Lock()
	// The in-flight batch counts against the bound; room for it is guaranteed because a
	// batch is at most half the buffer.
	if len(o.buf)+o.inflight >= o.size && len(o.buf) > 0 {
		o.buf[0] = stream.Message{}
		o.buf = o.buf[1:]
		o.dropped++
		droppedOne = true
	}
	o.buf = append(o.buf, msg)
	n := len(o.buf) + o.inflight
	o.mu.Unlock()
	if droppedOne {
		o.m.dropped.Inc()
	}
	o.m.buffered.Set(float64(n))
	select {
	case o.wake <- struct{}{}:
	default:
	}
	return droppedOne
}

// Len is the number of heartbeats not yet published (waiting and in flight).
func (o *outbox) Len() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.buf) + o.inflight
}

// Healthy reports whether the last publish attempt succeeded, and when one last did.
func (o *outbox) Healthy() (bool, time.Time) {
	o.mu.Lock()
	defer o.mu.Unlock()
	return !o.failing, o.lastOK
}

// take moves up to one batch from the buffer to in flight.
func (o *outbox) take() []stream.Message {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := min(len(o.buf), o.batch)
	if n == 0 {
		return nil
	}
	b := make([]stream.Message, n)
	copy(b, o.buf[:n])
	clear(o.buf[:n])
	o.buf = o.buf[n:]
	o.inflight = n
	return b
}

// Run publishes until ctx is done. Then it makes one last attempt at what is left,
// bounded by drain (the shutdown timeout).
func (o *outbox) Run(ctx context.Context, drain time.Duration) {
	for {
		select {
		case <-ctx.Done():
			o.drain(drain)
			return
		case <-o.wake:
		}
		for ctx.Err() == nil {
			b := o.take()
			if b == nil {
				break
			}
			o.publish(ctx, b)
		}
	}
}

// publish publishes one batch, retrying with backoff until it is accepted or ctx ends.
// A batch is never reordered with the messages behind it: they wait.
func (o *outbox) publish(ctx context.Context, b []stream.Message) {
	for attempt := 1; ; attempt++ {
		err := o.attempt(ctx, b)
		if err == nil {
			return
		}
		if errors.Is(err, stream.ErrTooLarge) || errors.Is(err, stream.ErrInvalid) {
			// Retrying cannot help; publish the batch one by one so that only the bad
			// message is lost, never the whole batch.
			o.publishOneByOne(ctx, b)
			return
		}
		if ctx.Err() != nil {
			o.putBack(b)
			return
		}
		if backoff.Sleep(ctx, o.retry.Delay(attempt)) != nil {
			o.putBack(b)
			return
		}
	}
}

func (o *outbox) publishOneByOne(ctx context.Context, b []stream.Message) {
	for i, m := range b {
		err := o.attempt(ctx, []stream.Message{m})
		if err == nil {
			continue
		}
		if errors.Is(err, stream.ErrTooLarge) || errors.Is(err, stream.ErrInvalid) {
			o.log.Error().Err(err).Str("id", m.ID).Msg("heartbeat refused by the stream as invalid; dropped")
			o.m.dropped.Inc()
			o.mu.Lock()
			o.inflight--
			o.mu.Unlock()
			continue
		}
		o.putBack(b[i:])
		return
	}
}

// attempt publishes b once and does the bookkeeping of success and failure.
func (o *outbox) attempt(ctx context.Context, b []stream.Message) error {
	actx, cancel := context.WithTimeout(ctx, o.timeout)
	err := o.pub.PublishBatch(actx, events.TopicHeartbeats, b)
	cancel()
	now := time.Now()
	o.mu.Lock()
	if err == nil {
		o.inflight -= len(b)
		wasFailing, since, dropped := o.failing, o.failedAt, o.dropped
		o.failing, o.dropped, o.lastOK = false, 0, now
		left := len(o.buf) + o.inflight
		o.mu.Unlock()
		o.m.published.Add(float64(len(b)))
		o.m.buffered.Set(float64(left))
		if wasFailing {
			o.log.Info().Dur("outage", now.Sub(since)).Int("dropped", dropped).Int("buffered", left).
				Msg("stream is back: publishing buffered heartbeats in order")
		}
		return nil
	}
	first := !o.failing
	if first {
		o.failing, o.failedAt = true, now
	}
	o.mu.Unlock()
	if ctx.Err() != nil && errors.Is(err, ctx.Err()) {
		return err // stopping, not a stream error
	}
	o.m.streamErrors.Inc()
	if first {
		o.log.Warn().Err(err).Int("buffered", o.Len()).Int("buffer", o.size).
			Msg("cannot publish heartbeats; probing goes on, heartbeats are buffered (the oldest are dropped when the buffer is full)")
	} else {
		o.log.Debug().Err(err).Msg("publish retry failed")
	}
	return err
}

// putBack returns an unpublished batch to the front of the buffer (shutdown).
func (o *outbox) putBack(b []stream.Message) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.inflight -= len(b)
	o.buf = append(append([]stream.Message(nil), b...), o.buf...)
}

// drain makes one bounded attempt to publish what is left when stopping.
func (o *outbox) drain(limit time.Duration) {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	for {
		b := o.take()
		if b == nil {
			return
		}
		if err := o.attempt(ctx, b); err != nil {
			o.putBack(b)
			o.log.Warn().Err(err).Int("lost", o.Len()).Msg("stopping: buffered heartbeats not published")
			return
		}
	}
}
