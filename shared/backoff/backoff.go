// Package backoff computes exponential backoff with jitter and runs retry loops that
// stop when their context is cancelled.
package backoff

import (
	"context"
	"math/rand/v2"
	"time"
)

// Policy is an exponential backoff: the n-th retry (n from 1) waits a random time in
// [d/2, d] where d = min(Max, Initial*Multiplier^(n-1)) ("equal jitter": never zero, and
// never in lock-step with other clients).
type Policy struct {
	Initial    time.Duration
	Max        time.Duration
	Multiplier float64 // defaults to 2
}

// Delay returns the wait before retry n (n >= 1).
func (p Policy) Delay(n int) time.Duration {
	if n < 1 {
		n = 1
	}
	m := p.Multiplier
	if m < 1 {
		m = 2
	}
	d := float64(p.Initial)
	for i := 1; i < n && d < float64(p.Max); i++ {
		d *= m
	}
	if p.Max > 0 && d > float64(p.Max) {
		d = float64(p.Max)
	}
	if d <= 0 {
		return 0
	}
	half := d / 2
	return time.Duration(half + rand.Float64()*half)
}

// Sleep waits for d or until ctx is done, returning ctx.Err() in the latter case.
func Sleep(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

// Retry calls f until it returns nil, until retryable(err) is false, until attempts
// calls were made (0 means no limit), or until ctx is done. It returns f's last error
// (or ctx's error when cancelled while waiting).
func (p Policy) Retry(ctx context.Context, attempts int, retryable func(error) bool, f func(ctx context.Context) error) error {
	for n := 1; ; n++ {
		err := f(ctx)
		if err == nil || (retryable != nil && !retryable(err)) || (attempts > 0 && n >= attempts) {
			return err
		}
		if serr := Sleep(ctx, p.Delay(n)); serr != nil {
			return err
		}
	}
}
