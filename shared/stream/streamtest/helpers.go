package streamtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/heartline/heartline/shared/stream"
)

// Helpers shared by the conformance suite and each backend's own tests.

// Consume runs c.Consume in the background until the test ends; the returned stop
// cancels it and waits for it to return (reporting an error other than cancellation).
func Consume(t testing.TB, ctx context.Context, c stream.Consumer, sub stream.Subscription, h stream.Handler) (stop func()) {
	t.Helper()
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- c.Consume(cctx, sub, h) }()
	var once sync.Once
	stop = func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				if err != nil && !errors.Is(err, context.Canceled) {
					t.Errorf("Consume returned %v", err)
				}
			case <-time.After(30 * time.Second):
				t.Errorf("Consume did not return within 30s of cancellation")
			}
		})
	}
	t.Cleanup(stop)
	return stop
}

// WaitFor polls cond until it holds, failing the test after timeout with what().
func WaitFor(t testing.TB, timeout time.Duration, what func() string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s: %s", timeout, what())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Msg is message seq of key: id "<key>-<seq>", data "<key>|<seq>".
func Msg(key string, seq int) stream.Message {
	return stream.Message{Key: key, ID: fmt.Sprintf("%s-%d", key, seq), Data: []byte(fmt.Sprintf("%s|%d", key, seq))}
}

// Collector is a handler that records every delivery.
type Collector struct {
	mu  sync.Mutex
	got []stream.Delivery
	ids map[string]bool
}

// Handle records d and acknowledges it.
func (c *Collector) Handle(_ context.Context, d stream.Delivery) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ids == nil {
		c.ids = map[string]bool{}
	}
	c.got = append(c.got, d)
	c.ids[d.ID] = true
	return nil
}

// Distinct counts the distinct message ids delivered.
func (c *Collector) Distinct() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.ids)
}

// Snapshot returns every delivery so far, in delivery order.
func (c *Collector) Snapshot() []stream.Delivery {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]stream.Delivery(nil), c.got...)
}
