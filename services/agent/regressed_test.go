package agent

import (
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/stream/memstream"
)

// decideAgent is an agent whose probe results the test makes up (no Redis, no loop).
func decideAgent(t *testing.T) *Agent {
	t.Helper()
	cfg := testConfig("shard-1", "127.0.0.1:7001", "127.0.0.1:7000")
	cfg.Freeze = false // judge the flags only
	a, err := New(Options{Config: cfg, Publisher: memstream.New(), Log: logging.Test(t.Output()), Registry: prometheus.NewRegistry()})
	if err != nil {
		t.Fatal(err)
	}
	a.resolvePrimary()
	return a
}

func replicaOf(offset, keys int64, linkUp, syncing bool) replicaResult {
	return replicaResult{ok: true, info: redisinfo.Node{RunID: "r1", Role: "slave", MasterHost: "127.0.0.1", MasterPort: 7000,
		LinkUp: linkUp, SyncInProgress: syncing, ReplID: "aaaa", Offset: offset, Keys: keys}}
}

func primaryAt(runID, replID string, offset, keys int64) primaryResult {
	return primaryResult{addr: "127.0.0.1:7000", ran: true, ok: true, infoOK: true,
		info: redisinfo.Node{RunID: runID, Role: "master", ReplID: replID, Offset: offset, Keys: keys}}
}

// The two INFOs of a cycle are read at the same time: under write load the replica's
// offset is often read a moment after the primary's and is ahead of it. A replica
// streaming from the primary is never evidence that the primary regressed.
func TestStreamingReplicaAheadOfPrimaryReadingIsNotRegressed(t *testing.T) {
	a := decideAgent(t)
	ctx := context.Background()
	now := time.Now()
	a.decide(ctx, now, replicaOf(1000, 50, true, false), primaryAt("p1", "aaaa", 1000, 50))
	hb := a.decide(ctx, now, replicaOf(1605704, 1474, true, false), primaryAt("p1", "aaaa", 1605185, 1471))
	if hb.Has(events.FlagPrimaryDataRegressed) {
		t.Fatalf("flagged a healthy primary read a moment before its streaming replica: %+v", hb.Flags)
	}
}

// The real case still flags at once: the primary restarted and came back with less
// than the replica, whose link is down (it reconnects, and a full resync would wipe it).
func TestRestartedEmptyPrimaryIsRegressed(t *testing.T) {
	a := decideAgent(t)
	ctx := context.Background()
	now := time.Now()
	a.decide(ctx, now, replicaOf(5000, 200, true, false), primaryAt("p1", "aaaa", 5000, 200))
	hb := a.decide(ctx, now, replicaOf(5000, 200, false, true), primaryAt("p2", "bbbb", 0, 0))
	if !hb.Has(events.FlagPrimaryDataRegressed) || !hb.Has(events.FlagPrimaryRestarted) {
		t.Fatalf("restarted empty primary not flagged: %+v", hb.Flags)
	}
	// Same replication id (restarted from an old RDB) with the link down: regressed too.
	b := decideAgent(t)
	b.decide(ctx, now, replicaOf(5000, 200, true, false), primaryAt("p1", "aaaa", 5000, 200))
	hb = b.decide(ctx, now, replicaOf(5000, 200, false, false), primaryAt("p3", "aaaa", 3000, 120))
	if !hb.Has(events.FlagPrimaryDataRegressed) {
		t.Fatalf("primary back from an older RDB not flagged: %+v", hb.Flags)
	}
}
