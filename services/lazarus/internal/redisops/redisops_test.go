package redisops

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/heartline/heartline/shared/redisproc"
	"github.com/heartline/heartline/shared/redistest"
)

func TestStampEpochWithoutReplicasAndNeverBackwards(t *testing.T) {
	n := redistest.Start(t, redisproc.Config{Name: "solo", Directives: [][2]string{{"min-replicas-to-write", "1"}}})
	ctx := context.Background()
	ops := Ops{}
	// A lone primary with min-replicas-to-write 1 refuses plain writes...
	if err := n.Client().Set(ctx, "x", 1, 0).Err(); err == nil {
		t.Fatal("want NOREPLICAS")
	}
	// ...but gets its epoch, and keeps its setting.
	if err := ops.StampEpoch(ctx, n.Addr(), 3); err != nil {
		t.Fatal(err)
	}
	if e, err := ops.Epoch(ctx, n.Addr()); err != nil || e != 3 {
		t.Fatalf("epoch %d %v", e, err)
	}
	if m, err := ops.MinReplicas(ctx, n.Addr()); err != nil || m != 1 {
		t.Fatalf("min-replicas-to-write %d %v", m, err)
	}
	if err := ops.StampEpoch(ctx, n.Addr(), 2); !errors.Is(err, ErrEpochAhead) {
		t.Fatalf("stamping backwards: %v", err)
	}
	c := ops.Check(ctx, n.Addr())
	if !c.IsMaster() || c.Epoch != 3 || c.MinReplicasToWrite != 1 || c.AckedOffset != -1 {
		t.Fatalf("check: %+v", c)
	}
}

// A node that accepts connections but never answers costs one check timeout.
func TestCheckOfAHungNodeIsBounded(t *testing.T) {
	n := redistest.Start(t, redisproc.Config{Name: "hung"})
	if err := n.Pause(); err != nil {
		t.Fatal(err)
	}
	defer n.Resume()
	ops := Ops{CheckTimeout: 150 * time.Millisecond}
	start := time.Now()
	c := ops.Check(context.Background(), n.Addr())
	took := time.Since(start)
	if c.Reachable {
		t.Fatal("a stopped node answered")
	}
	t.Logf("check of a SIGSTOPped node: %s (%s)", took, c.Err)
	if !strings.HasPrefix(c.Err, "timeout") {
		t.Fatalf("want a timeout, got %q", c.Err)
	}
}
