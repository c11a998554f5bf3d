package lease

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/heartline/heartline/shared/kv/memkv"
)

type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time      { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) { c.mu.Lock(); c.t = c.t.Add(d); c.mu.Unlock() }

func TestAcquireRenewExpireRelease(t *testing.T) {
	ctx := context.Background()
	clk := &fakeClock{t: time.Unix(1000, 0)}
	m := Manager{Store: memkv.New(), Now: clk.now}
	a, err := m.Acquire(ctx, "lease.s1", "a", 10*time.Second, "failing over")
	if err != nil {
		t.Fatal(err)
	}
	_, err = m.Acquire(ctx, "lease.s1", "b", 10*time.Second, "")
	var held *HeldError
	if !errors.As(err, &held) || held.Owner != "a" || !errors.Is(err, ErrHeld) {
		t.Fatalf("want HeldError by a, got %v", err)
	}
	clk.add(5 * time.Second)
	if a, err = m.Renew(ctx, a, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	clk.add(9 * time.Second) // 14 s after the start: renewed lease still live
	if _, err := m.Acquire(ctx, "lease.s1", "b", 10*time.Second, ""); !errors.Is(err, ErrHeld) {
		t.Fatalf("renewed lease was taken: %v", err)
	}
	clk.add(2 * time.Second) // expired
	b, err := m.Acquire(ctx, "lease.s1", "b", 10*time.Second, "")
	if err != nil {
		t.Fatalf("expired lease not taken over: %v", err)
	}
	if _, err := m.Renew(ctx, a, 10*time.Second); !errors.Is(err, ErrLost) {
		t.Fatalf("old owner renewing: want ErrLost, got %v", err)
	}
	if err := m.Release(ctx, a); err != nil {
		t.Fatalf("releasing a lost lease: %v", err)
	}
	if rec, live, _ := m.Read(ctx, "lease.s1"); rec.Owner != "b" || !live {
		t.Fatalf("a's release of a lost lease removed b's lease: %+v %v", rec, live)
	}
	if err := m.Release(ctx, b); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Acquire(ctx, "lease.s1", "c", time.Second, ""); err != nil {
		t.Fatalf("released lease not free: %v", err)
	}
}

func TestOnlyOneOfManyRacersWins(t *testing.T) {
	ctx := context.Background()
	m := Manager{Store: memkv.New()}
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < 16; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := m.Acquire(ctx, "lease.x", string(rune('a'+i)), time.Minute, ""); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			}
		}(i)
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d owners acquired one lease", wins)
	}
}
