package worker

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/heartline/heartline/services/lazarus/internal/decide"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/topology"
)

// Steps of a spare attach, published as failover.step events.
const (
	StepClaimSpare  = "claim_spare"
	StepAttachSpare = "attach_spare" // REPLICAOF the primary
	StepSpareSynced = "spare_synced"
	StepRouteSpare  = "route_spare" // the shard's new replica set under a new epoch
)

// ReasonNoReplica is the reason of a spare attach's events.
const ReasonNoReplica = "NO_REPLICA"

// ErrSpareTaken: another worker claimed the spare first.
var ErrSpareTaken = errors.New("spare claimed by another attach")

// spareCheck runs on every reconcile pass of a shard whose primary p is fine: it keeps
// the no-replica gauge, and attaches a spare when every replica has been unreachable
// for longer than SpareAfter.
func (w *Worker) spareCheck(ctx context.Context, sh topology.Shard, p decide.Node, reps []decide.Node) {
	now := w.now()
	inSync, reachable := false, false
	for _, r := range reps {
		inSync = inSync || decide.InSync(r, p)
		reachable = reachable || r.Reachable
	}
	w.mu.Lock()
	if inSync {
		delete(w.noReplicaAt, sh.ID)
	} else if _, ok := w.noReplicaAt[sh.ID]; !ok {
		w.noReplicaAt[sh.ID] = now
	}
	if reachable {
		delete(w.unreachableAt, sh.ID)
	} else if _, ok := w.unreachableAt[sh.ID]; !ok {
		w.unreachableAt[sh.ID] = now
	}
	since, down := w.unreachableAt[sh.ID]
	w.mu.Unlock()
	w.applyDurability(ctx, sh, p, inSync)
	if inSync {
		w.m.NoReplica.WithLabelValues(sh.ID).Set(0)
		w.clearNoReplica(ctx, sh.ID)
		return
	}
	w.m.NoReplica.WithLabelValues(sh.ID).Set(1)
	in := decide.SpareInput{Primary: p, Replicas: reps, After: w.set.SpareAfter}
	if down {
		in.NoReplicaFor = now.Sub(since)
	}
	out := decide.Spare(in) // without the pool: in sync, recovering or within the grace
	if out.Reason == decide.SpareRecovering || out.Reason == decide.SpareGrace || w.set.SpareAfter < 0 {
		w.noteSpare(ctx, sh, out)
		return
	}
	pool, _, err := w.topo.Pool(ctx)
	if err != nil {
		w.log.Warn().Err(err).Str("shard", sh.ID).Msg("spare check: reading the spare pool failed")
		return
	}
	for _, s := range pool.Spares {
		pn := decide.PoolNode{Node: w.ops.Check(ctx, s.Addr), From: s.From, Claimed: s.Claimed}
		if s.From != "" {
			if fs, _, err := w.topo.Get(ctx, s.From); err == nil {
				pn.FromPrimary = w.ops.Check(ctx, fs.Primary)
			}
		}
		in.Pool = append(in.Pool, pn)
	}
	out = decide.Spare(in)
	w.noteSpare(ctx, sh, out)
	if out.Reason != decide.SpareAttach {
		return
	}
	err = w.withLease(ctx, sh.ID, 0, "attach spare", func(ctx context.Context) error {
		return w.attachSpare(ctx, sh, out)
	})
	if err != nil && !errors.Is(err, ErrLeaseHeld) && ctx.Err() == nil {
		w.m.SpareAttaches.WithLabelValues("failed").Inc()
		w.log.Error().Err(err).Str("shard", sh.ID).Str("spare", out.Spare).Msg("attaching a spare failed; the next reconcile pass decides again")
	}
}

// noteSpare logs the spare decision and records the standing NO_REPLICA condition in
// kv when the decision changes, so that a shard waiting for a spare that does not exist
// says so once, not every pass.
func (w *Worker) noteSpare(ctx context.Context, sh topology.Shard, out decide.SpareOutcome) {
	w.mu.Lock()
	prev, noted := w.spareNote[sh.ID]
	w.spareNote[sh.ID] = out.Reason
	since := w.noReplicaAt[sh.ID]
	w.mu.Unlock()
	if noted && prev == out.Reason {
		return
	}
	rec := NoReplicaRecord{Since: since.UTC(), Decision: string(out.Reason), Detail: out.Detail, Updated: w.now().UTC(), Worker: w.owner}
	if old, err := w.ctl.NoReplica(ctx, sh.ID); err == nil && old != nil && old.Since.Before(rec.Since) {
		rec.Since = old.Since // the condition began before this process saw it
	}
	if err := w.ctl.SetNoReplica(ctx, sh.ID, rec); err != nil {
		w.log.Warn().Err(err).Str("shard", sh.ID).Msg("recording the NO_REPLICA condition failed")
	}
	ev := w.log.Info()
	if out.Reason == decide.SpareNoneFree {
		ev = w.log.Error()
	}
	ev.Str("shard", sh.ID).Uint64("epoch", sh.Epoch).Str("decision", string(out.Reason)).Str("detail", out.Detail).
		Msg("spare decision: the shard has no replica in sync")
}

// applyDurability enters or leaves the degraded state of a shard whose policy is
// degrade: with no replica in sync, the topology first says degraded (clients stop
// waiting for a replica and report "replicated": false), then the primary's
// min-replicas-to-write goes to 0; once a replica is in sync, min-replicas-to-write is
// restored first, then the topology clears degraded. A strict shard found degraded (its
// policy changed) is restored the same way, and so is a primary found below
// -min-replicas-to-write while its shard is not degraded (a node degraded earlier whose
// setting a CONFIG REWRITE persisted, then promoted): strict means never acknowledged
// without a replica.
func (w *Worker) applyDurability(ctx context.Context, sh topology.Shard, p decide.Node, inSync bool) {
	degrade := sh.Policy(w.set.Durability) == topology.DurabilityDegrade && !inSync
	low := p.MinReplicasToWrite >= 0 && p.MinReplicasToWrite < w.set.MinReplicasToWrite
	switch {
	case degrade && sh.Degraded && p.MinReplicasToWrite == 0:
		w.m.Degraded.WithLabelValues(sh.ID).Set(1)
		return
	case !degrade && !sh.Degraded && !low:
		w.m.Degraded.WithLabelValues(sh.ID).Set(0)
		return
	}
	err := w.withLease(ctx, sh.ID, 0, "durability", func(ctx context.Context) error {
		cur, rev, err := w.topo.Get(ctx, sh.ID)
		if err != nil {
			return err
		}
		if cur.Epoch != sh.Epoch || cur.Primary != sh.Primary {
			return nil // moved on: next pass
		}
		now := w.now()
		corr := w.incidentOf(ctx, cur)
		if degrade {
			if !cur.Degraded {
				next := cur
				next.Degraded, next.DegradedSince = true, now.UTC()
				next.UpdatedAt, next.UpdatedBy, next.Reason = now.UTC(), "lazarus "+w.owner, "degraded"
				if _, err := w.topo.Annotate(ctx, cur, rev, next); err != nil {
					return fmt.Errorf("not degrading: marking the topology: %w", err)
				}
				w.publish(ctx, w.event(events.KindTopologyChanged, sh.ID, corr, cur.Epoch,
					&events.TopologyChanged{Primary: cur.Primary, Replicas: cur.Replicas, Reason: "degraded"}))
			}
			if err := w.ops.SetMinReplicas(ctx, cur.Primary, 0); err != nil {
				return fmt.Errorf("degraded in the topology, but setting min-replicas-to-write 0 on %s failed (retried next pass): %w", cur.Primary, err)
			}
			w.m.Degraded.WithLabelValues(sh.ID).Set(1)
			w.m.Reconciles.WithLabelValues("degrade").Inc()
			w.log.Error().Str("shard", sh.ID).Uint64("epoch", cur.Epoch).Str("correlation_id", corr).Str("primary", cur.Primary).
				Msg("shard DEGRADED (durability degrade): no replica in sync, so writes are acknowledged by the primary alone (replicated: false) until one is; a second failure now loses them")
			return nil
		}
		if err := w.ops.SetMinReplicas(ctx, cur.Primary, w.set.MinReplicasToWrite); err != nil {
			return fmt.Errorf("not leaving degraded: restoring min-replicas-to-write %d on %s: %w", w.set.MinReplicasToWrite, cur.Primary, err)
		}
		if !cur.Degraded {
			w.m.Degraded.WithLabelValues(sh.ID).Set(0)
			w.m.Reconciles.WithLabelValues("restore_min_replicas").Inc()
			w.log.Warn().Str("shard", sh.ID).Uint64("epoch", cur.Epoch).Str("primary", cur.Primary).Int("was", p.MinReplicasToWrite).
				Int("min_replicas_to_write", w.set.MinReplicasToWrite).Msg("restored min-replicas-to-write on a primary found below it while its shard is not degraded")
			return nil
		}
		next := cur
		lasted := now.Sub(cur.DegradedSince)
		next.Degraded, next.DegradedSince = false, time.Time{}
		next.UpdatedAt, next.UpdatedBy, next.Reason = now.UTC(), "lazarus "+w.owner, "replicated"
		if _, err := w.topo.Annotate(ctx, cur, rev, next); err != nil {
			return fmt.Errorf("min-replicas-to-write restored, but clearing degraded in the topology failed (retried next pass): %w", err)
		}
		w.publish(ctx, w.event(events.KindTopologyChanged, sh.ID, corr, cur.Epoch,
			&events.TopologyChanged{Primary: cur.Primary, Replicas: cur.Replicas, Reason: "replicated"}))
		w.m.Degraded.WithLabelValues(sh.ID).Set(0)
		w.m.Reconciles.WithLabelValues("undegrade").Inc()
		w.log.Warn().Str("shard", sh.ID).Uint64("epoch", cur.Epoch).Str("correlation_id", corr).Dur("degraded_for", lasted.Round(time.Millisecond)).
			Int("min_replicas_to_write", w.set.MinReplicasToWrite).Msg("shard no longer degraded: a replica is in sync, writes wait for it again")
		return nil
	})
	if err != nil && !errors.Is(err, ErrLeaseHeld) && ctx.Err() == nil {
		w.log.Error().Err(err).Str("shard", sh.ID).Msg("applying the durability policy failed")
	}
}

// incidentOf is the correlation id of the failover that led to the shard's current
// epoch, or a new one.
func (w *Worker) incidentOf(ctx context.Context, cur topology.Shard) string {
	if cur.CorrelationID != "" {
		return cur.CorrelationID
	}
	if recs, err := w.recs.List(ctx, cur.ID); err == nil && len(recs) > 0 {
		if last := recs[len(recs)-1]; last.ToEpoch == cur.Epoch {
			return last.CorrelationID
		}
	}
	return events.NewID()
}

// clearNoReplica removes the shard's NO_REPLICA record once a replica is in sync
// (once per change, and once after this process starts, for a record a predecessor
// left).
func (w *Worker) clearNoReplica(ctx context.Context, shard string) {
	w.mu.Lock()
	_, noted := w.spareNote[shard]
	cleared := w.noReplicaCleared[shard]
	delete(w.spareNote, shard)
	w.noReplicaCleared[shard] = true
	w.mu.Unlock()
	if cleared && !noted {
		return
	}
	old, _ := w.ctl.NoReplica(ctx, shard)
	if err := w.ctl.ClearNoReplica(ctx, shard); err != nil {
		w.log.Warn().Err(err).Str("shard", shard).Msg("clearing the NO_REPLICA condition failed")
		w.mu.Lock()
		w.noReplicaCleared[shard] = false
		w.mu.Unlock()
		return
	}
	if old != nil {
		w.log.Info().Str("shard", shard).Dur("lasted", w.now().Sub(old.Since).Round(time.Millisecond)).Str("last_decision", old.Decision).
			Msg("NO_REPLICA cleared: a replica is in sync again")
	}
}

// attachSpare claims the spare, points it at the primary, waits for its sync, and
// records the shard's new replica set under a new epoch; the replaced replicas join
// the pool. Runs under the shard's lease.
func (w *Worker) attachSpare(ctx context.Context, sh topology.Shard, out decide.SpareOutcome) error {
	cur, rev, err := w.topo.Get(ctx, sh.ID)
	if err != nil {
		return err
	}
	if cur.Epoch != sh.Epoch || cur.Primary != sh.Primary {
		return nil // the shard moved on meanwhile: the next pass decides again
	}
	corr := w.incidentOf(ctx, cur) // the aftermath of the failover that led here: one incident
	id := events.NewID()
	started := w.now()
	log := w.log.With().Str("shard", sh.ID).Uint64("epoch", cur.Epoch).Str("correlation_id", corr).Str("spare", out.Spare).Logger()
	step := func(name, detail string, stepErr error) {
		p := &events.Failover{FailoverID: id, Decision: events.DecisionFailover, Reason: ReasonNoReplica, Detail: detail,
			Step: name, OldPrimary: cur.Primary, NewPrimary: cur.Primary, FromEpoch: cur.Epoch, ToEpoch: cur.Epoch + 1,
			LossWindow: 0, Worker: w.owner}
		if stepErr != nil {
			p.StepError = stepErr.Error()
		}
		w.publish(ctx, w.event(events.KindFailoverStep, sh.ID, corr, cur.Epoch+1, p))
		l := log.Info()
		if stepErr != nil {
			l = log.Error().Err(stepErr)
		}
		l.Str("step", name).Str("detail", detail).Msg("spare attach: " + name)
	}
	release := func() {
		_, _ = w.topo.UpdatePool(context.WithoutCancel(ctx), func(p *topology.Pool) error {
			if i := p.Index(out.Spare); i >= 0 && p.Spares[i].Claimed == sh.ID {
				p.Spares[i].Claimed, p.Spares[i].ClaimedAt = "", time.Time{}
			}
			return nil
		})
	}

	// 1. Claim: one conditional write, so two workers never attach the same spare.
	_, err = w.topo.UpdatePool(ctx, func(p *topology.Pool) error {
		i := p.Index(out.Spare)
		if i < 0 {
			return fmt.Errorf("%w: %s", topology.ErrNotSpare, out.Spare)
		}
		if c := p.Spares[i].Claimed; c != "" && c != sh.ID {
			return fmt.Errorf("%w: %s for shard %s", ErrSpareTaken, out.Spare, c)
		}
		p.Spares[i].Claimed, p.Spares[i].ClaimedAt = sh.ID, w.now().UTC()
		return nil
	})
	if err != nil {
		return fmt.Errorf("not attaching %s: claiming it: %w", out.Spare, err)
	}
	step(StepClaimSpare, out.Detail, nil)

	// 2. Attach and wait for the sync.
	if err := w.ops.ReplicaOf(ctx, out.Spare, cur.Primary); err != nil {
		step(StepAttachSpare, "REPLICAOF "+cur.Primary, err)
		release()
		return fmt.Errorf("not attaching %s: REPLICAOF %s: %w", out.Spare, cur.Primary, err)
	}
	step(StepAttachSpare, fmt.Sprintf("REPLICAOF %s on %s", cur.Primary, out.Spare), nil)
	deadline := w.now().Add(w.set.SpareSyncTimeout)
	var n decide.Node
	for {
		nodes := w.ops.CheckAll(ctx, []string{cur.Primary, out.Spare})
		n = nodes[1]
		if decide.InSync(n, nodes[0]) {
			break
		}
		if w.now().After(deadline) {
			err := fmt.Errorf("%s not in sync after %s (link up %v, syncing %v, %s)", out.Spare, w.set.SpareSyncTimeout, n.LinkUp, n.SyncInProgress, n.Err)
			step(StepSpareSynced, "", err)
			release()
			return fmt.Errorf("not attaching %s: %w", out.Spare, err)
		}
		select {
		case <-ctx.Done():
			release()
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	step(StepSpareSynced, fmt.Sprintf("%s in sync with %s after %s (%d keys)", out.Spare, cur.Primary, w.now().Sub(started).Round(time.Millisecond), n.Keys), nil)

	// 3. Route: stamp the primary with the new epoch, then the topology.
	next := cur
	next.Epoch = cur.Epoch + 1
	next.Replicas = []string{out.Spare}
	replaced := map[string]bool{}
	for _, r := range out.Replace {
		replaced[r] = true
	}
	for _, r := range cur.Replicas {
		if !replaced[r] && r != out.Spare {
			next.Replicas = append(next.Replicas, r)
		}
	}
	now := w.now()
	next.UpdatedAt, next.UpdatedBy, next.Reason = now.UTC(), "lazarus "+w.owner, ReasonNoReplica
	next.FailoverID, next.CorrelationID = id, corr
	if err := w.ops.StampEpoch(ctx, cur.Primary, next.Epoch); err != nil {
		step(StepRouteSpare, "stamping epoch", err)
		release()
		return fmt.Errorf("not routing spare %s: stamping epoch %d on %s: %w", out.Spare, next.Epoch, cur.Primary, err)
	}
	if _, err := w.topo.Advance(ctx, cur, rev, next); err != nil {
		step(StepRouteSpare, "", err)
		release()
		return fmt.Errorf("not routing spare %s: %w", out.Spare, err)
	}
	w.forgetKnown(sh.ID)
	w.publish(ctx, w.event(events.KindTopologyChanged, sh.ID, corr, next.Epoch,
		&events.TopologyChanged{Primary: next.Primary, Replicas: next.Replicas, PreviousPrimary: cur.Primary, Reason: "spare_attached", FailoverID: id}))
	step(StepRouteSpare, fmt.Sprintf("topology %s epoch %d -> %d: replicas %v (replaced %v, now in the spare pool)", sh.ID, cur.Epoch, next.Epoch, next.Replicas, out.Replace), nil)

	// 4. The pool: the spare leaves it, the replaced nodes join it.
	if _, err := w.topo.UpdatePool(ctx, func(p *topology.Pool) error {
		_ = p.Remove(out.Spare)
		for _, r := range out.Replace {
			if p.Index(r) < 0 {
				_ = p.Add(topology.Spare{Addr: r, From: sh.ID, Added: w.now().UTC(), AddedBy: "lazarus " + w.owner + " (replaced by " + out.Spare + ")"})
			}
		}
		return nil
	}); err != nil {
		// The topology is right; the next pool pass drops a spare that is a shard's node.
		log.Warn().Err(err).Msg("spare attach: updating the pool failed")
	}
	w.mu.Lock()
	delete(w.unreachableAt, sh.ID)
	delete(w.noReplicaAt, sh.ID)
	w.mu.Unlock()
	w.m.SpareAttaches.WithLabelValues("attached").Inc()
	w.m.NoReplica.WithLabelValues(sh.ID).Set(0)
	return nil
}

// reconcilePool keeps the pool consistent with the topology and safe: a spare that is
// a shard's node leaves the pool (an attach that died after routing); a claim whose
// worker died is released; a replaced node that comes back answering as a primary
// with data is made a replica of its old shard's primary when that is wipe-safe (so no
// stale client can write to it), and is otherwise reported and left alone.
//
// The pool is read before the topology: an attach writes the topology before the
// pool, so a node it just replaced is never seen both in the pool and in its shard.
func (w *Worker) reconcilePool(ctx context.Context) {
	pool, _, err := w.topo.Pool(ctx)
	if err != nil || len(pool.Spares) == 0 {
		return
	}
	m, err := w.topo.Load(ctx)
	if err != nil && !errors.Is(err, topology.ErrEmpty) {
		return
	}
	now := w.now()
	var drop, unclaim []string
	for _, s := range pool.Spares {
		if _, ok := m.ShardOfNode(s.Addr); ok {
			drop = append(drop, s.Addr)
			continue
		}
		if s.Claimed != "" && now.Sub(s.ClaimedAt) > w.set.SpareSyncTimeout+w.set.LeaseTTL {
			unclaim = append(unclaim, s.Addr)
		}
		if s.From == "" || s.Claimed != "" {
			continue
		}
		n := w.ops.Check(ctx, s.Addr)
		if !n.IsMaster() || n.Keys == 0 {
			continue
		}
		fs, err := m.Shard(s.From)
		if err != nil {
			continue
		}
		p := w.ops.Check(ctx, fs.Primary)
		if ok, why := decide.SafeToFollow(n, p); !ok {
			w.refuse(fs, s.Addr, "park_returning_spare", why)
			continue
		}
		if err := w.ops.ReplicaOf(ctx, s.Addr, p.Addr); err != nil {
			w.log.Warn().Err(err).Str("node", s.Addr).Msg("spare pool: repointing a returning node failed; retrying next pass")
			continue
		}
		w.m.Reconciles.WithLabelValues("repoint_returning_spare").Inc()
		w.log.Warn().Str("node", s.Addr).Str("from_shard", s.From).Str("primary", p.Addr).
			Msg("spare pool: a replaced node came back as a primary with data; made it a replica of its old shard's primary (it stays a spare, never routed to)")
	}
	if len(drop)+len(unclaim) > 0 {
		_, err := w.topo.UpdatePool(ctx, func(p *topology.Pool) error {
			for _, a := range drop {
				_ = p.Remove(a)
			}
			for _, a := range unclaim {
				if i := p.Index(a); i >= 0 {
					p.Spares[i].Claimed, p.Spares[i].ClaimedAt = "", time.Time{}
				}
			}
			return nil
		})
		if err == nil {
			w.log.Info().Strs("dropped", drop).Strs("unclaimed", unclaim).Msg("spare pool: dropped spares that are shard nodes, released stale claims")
		}
	}
	free := 0
	for _, s := range pool.Spares {
		if s.Claimed == "" {
			free++
		}
	}
	w.m.SparesFree.Set(float64(free - len(drop)))
}
