package backoff

import (
	"context"
	"errors"
	"testing"
	"time"
)

func TestDelayGrowsWithJitterAndCap(t *testing.T) {
	p := Policy{Initial: 100 * time.Millisecond, Max: time.Second}
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond, 10: time.Second} {
		for i := 0; i < 100; i++ {
			d := p.Delay(n)
			if d < want/2 || d > want {
				t.Fatalf("Delay(%d) = %s, want within [%s, %s]", n, d, want/2, want)
			}
		}
	}
}

func TestRetryStopsOnPermanentErrorAndAttempts(t *testing.T) {
	p := Policy{Initial: time.Millisecond, Max: 2 * time.Millisecond}
	perm := errors.New("permanent")
	calls := 0
	err := p.Retry(context.Background(), 0, func(err error) bool { return !errors.Is(err, perm) }, func(context.Context) error {
		calls++
		if calls < 3 {
			return errors.New("transient")
		}
		return perm
	})
	if !errors.Is(err, perm) || calls != 3 {
		t.Fatalf("got %v after %d calls", err, calls)
	}
	calls = 0
	err = p.Retry(context.Background(), 4, nil, func(context.Context) error { calls++; return errors.New("x") })
	if err == nil || calls != 4 {
		t.Fatalf("want 4 calls, got %d (%v)", calls, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	calls = 0
	_ = (Policy{Initial: time.Hour}).Retry(ctx, 0, nil, func(context.Context) error { calls++; return errors.New("x") })
	if calls != 1 {
		t.Fatalf("a cancelled context must stop the loop, got %d calls", calls)
	}
}
