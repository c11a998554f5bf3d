package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heartline/heartline/services/lazarus/internal/decide"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/stream"
)

// Kill -9 of the primary of a shard with two replicas: lazarus promotes the replica
// with the most data at epoch 2, stamps it, repoints the other replica, routes, and
// verifies a replicated write; the old primary, restarted empty, is rejoined as a
// replica. No acknowledged key is lost.
func TestKillPrimaryFailsOverToBestReplica(t *testing.T) {
	e := newEnv(t, 2)
	w := e.worker(testSettings("a"), Hooks{})
	ctx := context.Background()
	oldP := e.shard.Primary.Addr()
	keys := writeAcked(t, oldP, "k", 300)
	w.ReconcileOnce(ctx) // lazarus learns the primary's offsets
	if err := e.shard.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	alert := alertEvent(events.AlertPrimaryDown, oldP, 1)
	if err := w.HandleAlert(ctx, alert); err != nil {
		t.Fatal(err)
	}
	recs := e.records()
	if len(recs) != 1 || recs[0].State != StateCompleted || !recs[0].Verified {
		t.Fatalf("want one completed, verified failover, got %+v", recs)
	}
	rec := recs[0]
	sh := e.topo()
	if sh.Epoch != 2 || sh.Primary != rec.NewPrimary || sh.Primary == oldP || sh.FailoverID != rec.ID {
		t.Fatalf("topology after failover: %+v", sh)
	}
	if sh.Replicas[len(sh.Replicas)-1] != oldP {
		t.Fatalf("old primary should be the last replica: %v", sh.Replicas)
	}
	if got := epochOf(t, sh.Primary); got != "2" {
		t.Fatalf("heartline:epoch on the new primary = %s", got)
	}
	other := sh.Replicas[0]
	if i := info(t, other); i.MasterAddr() != sh.Primary {
		t.Fatalf("other replica follows %s, want %s", i.MasterAddr(), sh.Primary)
	}
	if m := missing(t, sh.Primary, keys); len(m) > 0 {
		t.Fatalf("%d acknowledged keys lost: %v", len(m), m[:min(5, len(m))])
	}
	if rec.LossWindow != 0 {
		t.Errorf("loss window %d, want 0 (known offsets, no writes lost)", rec.LossWindow)
	}
	ph := rec.Phases
	if ph.Detected.IsZero() || ph.Alerted.IsZero() || ph.Decided.IsZero() || ph.Promoted.IsZero() || ph.Routed.IsZero() || ph.Verified.IsZero() {
		t.Fatalf("phases incomplete: %+v", ph)
	}
	t.Logf("decided -> promoted %s, -> routed %s (alert handling, refused primary)", ph.Promoted.Sub(ph.Decided), ph.Routed.Sub(ph.Decided))

	// Every event carries the alert's correlation id, the shard and an epoch.
	var kinds []string
	for _, ev := range e.pub.all() {
		kinds = append(kinds, string(ev.Kind))
		if ev.CorrelationID != alert.CorrelationID || ev.Shard != shardID {
			t.Errorf("%s: correlation %s shard %s", ev.Kind, ev.CorrelationID, ev.Shard)
		}
		if ev.Kind != events.KindFailoverDecision && ev.Epoch != 2 {
			t.Errorf("%s: epoch %d", ev.Kind, ev.Epoch)
		}
	}
	want := "failover.started failover.step failover.step failover.step failover.step topology.changed failover.step failover.step failover.completed"
	if got := strings.Join(kinds, " "); got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
	if c := e.pub.of(events.KindFailoverCompleted); c[0].LossWindow != 0 || c[0].Phases.Verified.IsZero() {
		t.Fatalf("completed event: %+v", c[0])
	}

	// A second delivery of the same alert changes nothing.
	if err := w.HandleAlert(ctx, alert); err != nil {
		t.Fatal(err)
	}
	if d := e.pub.of(events.KindFailoverDecision); len(d) != 1 || d[0].Reason != string(decide.StaleAlert) {
		t.Fatalf("redelivered alert: %+v", d)
	}

	// The old primary comes back empty: the reconcile loop makes it a replica of the
	// new primary, and it gets the data back.
	if err := e.shard.Primary.Restart(ctx, true); err != nil {
		t.Fatal(err)
	}
	reconcileUntil(t, w, 20*time.Second, "old primary rejoined as a replica", func() bool {
		i := info(t, oldP)
		return i.Role == "slave" && i.MasterAddr() == sh.Primary && i.LinkUp && !i.SyncInProgress
	})
	if m := missing(t, oldP, keys); len(m) > 0 {
		t.Fatalf("old primary, resynced, misses %d keys", len(m))
	}
	if ms := masters(t, e); len(ms) != 1 || ms[0] != sh.Primary {
		t.Fatalf("masters: %v", ms)
	}
}

// SIGSTOP of the primary: the check times out, lazarus fails over. After SIGCONT the
// old primary never acknowledges a write and is demoted by the reconcile loop.
func TestPausedPrimaryFailsOverAndIsDemotedOnReturn(t *testing.T) {
	e := newEnv(t, 2)
	w := e.worker(testSettings("a"), Hooks{})
	ctx := context.Background()
	oldP := e.shard.Primary.Addr()
	keys := writeAcked(t, oldP, "k", 100)
	w.ReconcileOnce(ctx)
	if err := e.shard.Primary.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.shard.Primary.Resume() })
	start := time.Now()
	if err := w.HandleAlert(ctx, alertEvent(events.AlertPrimaryDown, oldP, 1)); err != nil {
		t.Fatal(err)
	}
	t.Logf("alert to completed with a SIGSTOPped primary: %s", time.Since(start))
	recs := e.records()
	if len(recs) != 1 || recs[0].State != StateCompleted || recs[0].Reason != decide.PrimaryDown {
		t.Fatalf("records: %+v", recs)
	}
	if s := recs[0].Step(StepFence); s.Status != StatusSkipped || !strings.Contains(s.Detail, "timeout") || !strings.Contains(s.Detail, "at decision") {
		t.Fatalf("fence step: %+v", s)
	}
	sh := e.topo()
	if m := missing(t, sh.Primary, keys); len(m) > 0 {
		t.Fatalf("%d keys lost", len(m))
	}
	if err := e.shard.Primary.Resume(); err != nil {
		t.Fatal(err)
	}
	// From now on the old primary must never acknowledge a write.
	c := client(oldP)
	defer c.Close()
	acked := 0
	readonly := false
	deadline := time.Now().Add(20 * time.Second)
	for !readonly {
		if time.Now().After(deadline) {
			t.Fatal("old primary was not demoted")
		}
		w.ReconcileOnce(ctx)
		err := c.Set(ctx, "after-sigcont", "x", 0).Err()
		switch {
		case err == nil:
			if n, _ := c.Wait(ctx, 1, 50*time.Millisecond).Result(); n >= 1 {
				acked++
			}
		case strings.HasPrefix(err.Error(), "READONLY"):
			readonly = true
		case strings.HasPrefix(err.Error(), "NOREPLICAS"):
		default:
			t.Logf("write to old primary: %v", err)
		}
	}
	if acked > 0 {
		t.Fatalf("the old primary acknowledged %d writes after SIGCONT", acked)
	}
	redistest.WaitFor(t, 20*time.Second, "old primary synced with the new one", func() bool {
		i := info(t, oldP)
		return i.MasterAddr() == sh.Primary && i.LinkUp && !i.SyncInProgress
	})
	if ms := masters(t, e); len(ms) != 1 || ms[0] != sh.Primary {
		t.Fatalf("masters: %v", ms)
	}
	if got := epochOf(t, oldP); got != "2" {
		t.Fatalf("old primary, now a replica, holds epoch %s (replicated from the new primary: want 2)", got)
	}
}

// The restart-wipe guard: kill -9 of the primary and an immediate restart without
// data, with the replica parked as the agent does: lazarus promotes the replica with the
// data and rejoins the empty node as its replica. Zero keys lost.
func TestRestartEmptyPrimaryLosesNothing(t *testing.T) {
	e := newEnv(t, 1)
	w := e.worker(testSettings("a"), Hooks{})
	ctx := context.Background()
	oldP, rep := e.shard.Primary.Addr(), e.shard.Replicas[0].Addr()
	keys := writeAcked(t, oldP, "k", 500)
	w.ReconcileOnce(ctx)
	if err := e.shard.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	park(t, rep) // what the agent does when the link drops
	if err := e.shard.Primary.Restart(ctx, true); err != nil {
		t.Fatal(err)
	}
	// The reconcile loop must not point the parked replica at the empty primary.
	for i := 0; i < 5; i++ {
		w.ReconcileOnce(ctx)
	}
	if i := info(t, rep); !i.Parked() || i.Keys < int64(len(keys)) {
		t.Fatalf("replica before the alert: parked %v, %d keys", i.Parked(), i.Keys)
	}
	if err := w.HandleAlert(ctx, alertEvent(events.AlertPrimaryDataRegressed, oldP, 1)); err != nil {
		t.Fatal(err)
	}
	recs := e.records()
	if len(recs) != 1 || recs[0].State != StateCompleted || recs[0].Reason != decide.PrimaryDataRegressed || recs[0].NewPrimary != rep {
		t.Fatalf("records: %+v", recs)
	}
	if s := recs[0].Step(StepFence); s.Status != StatusDone {
		t.Fatalf("the empty old primary should have been fenced: %+v", s)
	}
	if m := missing(t, rep, keys); len(m) > 0 {
		t.Fatalf("%d acknowledged keys lost", len(m))
	}
	reconcileUntil(t, w, 20*time.Second, "empty node rejoined with the data, failover verified", func() bool {
		i := info(t, oldP)
		r := e.records()[0]
		return i.Role == "slave" && i.MasterAddr() == rep && i.LinkUp && i.Keys >= int64(len(keys)) && r.Verified
	})
	if i := info(t, oldP); i.Raw["min_slaves_good_slaves"] != "" {
		t.Logf("old primary INFO shows min_slaves fields: %s", i.Raw["min_slaves_good_slaves"])
	}
	mr, err := w.ops.MinReplicas(ctx, oldP)
	if err != nil || mr != 1 {
		t.Fatalf("old primary's min-replicas-to-write after rejoining: %d %v (want the saved 1)", mr, err)
	}
}

// A failover whose only replica is promoted while the old primary is dead cannot be
// verified (no replica to acknowledge): it completes degraded, and is verified when the
// old node rejoins.
func TestDegradedFailoverIsVerifiedLater(t *testing.T) {
	e := newEnv(t, 1)
	set := testSettings("a")
	set.VerifyTimeout = 300 * time.Millisecond
	w := e.worker(set, Hooks{})
	ctx := context.Background()
	oldP, rep := e.shard.Primary.Addr(), e.shard.Replicas[0].Addr()
	keys := writeAcked(t, oldP, "k", 50)
	w.ReconcileOnce(ctx)
	if err := e.shard.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := w.HandleAlert(ctx, alertEvent(events.AlertPrimaryDown, oldP, 1)); err != nil {
		t.Fatal(err)
	}
	rec := e.records()[0]
	if rec.State != StateCompleted || rec.Verified || rec.Outcome != "degraded" || !strings.Contains(rec.Degraded, "no replica") {
		t.Fatalf("record: %+v", rec)
	}
	if got := epochOf(t, rep); got != "2" {
		t.Fatalf("the epoch must be stamped even without replicas (min-replicas-to-write 1): %s", got)
	}
	if c := e.pub.of(events.KindFailoverCompleted); len(c) != 1 || !strings.Contains(c[0].Detail, "not verified") {
		t.Fatalf("completed event: %+v", c)
	}
	if err := e.shard.Primary.Restart(ctx, true); err != nil {
		t.Fatal(err)
	}
	reconcileUntil(t, w, 20*time.Second, "failover verified later", func() bool { return e.records()[0].Verified })
	if m := missing(t, rep, keys); len(m) > 0 {
		t.Fatalf("%d keys lost", len(m))
	}
}

// A false alarm: one replica's agent lost the primary (it even parked its replica), but
// lazarus reaches the primary, healthy: no action.
func TestFalseAlarmFromOnePartitionedReplica(t *testing.T) {
	e := newEnv(t, 2)
	w := e.worker(testSettings("a"), Hooks{})
	ctx := context.Background()
	writeAcked(t, e.shard.Primary.Addr(), "k", 10)
	w.ReconcileOnce(ctx)
	park(t, e.shard.Replicas[1].Addr())
	alert := alertEvent(events.AlertPrimaryDown, e.shard.Primary.Addr(), 1)
	alert.Payload.(*events.Alert).AgentsReporting, alert.Payload.(*events.Alert).AgentsDown = 2, 1
	if err := w.HandleAlert(ctx, alert); err != nil {
		t.Fatal(err)
	}
	d := e.pub.of(events.KindFailoverDecision)
	if len(d) != 1 || d[0].Decision != events.DecisionNoAction || d[0].Reason != string(decide.PrimaryHealthy) {
		t.Fatalf("decisions: %+v", d)
	}
	if len(e.records()) != 0 || e.topo().Epoch != 1 {
		t.Fatal("a false alarm changed something")
	}
	// A REPLICA_PROBLEM warning is recorded, never acted on.
	if err := w.HandleAlert(ctx, alertEvent(events.AlertReplicaProblem, e.shard.Primary.Addr(), 1)); err != nil {
		t.Fatal(err)
	}
	if d := e.pub.of(events.KindFailoverDecision); len(d) != 2 || d[1].Reason != string(decide.WarningOnly) {
		t.Fatalf("decisions: %+v", d)
	}
}

// No replica reachable: abort with NO_ELIGIBLE_REPLICA, then fail over as soon as a
// replica is back (the alert is re-evaluated by the reconcile loop).
func TestNoEligibleReplicaAbortsThenRecovers(t *testing.T) {
	e := newEnv(t, 1)
	w := e.worker(testSettings("a"), Hooks{})
	ctx := context.Background()
	oldP, rep := e.shard.Primary.Addr(), e.shard.Replicas[0]
	keys := writeAcked(t, oldP, "k", 20)
	w.ReconcileOnce(ctx)
	if err := rep.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := e.shard.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := w.HandleAlert(ctx, alertEvent(events.AlertPrimaryDown, oldP, 1)); err != nil {
		t.Fatal(err)
	}
	ab := e.pub.of(events.KindFailoverAborted)
	if len(ab) != 1 || ab[0].Reason != string(decide.NoEligibleReplica) || !strings.Contains(ab[0].Detail, "unreachable") {
		t.Fatalf("aborted: %+v", ab)
	}
	w.ReconcileOnce(ctx) // same decision again: not published again
	if n := len(e.pub.of(events.KindFailoverAborted)); n != 1 {
		t.Fatalf("re-evaluation published %d aborts", n)
	}
	if err := rep.Resume(); err != nil {
		t.Fatal(err)
	}
	reconcileUntil(t, w, 10*time.Second, "failover after the replica returned", func() bool { return e.topo().Epoch == 2 })
	if m := missing(t, rep.Addr(), keys); len(m) > 0 {
		t.Fatalf("%d keys lost", len(m))
	}
}

// Crash after the promotion: the next worker (after the lease expires) finishes the
// failover from the record. Crash before it: the next worker rolls back and decides
// afresh. Either way the shard ends with exactly one primary.
func TestCrashMidFailoverIsFinishedByTheNextWorker(t *testing.T) {
	for _, at := range []string{StepPromote, StepStampEpoch, StepRepoint, StepRoute, StepFence} {
		t.Run("crash after "+at, func(t *testing.T) { crashAfter(t, newEnv(t, 2), at) })
	}
	// Lease expiry and CAS on NATS KV.
	t.Run("nats: crash after "+StepPromote, func(t *testing.T) { crashAfter(t, newEnvOnNATS(t, 2), StepPromote) })
}

func crashAfter(t *testing.T, e *env, at string) {
	ctx := context.Background()
	oldP := e.shard.Primary.Addr()
	keys := writeAcked(t, oldP, "k", 50)
	set := testSettings("a")
	set.LeaseTTL = time.Second
	crashed := make(chan struct{})
	a := e.worker(set, Hooks{AfterStep: func(_ *Record, st string) error {
		if st == at {
			close(crashed)
			return fmt.Errorf("after %s: %w", st, ErrCrashed)
		}
		return nil
	}})
	a.ReconcileOnce(ctx)
	if err := e.shard.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	alert := alertEvent(events.AlertPrimaryDown, oldP, 1)
	if err := a.HandleAlert(ctx, alert); err != nil {
		t.Fatal(err)
	}
	<-crashed
	if r := e.records(); len(r) != 1 || r[0].State != StateRunning {
		t.Fatalf("after the crash: %+v", r)
	}
	b := e.worker(set, Hooks{})
	if b.Owner() == a.Owner() {
		t.Fatal("owners must differ")
	}
	// The alert is delivered again to the next worker (it was not acknowledged).
	if err := b.HandleAlert(ctx, alert); err != nil {
		t.Fatal(err)
	}
	reconcileUntil(t, b, 20*time.Second, "failover finished by the second worker", func() bool {
		for _, r := range e.records() {
			if r.State == StateCompleted {
				return true
			}
		}
		return false
	})
	recs := e.records()
	first := recs[0]
	if at == StepFence {
		if first.State != StateRolledBack || len(recs) != 2 || recs[1].State != StateCompleted {
			t.Fatalf("want rolled back then completed: %+v", recs)
		}
	} else if len(recs) != 1 || first.State != StateCompleted || first.Step(StepVerify).Worker != b.Owner() {
		t.Fatalf("want the same failover finished by b: %+v", recs)
	}
	sh := e.topo()
	if sh.Epoch != 2 {
		t.Fatalf("epoch %d", sh.Epoch)
	}
	if ms := masters(t, e); len(ms) != 1 || ms[0] != sh.Primary {
		t.Fatalf("masters %v, topology primary %s", ms, sh.Primary)
	}
	if m := missing(t, sh.Primary, keys); len(m) > 0 {
		t.Fatalf("%d keys lost", len(m))
	}
}

// Two lazarus instances get the same alert (each through its own consumer group):
// exactly one failover; the other decides STALE_ALERT or ALREADY_HANDLED.
func TestTwoInstancesRacingOnTheSameAlert(t *testing.T) {
	t.Run("memory", func(t *testing.T) { racing(t, newEnv(t, 2)) })
	// The same on NATS: JetStream consumer groups, leases and CAS on NATS KV.
	t.Run("nats", func(t *testing.T) { racing(t, newEnvOnNATS(t, 2)) })
}

func racing(t *testing.T, e *env) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	oldP := e.shard.Primary.Addr()
	keys := writeAcked(t, oldP, "k", 50)
	setA, setB := testSettings("a"), testSettings("b")
	setA.Group, setB.Group = "lazarus-a", "lazarus-b"
	a, b := e.worker(setA, Hooks{}), e.worker(setB, Hooks{})
	a.ReconcileOnce(ctx)
	b.ReconcileOnce(ctx)
	done := make(chan error, 2)
	go func() { done <- a.Run(ctx) }()
	go func() { done <- b.Run(ctx) }()
	if err := e.shard.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	alert := alertEvent(events.AlertPrimaryDown, oldP, 0) // the alerter did not know the epoch
	data, err := events.Encode(alert)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.client().Publish(ctx, events.TopicAlerts, stream.Message{Key: shardID, ID: alert.ID, Data: data}); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 20*time.Second, "both instances decided", func() bool {
		return len(e.pub.of(events.KindFailoverCompleted)) == 1 && len(e.pub.of(events.KindFailoverDecision)) == 1
	})
	d := e.pub.of(events.KindFailoverDecision)[0]
	if d.Reason != string(decide.AlreadyHandled) && d.Reason != string(decide.StaleAlert) {
		t.Fatalf("the second instance decided %s: %s", d.Reason, d.Detail)
	}
	if n := len(e.records()); n != 1 {
		t.Fatalf("%d failover records", n)
	}
	cancel()
	for i := 0; i < 2; i++ {
		if err := <-done; err != nil {
			t.Fatal(err)
		}
	}
	if m := missing(t, e.topo().Primary, keys); len(m) > 0 {
		t.Fatalf("%d keys lost", len(m))
	}
}

func TestMalformedAlertIsDeadLettered(t *testing.T) {
	w, err := New(Settings{}, Deps{KV: nil, Publisher: &recPub{}})
	if err == nil || w != nil {
		t.Fatal("a worker without kv")
	}
	e := &env{t: t, pub: &recPub{}}
	_ = e
	w2, _ := New(Settings{}, Deps{KV: newMemKV(), Publisher: &recPub{}})
	err = w2.handleDelivery(context.Background(), stream.Delivery{Message: stream.Message{Key: "x", Data: []byte(`{"schema":"1.0"`)}})
	if !errors.Is(err, stream.ErrPermanent) {
		t.Fatalf("want a permanent error, got %v", err)
	}
	hb := events.New(events.KindHeartbeat, events.Source{Service: "agent"}, shardID, &events.Heartbeat{Seq: 1,
		Replica: events.ReplicaState{Addr: "r"}, Primary: events.PrimaryProbe{Addr: "p"}})
	if err := w2.HandleAlert(context.Background(), hb); !errors.Is(err, ErrNotAlert) {
		t.Fatalf("a heartbeat on the alerts topic: %v", err)
	}
	bad := alertEvent(events.AlertPrimaryDown, "p", 1)
	bad.Shard = "no such/shard"
	if err := w2.HandleAlert(context.Background(), bad); !errors.Is(err, ErrBadShard) || !errors.Is(err, stream.ErrPermanent) {
		t.Fatalf("a bad shard id: %v", err)
	}
	// An alert about a shard the topology does not have is decided, not retried.
	unknown := alertEvent(events.AlertPrimaryDown, "p", 1)
	unknown.Shard = "shard-9"
	if err := w2.HandleAlert(context.Background(), unknown); err != nil {
		t.Fatal(err)
	}
}

// Someone ran REPLICAOF on the primary: it reports itself as a replica, the shard has
// no writable primary. Lazarus promotes the best replica and makes the old primary its
// replica.
func TestPrimaryRoleChangedFailsOver(t *testing.T) {
	e := newEnv(t, 2)
	w := e.worker(testSettings("a"), Hooks{})
	ctx := context.Background()
	oldP := e.shard.Primary.Addr()
	keys := writeAcked(t, oldP, "k", 50)
	w.ReconcileOnce(ctx)
	// A stray REPLICAOF to a node outside the shard: the primary keeps its data but
	// stops being a primary.
	c := client(oldP)
	defer c.Close()
	if err := c.SlaveOf(ctx, "127.0.0.1", "1").Err(); err != nil {
		t.Fatal(err)
	}
	if err := w.HandleAlert(ctx, alertEvent(events.AlertPrimaryRoleChanged, oldP, 1)); err != nil {
		t.Fatal(err)
	}
	recs := e.records()
	if len(recs) != 1 || recs[0].State != StateCompleted || recs[0].Reason != decide.PrimaryRoleChanged {
		t.Fatalf("records: %+v", recs)
	}
	if s := recs[0].Step(StepFence); s.Status != StatusSkipped || !strings.Contains(s.Detail, "already a replica") {
		t.Fatalf("fence: %+v", s)
	}
	sh := e.topo()
	redistest.WaitFor(t, 20*time.Second, "old primary follows the new one", func() bool {
		i := info(t, oldP)
		return i.MasterAddr() == sh.Primary && i.LinkUp && !i.SyncInProgress
	})
	if m := missing(t, sh.Primary, keys); len(m) > 0 {
		t.Fatalf("%d keys lost", len(m))
	}
	if ms := masters(t, e); len(ms) != 1 || ms[0] != sh.Primary {
		t.Fatalf("masters: %v", ms)
	}
}
