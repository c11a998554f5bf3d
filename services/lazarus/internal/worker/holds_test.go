package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/heartline/heartline/services/lazarus/internal/decide"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/topology"
)

func lastDecision(t *testing.T, e *env) *events.Failover {
	t.Helper()
	d := e.pub.of(events.KindFailoverDecision)
	if len(d) == 0 {
		t.Fatal("no decision published")
	}
	return d[len(d)-1]
}

// Holds: fleet limit, pause (fleet-wide), flapping, cooldown; each published with an
// Override telling how to lift it, and lifted the way it says.
func TestHoldsAndTheirOverrides(t *testing.T) {
	e := newEnv(t, 2)
	set := testSettings("a")
	set.MaxConcurrent = 1
	reg := prometheus.NewRegistry()
	w, err := New(set, Deps{KV: e.kv, Publisher: e.pub, Log: logging.Test(e.logs), Registry: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	oldP := e.shard.Primary.Addr()
	keys := writeAcked(t, oldP, "k", 20)
	w.ReconcileOnce(ctx)
	if err := e.shard.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	ctl := Control{KV: e.kv}

	// Fleet limit: another shard is failing over.
	other := &Record{ID: events.NewID(), Shard: "shard-2", State: StateRunning, Created: time.Now(), CorrelationID: "x"}
	if err := w.recs.Create(ctx, other); err != nil {
		t.Fatal(err)
	}
	if err := w.HandleAlert(ctx, alertEvent(events.AlertPrimaryDown, oldP, 1)); err != nil {
		t.Fatal(err)
	}
	d := lastDecision(t, e)
	if d.Decision != events.DecisionHold || d.Reason != string(decide.FleetLimit) || !strings.Contains(d.Override, "lazarus failover --shard shard-1") {
		t.Fatalf("fleet limit: %+v", d)
	}
	if h, err := ctl.Hold(ctx, shardID); err != nil || h == nil || h.Reason != decide.FleetLimit {
		t.Fatalf("hold record: %+v %v", h, err)
	}
	other.State = StateCompleted
	if err := w.recs.Save(ctx, other); err != nil {
		t.Fatal(err)
	}

	// Pause of the whole fleet.
	if err := ctl.Pause(ctx, PauseAll, "alice", "maintenance", time.Now()); err != nil {
		t.Fatal(err)
	}
	if err := w.HandleAlert(ctx, alertEvent(events.AlertPrimaryDown, oldP, 1)); err != nil {
		t.Fatal(err)
	}
	if d := lastDecision(t, e); d.Reason != string(decide.Paused) || !strings.Contains(d.Override, "`lazarus resume`") || !strings.Contains(d.Detail, "alice") {
		t.Fatalf("pause: %+v", d)
	}
	w.ReconcileOnce(ctx) // still paused: the held alert is re-evaluated, nothing new published
	if n := len(e.pub.of(events.KindFailoverDecision)); n != 2 {
		t.Fatalf("%d decisions", n)
	}
	if err := ctl.Resume(ctx, PauseAll); err != nil {
		t.Fatal(err)
	}

	// Flapping.
	fl := alertEvent(events.AlertPrimaryDown, oldP, 1)
	fl.Payload.(*events.Alert).Flapping = true
	if err := w.HandleAlert(ctx, fl); err != nil {
		t.Fatal(err)
	}
	if d := lastDecision(t, e); d.Reason != string(decide.Flapping) || d.Override == "" {
		t.Fatalf("flapping: %+v", d)
	}
	if e.topo().Epoch != 1 {
		t.Fatal("a hold failed over")
	}

	// The next alert fails over.
	if err := w.HandleAlert(ctx, alertEvent(events.AlertPrimaryDown, oldP, 1)); err != nil {
		t.Fatal(err)
	}
	sh := e.topo()
	if sh.Epoch != 2 {
		t.Fatalf("epoch %d", sh.Epoch)
	}
	if h, _ := ctl.Hold(ctx, shardID); h != nil {
		t.Fatalf("hold record left after the failover: %+v", h)
	}

	// Cooldown: the new primary dies at once.
	w.ReconcileOnce(ctx)
	if err := e.node(sh.Primary).Kill(); err != nil {
		t.Fatal(err)
	}
	if err := w.HandleAlert(ctx, alertEvent(events.AlertPrimaryDown, sh.Primary, 2)); err != nil {
		t.Fatal(err)
	}
	d = lastDecision(t, e)
	if d.Reason != string(decide.Cooldown) || !strings.Contains(d.Override, "wait until") || !strings.Contains(d.Override, "lazarus resume --shard shard-1") {
		t.Fatalf("cooldown: %+v", d)
	}
	// Lifted as the override says (what `lazarus resume --shard` does).
	if err := ctl.Resume(ctx, shardID); err != nil {
		t.Fatal(err)
	}
	if lifted, err := w.recs.LiftCooldown(ctx, shardID); err != nil || !lifted {
		t.Fatalf("lift: %v %v", lifted, err)
	}
	reconcileUntil(t, w, 10*time.Second, "failover after the cooldown was lifted", func() bool { return e.topo().Epoch == 3 })
	if m := missing(t, e.topo().Primary, keys); len(m) > 0 {
		t.Fatalf("%d keys lost", len(m))
	}
	for _, r := range []decide.Reason{decide.FleetLimit, decide.Paused, decide.Flapping, decide.Cooldown} {
		if v := testutil.ToFloat64(w.m.Holds.WithLabelValues(string(r))); v != 1 {
			t.Errorf("lazarus_holds_total{reason=%s} = %v", r, v)
		}
	}
	// The second failover leaves the new primary without a live replica: degraded.
	if c, d := testutil.ToFloat64(w.m.Failovers.WithLabelValues("completed")), testutil.ToFloat64(w.m.Failovers.WithLabelValues("degraded")); c != 1 || d != 1 {
		t.Errorf("failovers: %v completed, %v degraded", c, d)
	}
}

// A planned switchover while writes flow: every write acknowledged (WAIT 1) before,
// during and after is on the new primary.
func TestSwitchoverWithWritesFlowingLosesNothing(t *testing.T) {
	e := newEnv(t, 2)
	w := e.worker(testSettings("a"), Hooks{})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := topology.Store{KV: e.kv}

	var acked sync.Map
	var nAcked, nRetries atomic.Int64
	stop := make(chan struct{})
	writerDone := make(chan error, 1)
	go func() {
		clients := map[string]*redis.Client{}
		defer func() {
			for _, c := range clients {
				c.Close()
			}
		}()
		sh, _, err := store.Get(ctx, shardID)
		if err != nil {
			writerDone <- err
			return
		}
		for i := 0; i < 100000; {
			select {
			case <-stop:
				writerDone <- nil
				return
			default:
			}
			c := clients[sh.Primary]
			if c == nil {
				c = client(sh.Primary)
				clients[sh.Primary] = c
			}
			k := fmt.Sprintf("w:%d", i)
			err := c.Set(ctx, k, i, 0).Err()
			var n int64
			if err == nil {
				n, err = c.Wait(ctx, 1, time.Second).Result()
			}
			if err == nil && n >= 1 {
				acked.Store(k, true)
				nAcked.Add(1)
				i++
				continue
			}
			nRetries.Add(1)
			if sh2, _, gerr := store.Get(ctx, shardID); gerr == nil {
				sh = sh2
			}
			time.Sleep(5 * time.Millisecond)
		}
		writerDone <- errors.New("writer ran out of keys")
	}()
	waitAcked := func(n int64) {
		deadline := time.Now().Add(30 * time.Second)
		for nAcked.Load() < n {
			if time.Now().After(deadline) {
				t.Fatalf("only %d writes acknowledged (%d retries)", nAcked.Load(), nRetries.Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitAcked(300)
	oldP := e.shard.Primary.Addr()
	rec, err := w.Switchover(ctx, shardID, "")
	if err != nil {
		t.Fatalf("switchover: %v (%+v)", err, rec)
	}
	before := nAcked.Load()
	waitAcked(before + 300)
	close(stop)
	if err := <-writerDone; err != nil {
		t.Fatal(err)
	}
	sh := e.topo()
	if !rec.Planned || rec.State != StateCompleted || !rec.Verified || rec.LossWindow != 0 || sh.Epoch != 2 || sh.Primary != rec.NewPrimary || sh.Primary == oldP {
		t.Fatalf("record %+v, topology %+v", rec, sh)
	}
	var keys []string
	acked.Range(func(k, _ any) bool {
		keys = append(keys, k.(string))
		return true
	})
	if m := missing(t, sh.Primary, keys); len(m) > 0 {
		t.Fatalf("%d of %d acknowledged writes lost in the switchover", len(m), len(keys))
	}
	t.Logf("%d writes acknowledged, %d retried across the switchover", len(keys), nRetries.Load())
	if i := info(t, oldP); i.Role != "slave" || i.MasterAddr() != sh.Primary {
		t.Fatalf("old primary: %s of %s", i.Role, i.MasterAddr())
	}
	if got := epochOf(t, sh.Primary); got != "2" {
		t.Fatalf("epoch stamp %s", got)
	}
	// Writes are not left paused on the old node.
	c := client(oldP)
	defer c.Close()
	if err := c.Set(ctx, "probe", 1, 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "READONLY") {
		t.Fatalf("write to the old primary: %v", err)
	}
	// A switchover to a node that is not in the shard is refused with a clear error.
	if _, err := w.Switchover(ctx, shardID, "127.0.0.1:1"); !errors.Is(err, ErrSwitchover) {
		t.Fatalf("switchover to a stranger: %v", err)
	}
	if _, err := w.Switchover(ctx, "shard-9", ""); !errors.Is(err, ErrUnknownShard) {
		t.Fatalf("unknown shard: %v", err)
	}
}

// An alert judged a false alarm stays under watch while it is open: when the primary
// then dies and the alerter sends nothing new, lazarus still fails over. Resolving the
// alert, or the end of the watch, stops it.
func TestOpenAlertJudgedHealthyIsWatched(t *testing.T) {
	e := newEnv(t, 2)
	w := e.worker(testSettings("a"), Hooks{})
	ctx := context.Background()
	oldP := e.shard.Primary.Addr()
	keys := writeAcked(t, oldP, "k", 20)
	w.ReconcileOnce(ctx)
	if err := w.HandleAlert(ctx, alertEvent(events.AlertPrimaryDataRegressed, oldP, 1)); err != nil {
		t.Fatal(err)
	}
	if d := lastDecision(t, e); d.Reason != string(decide.PrimaryHealthy) {
		t.Fatalf("decision %+v", d)
	}
	w.ReconcileOnce(ctx) // still healthy: nothing published again
	if n := len(e.pub.of(events.KindFailoverDecision)); n != 1 {
		t.Fatalf("%d decisions", n)
	}
	if err := e.shard.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	reconcileUntil(t, w, 10*time.Second, "failover of the watched shard", func() bool { return e.topo().Epoch == 2 })
	if m := missing(t, e.topo().Primary, keys); len(m) > 0 {
		t.Fatalf("%d keys lost", len(m))
	}

	// Resolved, or watched too long: no failover.
	for _, how := range []string{"resolved", "expired"} {
		e := newEnv(t, 1)
		set := testSettings("b")
		if how == "expired" {
			set.WatchOpen = time.Millisecond
		}
		w := e.worker(set, Hooks{})
		alert := alertEvent(events.AlertPrimaryDown, e.shard.Primary.Addr(), 1)
		if err := w.HandleAlert(ctx, alert); err != nil {
			t.Fatal(err)
		}
		if how == "resolved" {
			res := alert
			res.Kind, res.ID = events.KindAlertResolved, events.NewID()
			if err := w.HandleAlert(ctx, res); err != nil {
				t.Fatal(err)
			}
		} else {
			time.Sleep(5 * time.Millisecond)
		}
		if err := e.shard.Primary.Kill(); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 3; i++ {
			w.ReconcileOnce(ctx)
		}
		if e.topo().Epoch != 1 {
			t.Fatalf("%s: failed over without an open alert", how)
		}
	}
}
