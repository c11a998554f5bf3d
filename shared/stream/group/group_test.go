package group

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/lease"
)

type tracker struct {
	mu      sync.Mutex
	working map[string]string // partition -> member
	double  []string
}

func (tr *tracker) work(member string) func(ctx context.Context, p string) {
	return func(ctx context.Context, p string) {
		tr.mu.Lock()
		if other, ok := tr.working[p]; ok {
			tr.double = append(tr.double, fmt.Sprintf("%s by %s and %s", p, other, member))
		}
		tr.working[p] = member
		tr.mu.Unlock()
		<-ctx.Done()
		tr.mu.Lock()
		delete(tr.working, p)
		tr.mu.Unlock()
	}
}

func (tr *tracker) count(member string) int {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	n := 0
	for _, m := range tr.working {
		if m == member {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMembersSharePartitionsAndTakeOver(t *testing.T) {
	store := memkv.New()
	tr := &tracker{working: map[string]string{}}
	var parts []string
	for i := 0; i < 16; i++ {
		parts = append(parts, fmt.Sprint(i))
	}
	run := func(member string) (context.CancelFunc, chan struct{}) {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			defer close(done)
			err := Run(ctx, Config{Leases: lease.Manager{Store: store}, Prefix: "stream.t.g", Member: member,
				TTL: 400 * time.Millisecond, Interval: 50 * time.Millisecond, Log: zerolog.Nop(),
				Partitions: func(context.Context) ([]string, error) { return parts, nil }, Work: tr.work(member)})
			if err != nil {
				t.Error(err)
			}
		}()
		return cancel, done
	}
	stopA, doneA := run("a")
	waitFor(t, "a to own all 16", func() bool { return tr.count("a") == 16 })
	stopB, doneB := run("b")
	waitFor(t, "an even split", func() bool { return tr.count("a") == 8 && tr.count("b") == 8 })
	stopA()
	<-doneA
	waitFor(t, "b to take a's partitions", func() bool { return tr.count("b") == 16 })
	stopB()
	<-doneB
	if tr.count("b") != 0 {
		t.Fatal("work still running after Run returned")
	}
	if len(tr.double) > 0 {
		t.Fatalf("partitions worked twice at once: %v", tr.double)
	}
	if left, _ := store.List(context.Background(), "stream.t.g"); len(left) != 0 {
		t.Fatalf("leases left behind after a clean stop: %d", len(left))
	}
}

func TestBadConfig(t *testing.T) {
	err := Run(context.Background(), Config{Prefix: "x", Member: "m"})
	if err == nil {
		t.Fatal("want an error for a config without Partitions/Work/Store")
	}
}

// failingStore fails every call once broken, as an unreachable store would.
type failingStore struct {
	*memkv.Store
	broken atomic.Bool
}

func (f *failingStore) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if f.broken.Load() {
		return 0, errors.New("store unreachable")
	}
	return f.Store.Update(ctx, key, value, rev)
}

func (f *failingStore) List(ctx context.Context, prefix string) ([]kv.Entry, error) {
	if f.broken.Load() {
		return nil, errors.New("store unreachable")
	}
	return f.Store.List(ctx, prefix)
}

func TestWorkStopsBeforeAnUnrenewedLeaseExpires(t *testing.T) {
	store := &failingStore{Store: memkv.New()}
	tr := &tracker{working: map[string]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	const ttl = 600 * time.Millisecond
	go func() {
		_ = Run(ctx, Config{Leases: lease.Manager{Store: store}, Prefix: "stream.t.g", Member: "a",
			TTL: ttl, Interval: 50 * time.Millisecond, Log: zerolog.Nop(),
			Partitions: func(context.Context) ([]string, error) { return []string{"0", "1"}, nil }, Work: tr.work("a")})
	}()
	waitFor(t, "a to own both partitions", func() bool { return tr.count("a") == 2 })
	broke := time.Now()
	store.broken.Store(true)
	waitFor(t, "work to stop", func() bool { return tr.count("a") == 0 })
	if since := time.Since(broke); since > 2*ttl {
		t.Fatalf("work ran %s after renewals stopped, past the %s lease", since, ttl)
	}
}
