package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/memstream"
)

// flakyPublisher fails every publish while down is set, and records what the stream
// accepted (it forwards to a memstream client, the unit-test stream).
type flakyPublisher struct {
	next stream.Publisher
	down atomic.Bool
	hang atomic.Bool // while set (and down), a publish blocks until its context ends
	mu   sync.Mutex
	got  []stream.Message
	errs int
}

var errStreamDown = errors.New("stream unavailable (test)")

func (f *flakyPublisher) Publish(ctx context.Context, topic string, m stream.Message) error {
	return f.PublishBatch(ctx, topic, []stream.Message{m})
}

func (f *flakyPublisher) PublishBatch(ctx context.Context, topic string, msgs []stream.Message) error {
	if f.down.Load() {
		f.mu.Lock()
		f.errs++
		f.mu.Unlock()
		if f.hang.Load() {
			<-ctx.Done()
			return ctx.Err()
		}
		return errStreamDown
	}
	if err := f.next.PublishBatch(ctx, topic, msgs); err != nil {
		return err
	}
	f.mu.Lock()
	f.got = append(f.got, msgs...)
	f.mu.Unlock()
	return nil
}

func (f *flakyPublisher) published() []stream.Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]stream.Message(nil), f.got...)
}

func waitUntil(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestOutboxOutageDropsOldestAndPublishesInOrder(t *testing.T) {
	for _, hang := range []bool{false, true} {
		t.Run(fmt.Sprintf("hang=%v", hang), func(t *testing.T) {
			pub := &flakyPublisher{next: memstream.New()}
			reg := prometheus.NewRegistry()
			m := newMetrics(reg)
			o := newOutbox(pub, 20, backoff.Policy{Initial: 5 * time.Millisecond, Max: 20 * time.Millisecond}, zerolog.Nop(), m)
			o.timeout = 50 * time.Millisecond
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			go func() { defer close(done); o.Run(ctx, time.Second) }()

			msg := func(i int) stream.Message {
				return stream.Message{Key: "shard-1", ID: fmt.Sprint("hb-", i), Data: []byte(fmt.Sprint(i))}
			}
			for i := 1; i <= 5; i++ {
				o.Add(msg(i))
			}
			waitUntil(t, 10*time.Second, "first heartbeats published", func() bool { return len(pub.published()) == 5 })

			pub.hang.Store(hang)
			pub.down.Store(true)
			// 100 heartbeats during the outage into a buffer of 20: Add never blocks.
			for i := 6; i <= 105; i++ {
				o.Add(msg(i))
			}
			waitUntil(t, 10*time.Second, "publish attempts failing", func() bool { pub.mu.Lock(); defer pub.mu.Unlock(); return pub.errs >= 2 })
			dropped := testutil.ToFloat64(m.dropped)
			if dropped < 80 {
				t.Fatalf("dropped %v heartbeats, want at least 80 of 100 with a buffer of 20", dropped)
			}
			if n := o.Len(); n > 20 {
				t.Fatalf("buffer holds %d, bound is 20", n)
			}
			pub.down.Store(false)
			waitUntil(t, 10*time.Second, "buffer drained", func() bool { return o.Len() == 0 })

			got := pub.published()
			if len(got) != 105-int(dropped) {
				t.Fatalf("published %d, want %d (105 minus %v dropped)", len(got), 105-int(dropped), dropped)
			}
			// In order, the newest ones kept. Gaps: before the batch that was in flight
			// (if the buffer overflowed before it was taken) and after it; never more.
			prev, gaps, missing := 0, 0, 0
			for i, g := range got {
				var n int
				fmt.Sscan(string(g.Data), &n)
				if n <= prev {
					t.Fatalf("out of order at %d: %d after %d", i, n, prev)
				}
				if n != prev+1 {
					gaps++
					missing += n - prev - 1
				}
				prev = n
			}
			if gaps > 2 || missing != int(dropped) {
				t.Fatalf("%d gaps, %d missing, %v dropped", gaps, missing, dropped)
			}
			if prev != 105 {
				t.Fatalf("last published %d, want 105", prev)
			}
			if e := testutil.ToFloat64(m.streamErrors); e < 1 {
				t.Fatalf("stream errors metric %v", e)
			}
			if p := testutil.ToFloat64(m.published); int(p) != len(got) {
				t.Fatalf("published metric %v, stream has %d", p, len(got))
			}
			cancel()
			<-done
		})
	}
}

func TestOutboxDrainsOnShutdown(t *testing.T) {
	pub := &flakyPublisher{next: memstream.New()}
	m := newMetrics(prometheus.NewRegistry())
	o := newOutbox(pub, 100, backoff.Policy{}, zerolog.Nop(), m)
	for i := 1; i <= 10; i++ {
		o.Add(stream.Message{Key: "s", ID: fmt.Sprint(i), Data: []byte("x")})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	o.Run(ctx, time.Second)
	if n := len(pub.published()); n != 10 {
		t.Fatalf("published %d of 10 on shutdown", n)
	}
}
