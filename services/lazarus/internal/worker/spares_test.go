package worker

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/redisproc"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/topology"
)

// addSpare starts an empty redis-server and puts it in the pool.
func (e *env) addSpare(name string) *redistest.Node {
	e.t.Helper()
	n := redistest.Start(e.t, redisproc.Config{Name: name, Directives: [][2]string{{"min-replicas-to-write", "1"}}})
	if _, err := (topology.Store{KV: e.kv}).UpdatePool(context.Background(), func(p *topology.Pool) error {
		return p.Add(topology.Spare{Addr: n.Addr(), Added: time.Now().UTC(), AddedBy: "test"})
	}); err != nil {
		e.t.Fatal(err)
	}
	return n
}

// waitAcked waits until a write on primary is acknowledged by a replica (the primary
// counts a new replica as good once its cron saw the replica's ack).
func waitAcked(t *testing.T, primary string) {
	t.Helper()
	c := client(primary)
	defer c.Close()
	ctx := context.Background()
	redistest.WaitFor(t, 10*time.Second, "a write on "+primary+" acknowledged by a replica", func() bool {
		if err := c.Set(ctx, "after", 1, 0).Err(); err != nil {
			return false
		}
		n, err := c.Wait(ctx, 1, time.Second).Result()
		return err == nil && n == 1
	})
}

func (e *env) pool() topology.Pool {
	e.t.Helper()
	p, _, err := (topology.Store{KV: e.kv}).Pool(context.Background())
	if err != nil {
		e.t.Fatal(err)
	}
	return p
}

// A 1+1 shard whose primary dies for good, with min-replicas-to-write 1: lazarus fails
// over to the replica, which then refuses writes (no replica); lazarus attaches the
// spare, the shard takes writes again, the topology has the spare as the replica
// under a new epoch, the dead node is in the pool, nothing acknowledged is lost, and
// every step is an event with the failover's correlation id.
func TestPrimaryGoneForGoodSpareRestoresWrites(t *testing.T) {
	e := newEnv(t, 1)
	spare := e.addSpare("spare1")
	set := testSettings("a")
	set.SpareAfter = 300 * time.Millisecond
	w := e.worker(set, Hooks{})
	ctx := context.Background()
	oldP, rep := e.shard.Primary.Addr(), e.shard.Replicas[0].Addr()
	keys := writeAcked(t, oldP, "k", 200)
	w.ReconcileOnce(ctx)
	if err := e.shard.Primary.Client().Save(ctx).Err(); err != nil { // so that it comes back with its data
		t.Fatal(err)
	}
	if err := e.shard.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	alert := alertEvent(events.AlertPrimaryDown, oldP, 1)
	if err := w.HandleAlert(ctx, alert); err != nil {
		t.Fatal(err)
	}
	if sh := e.topo(); sh.Primary != rep || sh.Epoch != 2 {
		t.Fatalf("after the failover: %+v", sh)
	}
	// The promoted replica has no replica: writes are refused until the spare syncs.
	c := client(rep)
	defer c.Close()
	if err := c.Set(ctx, "probe", 1, 0).Err(); err == nil || !strings.Contains(err.Error(), "NOREPLICAS") {
		t.Fatalf("write on a primary without replicas: %v, want NOREPLICAS", err)
	}
	reconcileUntil(t, w, 30*time.Second, "spare attached", func() bool { return e.topo().Epoch == 3 })
	sh := e.topo()
	if sh.Primary != rep || len(sh.Replicas) != 1 || sh.Replicas[0] != spare.Addr() || sh.Reason != ReasonNoReplica {
		t.Fatalf("topology after the attach: %+v", sh)
	}
	if got := epochOf(t, rep); got != "3" {
		t.Fatalf("primary's epoch stamp %s, want 3", got)
	}
	waitAcked(t, rep)
	t.Logf("kill -9 of the primary -> first write acknowledged by the spare: %s", time.Since(killed).Round(time.Millisecond))
	if m := missing(t, spare.Addr(), keys); len(m) > 0 {
		t.Fatalf("the spare misses %d acknowledged keys", len(m))
	}
	p := e.pool()
	if len(p.Spares) != 1 || p.Spares[0].Addr != oldP || p.Spares[0].From != shardID || p.Spares[0].Claimed != "" {
		t.Fatalf("pool after the attach: %+v (want the dead old primary, from %s)", p.Spares, shardID)
	}
	if n := testutil.ToFloat64(w.m.SpareAttaches.WithLabelValues("attached")); n != 1 {
		t.Fatalf("lazarus_spare_attaches_total{attached} = %v", n)
	}
	if n := testutil.ToFloat64(w.m.NoReplica.WithLabelValues(shardID)); n != 0 {
		t.Fatalf("lazarus_shard_without_replica = %v after the attach", n)
	}
	var steps []string
	for _, ev := range e.pub.all() {
		f, ok := ev.Payload.(*events.Failover)
		if ev.Kind == events.KindFailoverStep && ok && f.Reason == ReasonNoReplica {
			steps = append(steps, f.Step)
			if ev.CorrelationID != alert.CorrelationID || ev.Epoch != 3 {
				t.Errorf("spare step %s: correlation %s epoch %d; want the failover's correlation %s, epoch 3", f.Step, ev.CorrelationID, ev.Epoch, alert.CorrelationID)
			}
		}
	}
	if got := strings.Join(steps, " "); got != "claim_spare attach_spare spare_synced route_spare" {
		t.Fatalf("spare steps: %s", got)
	}

	// The replaced node comes back with its data: it is made a replica of its old
	// shard's primary (never a primary anyone writes to) and stays in the pool.
	if err := e.shard.Primary.Restart(ctx, false); err != nil {
		t.Fatal(err)
	}
	reconcileUntil(t, w, 20*time.Second, "returning node follows the shard's primary", func() bool {
		i := info(t, oldP)
		return i.Role == "slave" && i.MasterAddr() == rep && i.LinkUp && !i.SyncInProgress
	})
	if p := e.pool(); p.Index(oldP) < 0 {
		t.Fatalf("the returning node left the pool: %+v", p)
	}
	if ms := masters(t, e); len(ms) != 1 || ms[0] != rep {
		t.Fatalf("masters: %v", ms)
	}
}

// A replica whose host is gone: after SpareAfter the spare replaces it; the shard was
// refusing writes (min-replicas-to-write 1) and takes them again. Without a usable
// spare nothing happens and the shard stays flagged without a replica.
func TestReplicaGoneForGoodIsReplacedBySpare(t *testing.T) {
	e := newEnv(t, 1)
	set := testSettings("a")
	set.SpareAfter = 300 * time.Millisecond
	w := e.worker(set, Hooks{})
	ctx := context.Background()
	p, rep := e.shard.Primary.Addr(), e.shard.Replicas[0].Addr()
	keys := writeAcked(t, p, "k", 100)
	if err := e.shard.Replicas[0].Kill(); err != nil {
		t.Fatal(err)
	}
	// No spare yet: the shard is flagged, nothing changes.
	reconcileUntil(t, w, 10*time.Second, "NO_SPARE decided", func() bool {
		w.mu.Lock()
		defer w.mu.Unlock()
		return w.spareNote[shardID] == "NO_SPARE"
	})
	if n := testutil.ToFloat64(w.m.NoReplica.WithLabelValues(shardID)); n != 1 || e.topo().Epoch != 1 {
		t.Fatalf("without a spare: gauge %v, epoch %d", n, e.topo().Epoch)
	}
	// A spare holding data of unknown origin is never used (its data would be wiped).
	dirty := e.addSpare("dirty")
	if err := dirty.Client().Set(ctx, "precious", 1, 0).Err(); err == nil {
		t.Fatal("an unreplicated spare with min-replicas-to-write 1 took a write")
	}
	if err := dirty.Client().ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := dirty.Client().Set(ctx, "precious", 1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		w.ReconcileOnce(ctx)
	}
	if e.topo().Epoch != 1 || info(t, dirty.Addr()).Role != "master" {
		t.Fatalf("a spare with data of unknown origin was attached: %+v", e.topo())
	}
	spare := e.addSpare("spare1")
	reconcileUntil(t, w, 30*time.Second, "spare attached", func() bool { return e.topo().Epoch == 2 })
	if sh := e.topo(); sh.Primary != p || len(sh.Replicas) != 1 || sh.Replicas[0] != spare.Addr() {
		t.Fatalf("topology: %+v", sh)
	}
	if m := missing(t, spare.Addr(), keys); len(m) > 0 {
		t.Fatalf("spare misses %d keys", len(m))
	}
	waitAcked(t, p)
	if pl := e.pool(); pl.Index(rep) < 0 || pl.Index(spare.Addr()) >= 0 || pl.Index(dirty.Addr()) < 0 {
		t.Fatalf("pool: %+v", pl.Spares)
	}
}

// Durability degrade: the replica dies, so the shard is marked degraded in the
// topology and its primary takes writes alone (min-replicas-to-write 0), NO_REPLICA
// standing; the replica comes back and syncs, so min-replicas-to-write is restored
// and degraded cleared.
func TestDegradePolicyLowersAndRestoresMinReplicas(t *testing.T) {
	e := newEnv(t, 1)
	set := testSettings("a")
	set.Durability, set.SpareAfter, set.MinReplicasToWrite = topology.DurabilityDegrade, -1, 1
	w := e.worker(set, Hooks{})
	ctx := context.Background()
	p := e.shard.Primary.Addr()
	w.ReconcileOnce(ctx)
	if sh := e.topo(); sh.Degraded {
		t.Fatalf("a healthy shard is degraded: %+v", sh)
	}
	if err := e.shard.Replicas[0].Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	reconcileUntil(t, w, 10*time.Second, "shard degraded", func() bool { return e.topo().Degraded })
	c := client(p)
	defer c.Close()
	if err := c.Set(ctx, "alone", 1, 0).Err(); err != nil {
		t.Fatalf("a degraded primary refuses writes: %v", err)
	}
	t.Logf("replica kill -9 -> degraded and writable: %s", time.Since(killed).Round(time.Millisecond))
	if n := testutil.ToFloat64(w.m.Degraded.WithLabelValues(shardID)); n != 1 {
		t.Fatalf("lazarus_shard_degraded = %v", n)
	}
	if r, _ := w.ctl.NoReplica(ctx, shardID); r == nil {
		t.Fatal("no NO_REPLICA record while degraded")
	}
	sh := e.topo()
	if sh.Epoch != 1 || sh.DegradedSince.IsZero() {
		t.Fatalf("degrading changed the route or left no time: %+v", sh)
	}
	if err := e.shard.Replicas[0].Restart(ctx, true); err != nil {
		t.Fatal(err)
	}
	reconcileUntil(t, w, 20*time.Second, "shard replicated again", func() bool { return !e.topo().Degraded })
	if got, err := c.ConfigGet(ctx, "min-replicas-to-write").Result(); err != nil || got["min-replicas-to-write"] != "1" {
		t.Fatalf("min-replicas-to-write after the replica came back: %v %v", got, err)
	}
	if r, _ := w.ctl.NoReplica(ctx, shardID); r != nil {
		t.Fatalf("NO_REPLICA still recorded: %+v", r)
	}
	var reasons []string
	for _, ev := range e.pub.all() {
		if tc, ok := ev.Payload.(*events.TopologyChanged); ok {
			reasons = append(reasons, tc.Reason)
		}
	}
	if got := strings.Join(reasons, " "); got != "degraded replicated" {
		t.Fatalf("topology.changed reasons: %s", got)
	}
}

// A strict shard's primary found with min-replicas-to-write below the setting (a node
// degraded earlier whose setting was persisted, then promoted) is restored.
func TestStrictPrimaryBelowMinReplicasIsRestored(t *testing.T) {
	e := newEnv(t, 1)
	set := testSettings("a")
	set.MinReplicasToWrite = 1
	w := e.worker(set, Hooks{})
	ctx := context.Background()
	c := client(e.shard.Primary.Addr())
	defer c.Close()
	if err := c.ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}
	reconcileUntil(t, w, 10*time.Second, "min-replicas-to-write restored", func() bool {
		got, err := c.ConfigGet(ctx, "min-replicas-to-write").Result()
		return err == nil && got["min-replicas-to-write"] == "1"
	})
	if e.topo().Degraded {
		t.Fatal("a strict shard was marked degraded")
	}
}
