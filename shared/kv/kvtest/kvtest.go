// Package kvtest is the conformance suite every kv.Store backend must pass.
package kvtest

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/heartline/heartline/shared/kv"
)

// Factory returns a fresh, empty store for one test; cleanup goes through t.Cleanup.
type Factory func(t *testing.T) kv.Store

// Run runs the suite against the stores newStore returns.
func Run(t *testing.T, newStore Factory) {
	t.Run("CreateGetUpdateDelete", func(t *testing.T) { testCRUD(t, newStore(t)) })
	t.Run("ConditionalWritesConflict", func(t *testing.T) { testConflicts(t, newStore(t)) })
	t.Run("ListByWholeTokenPrefix", func(t *testing.T) { testList(t, newStore(t)) })
	t.Run("InvalidKeys", func(t *testing.T) { testInvalid(t, newStore(t)) })
	t.Run("ConcurrentCreateOneWinner", func(t *testing.T) { testRace(t, newStore(t)) })
	t.Run("WatchSeesChanges", func(t *testing.T) { testWatch(t, newStore(t)) })
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return c
}

func testCRUD(t *testing.T, s kv.Store) {
	c := ctx(t)
	if _, err := s.Get(c, "a.b"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Get missing: want ErrNotFound, got %v", err)
	}
	r1, err := s.Create(c, "a.b", []byte("one"))
	if err != nil || r1 == 0 {
		t.Fatalf("Create: rev %d, %v", r1, err)
	}
	e, err := s.Get(c, "a.b")
	if err != nil || string(e.Value) != "one" || e.Revision != r1 || e.Key != "a.b" {
		t.Fatalf("Get: %+v %v", e, err)
	}
	r2, err := s.Update(c, "a.b", []byte("two"), r1)
	if err != nil || r2 <= r1 {
		t.Fatalf("Update: rev %d after %d, %v", r2, r1, err)
	}
	r3, err := s.Put(c, "a.b", []byte("three"))
	if err != nil || r3 <= r2 {
		t.Fatalf("Put: rev %d after %d, %v", r3, r2, err)
	}
	if _, err := s.Put(c, "a.empty", nil); err != nil {
		t.Fatalf("Put empty value: %v", err)
	}
	if e, err := s.Get(c, "a.empty"); err != nil || len(e.Value) != 0 {
		t.Fatalf("Get empty value: %+v %v", e, err)
	}
	if err := s.Delete(c, "a.b", r3); err != nil {
		t.Fatalf("Delete: %v", err)
	}
	if _, err := s.Get(c, "a.b"); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Get deleted: want ErrNotFound, got %v", err)
	}
	if err := s.Delete(c, "a.b", 0); err != nil {
		t.Fatalf("unconditional Delete of a missing key: %v", err)
	}
	if _, err := s.Create(c, "a.b", []byte("again")); err != nil {
		t.Fatalf("Create after delete: %v", err)
	}
}

func testConflicts(t *testing.T, s kv.Store) {
	c := ctx(t)
	r1, err := s.Create(c, "k", []byte("v1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Create(c, "k", []byte("v2")); !errors.Is(err, kv.ErrExists) {
		t.Fatalf("second Create: want ErrExists, got %v", err)
	}
	r2, err := s.Update(c, "k", []byte("v2"), r1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Update(c, "k", []byte("stale"), r1); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("stale Update: want ErrConflict, got %v", err)
	}
	if err := s.Delete(c, "k", r1); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("stale Delete: want ErrConflict, got %v", err)
	}
	if _, err := s.Update(c, "missing", []byte("x"), 1); !errors.Is(err, kv.ErrConflict) && !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("Update of a missing key: want ErrConflict or ErrNotFound, got %v", err)
	}
	if e, _ := s.Get(c, "k"); string(e.Value) != "v2" || e.Revision != r2 {
		t.Fatalf("a failed conditional write changed the value: %+v", e)
	}
}

func testList(t *testing.T, s kv.Store) {
	c := ctx(t)
	for _, k := range []string{"lease.b", "lease.a", "lease.a.x", "leases.z", "other"} {
		if _, err := s.Put(c, k, []byte(k)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := s.List(c, "lease")
	if err != nil {
		t.Fatal(err)
	}
	var keys []string
	for _, e := range got {
		keys = append(keys, e.Key)
		if string(e.Value) != e.Key || e.Revision == 0 {
			t.Fatalf("List entry %+v", e)
		}
	}
	if fmt.Sprint(keys) != "[lease.a lease.a.x lease.b]" {
		t.Fatalf("List(lease) = %v", keys)
	}
	all, err := s.List(c, "")
	if err != nil || len(all) != 5 {
		t.Fatalf("List all: %d entries, %v", len(all), err)
	}
	none, err := s.List(c, "nothing")
	if err != nil || len(none) != 0 {
		t.Fatalf("List of an empty prefix: %v %v", none, err)
	}
}

func testInvalid(t *testing.T, s kv.Store) {
	c := ctx(t)
	for _, k := range []string{"", "a..b", ".a", "a b", "a*", "a>", "ä"} {
		if _, err := s.Put(c, k, []byte("x")); !errors.Is(err, kv.ErrInvalidKey) {
			t.Errorf("Put(%q): want ErrInvalidKey, got %v", k, err)
		}
		if _, err := s.Get(c, k); !errors.Is(err, kv.ErrInvalidKey) {
			t.Errorf("Get(%q): want ErrInvalidKey, got %v", k, err)
		}
	}
}

func testRace(t *testing.T, s kv.Store) {
	c := ctx(t)
	const n = 8
	var wg sync.WaitGroup
	var mu sync.Mutex
	wins := 0
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := s.Create(c, "race.key", []byte(fmt.Sprint(i))); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, kv.ErrExists) {
				t.Errorf("Create: %v", err)
			}
		}(i)
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d concurrent Creates won, want exactly 1", wins)
	}
	// Concurrent conditional updates from the same revision: exactly one wins.
	e, _ := s.Get(c, "race.key")
	wins = 0
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			if _, err := s.Update(c, "race.key", []byte(fmt.Sprint(i)), e.Revision); err == nil {
				mu.Lock()
				wins++
				mu.Unlock()
			} else if !errors.Is(err, kv.ErrConflict) {
				t.Errorf("Update: %v", err)
			}
		}(i)
	}
	wg.Wait()
	if wins != 1 {
		t.Fatalf("%d concurrent Updates won, want exactly 1", wins)
	}
}

func testWatch(t *testing.T, s kv.Store) {
	c, cancel := context.WithCancel(ctx(t))
	defer cancel()
	if _, err := s.Put(c, "topo.s1", []byte("a")); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(c, "elsewhere", []byte("x")); err != nil {
		t.Fatal(err)
	}
	ch, err := kv.Watch(c, s, "topo", 50*time.Millisecond)
	if err != nil {
		t.Fatal(err)
	}
	expect := func(key, value string) {
		t.Helper()
		deadline := time.After(10 * time.Second)
		for {
			select {
			case e, ok := <-ch:
				if !ok {
					t.Fatal("watch closed early")
				}
				if e.Key == "elsewhere" {
					t.Fatal("watch sent a key outside its prefix")
				}
				if e.Key == key && string(e.Value) == value && (value != "" || e.Value == nil) {
					return
				}
			case <-deadline:
				t.Fatalf("watch did not see %s=%q", key, value)
			}
		}
	}
	expect("topo.s1", "a")
	if _, err := s.Put(c, "topo.s1", []byte("b")); err != nil {
		t.Fatal(err)
	}
	expect("topo.s1", "b")
	if _, err := s.Put(c, "topo.s2", []byte("c")); err != nil {
		t.Fatal(err)
	}
	expect("topo.s2", "c")
	if err := s.Delete(c, "topo.s2", 0); err != nil {
		t.Fatal(err)
	}
	expect("topo.s2", "")
	cancel()
	deadline := time.After(10 * time.Second)
	for {
		select {
		case _, ok := <-ch:
			if !ok {
				return
			}
		case <-deadline:
			t.Fatal("watch channel not closed after cancel")
		}
	}
}
