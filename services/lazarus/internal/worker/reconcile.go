package worker

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/heartline/heartline/services/lazarus/internal/decide"
	"github.com/heartline/heartline/services/lazarus/internal/redisops"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/topology"
)

func (w *Worker) reconcileLoop(ctx context.Context) {
	t := time.NewTicker(w.set.ReconcileInterval)
	defer t.Stop()
	for {
		w.ReconcileOnce(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// ReconcileOnce runs one reconcile pass over every shard of the topology.
func (w *Worker) ReconcileOnce(ctx context.Context) {
	m, err := w.topo.Load(ctx)
	if err != nil {
		if !errors.Is(err, topology.ErrEmpty) {
			w.log.Warn().Err(err).Msg("reconcile: reading the topology failed")
			return
		}
	}
	recs, err := w.recs.List(ctx, "")
	if err != nil {
		w.log.Warn().Err(err).Msg("reconcile: reading failover records failed")
		return
	}
	byShard := map[string][]*Record{}
	for _, r := range recs {
		byShard[r.Shard] = append(byShard[r.Shard], r)
	}
	var wg sync.WaitGroup
	for _, sh := range m.Shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			w.reconcileShard(ctx, sh, byShard[sh.ID])
		}()
	}
	wg.Wait()
	w.reconcilePool(ctx)
	w.mu.Lock()
	w.lastTick = w.now()
	w.mu.Unlock()
}

type fix struct {
	kind string // demote_rogue_primary, repoint_replica, unfence_primary
	addr string
	why  string
}

func (w *Worker) reconcileShard(ctx context.Context, sh topology.Shard, recs []*Record) {
	log := w.log.With().Str("shard", sh.ID).Uint64("epoch", sh.Epoch).Logger()
	for _, r := range recs {
		if r.Unfinished() {
			// withLease finishes or rolls it back once the dead worker's lease expired.
			err := w.withLease(ctx, sh.ID, 0, "recover failover", func(context.Context) error { return nil })
			if err != nil && !errors.Is(err, ErrLeaseHeld) && ctx.Err() == nil {
				log.Warn().Err(err).Msg("reconcile: recovering an unfinished failover failed")
			}
			return
		}
	}
	if p := w.pendingFor(sh.ID); p != nil {
		err := w.withLease(ctx, sh.ID, 0, "re-evaluate alert", func(ctx context.Context) error {
			return w.evaluate(ctx, p.alert, p.force, false)
		})
		if err != nil && !errors.Is(err, ErrLeaseHeld) && ctx.Err() == nil {
			log.Warn().Err(err).Msg("reconcile: re-evaluating a held alert failed")
		}
		return
	}
	nodes := w.ops.CheckAll(ctx, sh.Nodes())
	p, reps := nodes[0], nodes[1:]
	cond, _ := decide.Condition(p, reps, w.lastKnownAt(sh))
	if cond != "" {
		return // the primary is not fine: failing over is the alerts' business; never point anything at it
	}
	w.setKnown(sh, p)
	w.spareCheck(ctx, sh, p, reps)
	var unverified *Record
	if n := len(recs); n > 0 {
		if last := recs[n-1]; last.State == StateCompleted && !last.Verified && last.ToEpoch == sh.Epoch && last.NewPrimary == sh.Primary {
			unverified = last
		}
	}
	if len(w.plan(sh, p, reps)) == 0 && unverified == nil {
		return
	}
	err := w.withLease(ctx, sh.ID, 0, "reconcile", func(ctx context.Context) error {
		cur, _, err := w.topo.Get(ctx, sh.ID)
		if err != nil {
			return err
		}
		if cur.Epoch != sh.Epoch {
			return nil // moved on meanwhile: next pass
		}
		nodes := w.ops.CheckAll(ctx, cur.Nodes())
		p, reps := nodes[0], nodes[1:]
		if cond, _ := decide.Condition(p, reps, w.lastKnownAt(cur)); cond != "" {
			return nil
		}
		for _, f := range w.plan(cur, p, reps) {
			w.apply(ctx, cur, p, f)
		}
		if unverified != nil {
			w.verifyLater(ctx, unverified)
		}
		return nil
	})
	if err != nil && !errors.Is(err, ErrLeaseHeld) && ctx.Err() == nil {
		log.Warn().Err(err).Msg("reconcile pass failed")
	}
}

func (w *Worker) lastKnownAt(sh topology.Shard) *decide.Known {
	k := w.lastKnown(sh.ID)
	if k == nil || k.Epoch != sh.Epoch || k.Addr != sh.Primary {
		return nil
	}
	return k
}

// plan lists the corrections the shard needs, given a healthy primary p.
func (w *Worker) plan(sh topology.Shard, p decide.Node, reps []decide.Node) []fix {
	var fixes []fix
	now := w.now()
	if p.MinReplicasToWrite >= redisops.FenceMinReplicas {
		fixes = append(fixes, fix{"unfence_primary", p.Addr, "the topology's primary is still fenced and no failover is running"})
	}
	for _, n := range reps {
		if !n.Reachable || n.Loading {
			continue
		}
		var f *fix
		switch {
		case n.Role == "master":
			f = &fix{"demote_rogue_primary", n.Addr, fmt.Sprintf("it answers as master (epoch %d) but the topology names %s at epoch %d", n.Epoch, p.Addr, sh.Epoch)}
		case n.Parked && n.ReplID == p.ReplID:
			// Parked while its own primary is fine: the agent unparks it. Step in only
			// if that does not happen.
			w.mu.Lock()
			since, ok := w.parkedSince[n.Addr]
			if !ok {
				w.parkedSince[n.Addr] = now
				since = now
			}
			w.mu.Unlock()
			if now.Sub(since) >= w.set.ParkGrace {
				f = &fix{"repoint_replica", n.Addr, fmt.Sprintf("parked for %s while its primary is fine", now.Sub(since).Round(time.Second))}
			}
		case n.Parked:
			f = &fix{"repoint_replica", n.Addr, "parked, and the topology's primary is another incarnation (after a failover)"}
		case n.MasterAddr != p.Addr:
			f = &fix{"repoint_replica", n.Addr, fmt.Sprintf("follows %s, the topology names %s", n.MasterAddr, p.Addr)}
		}
		if !n.Parked {
			w.mu.Lock()
			delete(w.parkedSince, n.Addr)
			w.mu.Unlock()
		}
		if f == nil {
			continue
		}
		if ok, why := decide.SafeToFollow(n, p); !ok {
			w.refuse(sh, n.Addr, f.kind, why)
			continue
		}
		fixes = append(fixes, *f)
		if n.MinReplicasToWrite >= redisops.FenceMinReplicas {
			fixes = append(fixes, fix{"unfence_primary", n.Addr, "a fenced old primary, now a replica"})
		}
	}
	return fixes
}

// refuse logs, at most every 30 s per node, a correction refused because it would wipe
// data.
func (w *Worker) refuse(sh topology.Shard, addr, kind, why string) {
	w.mu.Lock()
	last := w.refused[addr]
	logIt := w.now().Sub(last) > 30*time.Second
	if logIt {
		w.refused[addr] = w.now()
	}
	w.mu.Unlock()
	if logIt {
		w.m.Reconciles.WithLabelValues("refused_wipe").Inc()
		w.log.Error().Str("shard", sh.ID).Uint64("epoch", sh.Epoch).Str("node", addr).Str("action", kind).Str("why", why).
			Msg("reconcile: NOT repointing a node, it would lose data; an operator must decide (lazarus switchover --shard " + sh.ID + " --to " + addr + " makes it the primary)")
	}
}

func (w *Worker) apply(ctx context.Context, sh topology.Shard, p decide.Node, f fix) {
	l := w.log.With().Str("shard", sh.ID).Uint64("epoch", sh.Epoch).Str("node", f.addr).Str("action", f.kind).Str("why", f.why).Logger()
	var err error
	switch f.kind {
	case "unfence_primary":
		err = w.ops.SetMinReplicas(ctx, f.addr, w.set.MinReplicasToWrite)
	default:
		err = w.ops.ReplicaOf(ctx, f.addr, p.Addr)
	}
	if err != nil {
		l.Warn().Err(err).Msg("reconcile: correction failed; retrying next pass")
		return
	}
	w.m.Reconciles.WithLabelValues(f.kind).Inc()
	w.mu.Lock()
	delete(w.parkedSince, f.addr)
	w.mu.Unlock()
	l.Warn().Str("primary", p.Addr).Msg("reconcile: " + f.kind)
}

// verifyLater verifies a degraded failover once a replica has joined.
func (w *Worker) verifyLater(ctx context.Context, rec *Record) {
	n, err := w.ops.Verify(ctx, rec.NewPrimary, rec.ID, 250*time.Millisecond)
	if err != nil || n < 1 {
		return
	}
	now := w.now()
	rec.Verified, rec.Degraded, rec.Phases.Verified, rec.Outcome = true, "", now, "completed"
	s := rec.Step(StepVerify)
	if s == nil {
		rec.Steps = append(rec.Steps, StepRecord{Name: StepVerify})
		s = &rec.Steps[len(rec.Steps)-1]
	}
	s.Status, s.Error, s.Ended, s.Worker = StatusDone, "", now, w.owner
	s.Detail = fmt.Sprintf("verified later: a write on %s was acknowledged by %d replica(s)", rec.NewPrimary, n)
	if err := w.recs.Save(ctx, rec); err != nil {
		return
	}
	w.m.Reconciles.WithLabelValues("verify_later").Inc()
	w.recLog(rec).Info().Str("step", StepVerify).Msg("failover verified later: " + s.Detail)
	w.publish(ctx, w.failoverEvent(events.KindFailoverStep, rec, s))
}
