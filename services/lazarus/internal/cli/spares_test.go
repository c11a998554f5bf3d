package cli

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/heartline/heartline/services/lazarus/internal/worker"
	"github.com/heartline/heartline/shared/redisproc"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/topology"
)

// lazarus spares add|list|remove against real redis-server nodes: a node of a shard,
// a node that does not answer and a node with keys are refused; an empty one is
// added, listed, shown in status, and removed.
func TestSparesCommands(t *testing.T) {
	f := newFixture()
	seedShard(t, f, "127.0.0.1:7000", "127.0.0.1:7001")
	empty := redistest.Start(t, redisproc.Config{Name: "spare"})
	full := redistest.Start(t, redisproc.Config{Name: "full"})
	if err := full.Client().Set(context.Background(), "k", 1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"spares", "add", "-addr", "127.0.0.1:7001"}, "node of shard shard-1"},
		{[]string{"spares", "add", "-addr", "127.0.0.1:1"}, "does not answer"},
		{[]string{"spares", "add", "-addr", full.Addr()}, "holds 1 keys"},
		{[]string{"spares", "add", "-addr", "nonsense"}, "want host:port"},
		{[]string{"spares", "remove", "-addr", empty.Addr()}, "not in the spare pool"},
		{[]string{"spares"}, "spares needs list, add or remove"},
		{[]string{"spares", "explode"}, "unknown spares command"},
		{[]string{"spares", "add"}, "-addr host:port is required"},
	} {
		out, err := f.run(t, tc.args...)
		if err == nil || !strings.Contains(err.Error()+out, tc.want) {
			t.Errorf("%v: err %v, output %q; want an error with %q", tc.args, err, out, tc.want)
		}
	}
	if out, err := f.run(t, "spares", "add", "-addr", empty.Addr(), "-zone", "a", "-by", "alice"); err != nil || !strings.Contains(out, "added") {
		t.Fatalf("add: %v %s", err, out)
	}
	if _, err := f.run(t, "spares", "add", "-addr", empty.Addr()); !errors.Is(err, topology.ErrSpareExists) {
		t.Fatalf("second add: %v", err)
	}
	out, err := f.run(t, "spares", "list")
	if err != nil || !strings.Contains(out, empty.Addr()) || !strings.Contains(out, "alice") {
		t.Fatalf("list: %v\n%s", err, out)
	}
	out, err = f.run(t, "status")
	if err != nil || !strings.Contains(out, "SPARE") || !strings.Contains(out, empty.Addr()) {
		t.Fatalf("status lacks the pool: %v\n%s", err, out)
	}
	// The standing NO_REPLICA condition shows in status with its age.
	since := time.Now().Add(-42 * time.Second)
	if err := (worker.Control{KV: f.kv}).SetNoReplica(context.Background(), "shard-1",
		worker.NoReplicaRecord{Since: since, Decision: "NO_SPARE", Detail: "no usable spare: the pool is empty"}); err != nil {
		t.Fatal(err)
	}
	out, err = f.run(t, "status")
	if err != nil || !strings.Contains(out, "shard-1: NO_REPLICA for 4") || !strings.Contains(out, "NO_SPARE: no usable spare") ||
		!strings.Contains(out, "the shard refuses writes") {
		t.Fatalf("status lacks NO_REPLICA: %v\n%s", err, out)
	}
	st := topology.Store{KV: f.kv}
	cur, rev, _ := st.Get(context.Background(), "shard-1")
	next := cur
	next.Degraded, next.DegradedSince = true, since
	if _, err := st.Annotate(context.Background(), cur, rev, next); err != nil {
		t.Fatal(err)
	}
	out, err = f.run(t, "status")
	if err != nil || !strings.Contains(out, "NO_REPLICA DEGRADED") || !strings.Contains(out, "replicated: false") {
		t.Fatalf("status lacks DEGRADED: %v\n%s", err, out)
	}
	if out, err := f.run(t, "spares", "remove", "-addr", empty.Addr()); err != nil || !strings.Contains(out, "removed") {
		t.Fatalf("remove: %v %s", err, out)
	}
	if out, _ := f.run(t, "spares", "list"); !strings.Contains(out, "no spares in the pool") {
		t.Fatalf("list after remove: %s", out)
	}
}
