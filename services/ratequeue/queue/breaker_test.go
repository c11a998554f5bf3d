package queue

import (
	"testing"
	"time"

	"github.com/heartline/heartline/shared/topology"
)

func TestBreaker(t *testing.T) {
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	sh := topology.Shard{ID: "s", Epoch: 1, Primary: "a:1"}
	b := newBreakers(3*time.Second, 500*time.Millisecond)

	// A failover-length outage never opens it.
	b.failure(sh, at(0))
	b.failure(sh, at(1000))
	if ok, _ := b.allow(sh, at(1100)); !ok {
		t.Fatal("open after 1 s of failures")
	}
	if b.success("s") {
		t.Fatal("a closed circuit reported open")
	}
	// Failures for 3 s open it; calls then fail at once, one probe per 500 ms.
	b.failure(sh, at(2000))
	if b.failure(sh, at(4000)) {
		t.Fatal("opened before 3 s")
	}
	if !b.failure(sh, at(5000)) {
		t.Fatal("not opened after 3 s of failures")
	}
	if ok, _ := b.allow(sh, at(5100)); ok {
		t.Fatal("an open circuit let a call through before the probe time")
	}
	if ok, _ := b.allow(sh, at(5500)); !ok {
		t.Fatal("no probe after 500 ms")
	}
	if ok, _ := b.allow(sh, at(5600)); ok {
		t.Fatal("a second call went through while the probe is out")
	}
	b.failure(sh, at(5600)) // the probe failed: still open
	if _, ok := b.openShards()["s"]; !ok {
		t.Fatal("openShards lacks s")
	}
	// A route change (failover) closes it at once.
	moved := sh
	moved.Epoch, moved.Primary = 2, "b:1"
	if ok, closed := b.allow(moved, at(5700)); !ok || !closed {
		t.Fatalf("route change: allow %v closed %v", ok, closed)
	}
	// Opened again, a successful probe closes it.
	b.failure(moved, at(6000))
	b.failure(moved, at(9000))
	if ok, _ := b.allow(moved, at(9600)); !ok {
		t.Fatal("no probe")
	}
	if !b.success("s") {
		t.Fatal("success did not report the open circuit")
	}
	if ok, _ := b.allow(moved, at(9601)); !ok || len(b.openShards()) != 0 {
		t.Fatal("still open after a success")
	}
	// Disabled.
	off := newBreakers(0, 0)
	for i := 0; i < 10; i++ {
		off.failure(sh, at(i*10000))
	}
	if ok, _ := off.allow(sh, at(100000)); !ok {
		t.Fatal("a disabled breaker blocked a call")
	}
}
