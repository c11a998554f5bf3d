package natskv_test

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/kv/kvtest"
	"github.com/heartline/heartline/shared/kv/natskv"
	"github.com/heartline/heartline/shared/stream/natsstream/natstest"
)

var buckets atomic.Int64

// newStore opens a store in a fresh bucket of srv's server, on its own connection.
func newStore(t *testing.T, url string) *natskv.Store {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	s, err := natskv.New(ctx, natskv.Options{URL: url, Bucket: fmt.Sprintf("test%d", buckets.Add(1))})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = s.Close() })
	return s
}

func TestConformance(t *testing.T) {
	srv := natstest.Start(t)
	kvtest.Run(t, func(t *testing.T) kv.Store { return newStore(t, srv.ClientURL()) })
}

// A key deleted after it was read cannot be updated, not even with the revision of its
// delete marker (JetStream's own compare-and-set would accept that one).
func TestUpdateOfDeletedKeyConflicts(t *testing.T) {
	srv := natstest.Start(t)
	s := newStore(t, srv.ClientURL())
	ctx := context.Background()
	r1, err := s.Create(ctx, "a.b", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	<-ch // the current entry
	if err := s.Delete(ctx, "a.b", r1); err != nil {
		t.Fatal(err)
	}
	var del kv.Entry
	select {
	case del = <-ch:
	case <-time.After(10 * time.Second):
		t.Fatal("watch did not report the delete")
	}
	if del.Value != nil || del.Revision <= r1 {
		t.Fatalf("delete event %+v", del)
	}
	for _, rev := range []uint64{r1, del.Revision} {
		if _, err := s.Update(ctx, "a.b", []byte("2"), rev); !errors.Is(err, kv.ErrConflict) {
			t.Fatalf("Update of a deleted key at revision %d: want ErrConflict, got %v", rev, err)
		}
	}
	if err := s.Delete(ctx, "a.b", r1); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("stale conditional Delete: want ErrConflict, got %v", err)
	}
}

// Two stores sharing a bucket see each other's writes; creating the bucket twice at
// once works.
func TestConcurrentOpenSharesBucket(t *testing.T) {
	srv := natstest.Start(t)
	ctx := context.Background()
	stores := make([]*natskv.Store, 4)
	errs := make(chan error, len(stores))
	for i := range stores {
		go func(i int) {
			s, err := natskv.New(ctx, natskv.Options{URL: srv.ClientURL()})
			stores[i] = s
			errs <- err
		}(i)
	}
	for range stores {
		if err := <-errs; err != nil {
			t.Fatalf("concurrent New: %v", err)
		}
	}
	for _, s := range stores {
		t.Cleanup(func() { _ = s.Close() })
	}
	if _, err := stores[0].Create(ctx, "x", []byte("1")); err != nil {
		t.Fatal(err)
	}
	if _, err := stores[1].Create(ctx, "x", []byte("2")); !errors.Is(err, kv.ErrExists) {
		t.Fatalf("want ErrExists from another handle, got %v", err)
	}
}

// Watch keeps following across a server restart (same store directory and port).
func TestWatchSurvivesServerRestart(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.StartIn(t, dir, -1)
	port := srv.Port()
	nc, err := nats.Connect(srv.ClientURL(), nats.MaxReconnects(-1), nats.ReconnectWait(50*time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	s, err := natskv.New(ctx, natskv.Options{Conn: nc, Log: zerolog.New(zerolog.NewTestWriter(t))})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "topology.s1", []byte("1")); err != nil {
		t.Fatal(err)
	}
	ch, err := s.Watch(ctx, "topology")
	if err != nil {
		t.Fatal(err)
	}
	if e := <-ch; string(e.Value) != "1" {
		t.Fatalf("first entry %+v", e)
	}
	srv.Shutdown()
	t0 := time.Now()
	srv = natstest.StartIn(t, dir, port)
	t.Logf("restarted after %s", time.Since(t0))
	// Writes retry until the restarted server serves the bucket again.
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, err := s.Put(ctx, "topology.s1", []byte("2"))
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("Put after restart: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("put after %s", time.Since(t0))
	for {
		select {
		case e, ok := <-ch:
			if !ok {
				t.Fatal("watch closed by the restart")
			}
			if string(e.Value) == "2" {
				t.Logf("watch after %s", time.Since(t0))
				return
			}
		case <-ctx.Done():
			t.Fatal("watch did not see the write after the restart")
		}
	}
}
