package worker

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/lazarus/internal/decide"
	"github.com/heartline/heartline/services/lazarus/internal/redisops"
	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/topology"
)

// startFailover records the decision and runs the failover.
func (w *Worker) startFailover(ctx context.Context, info alertInfo, sh topology.Shard, rev uint64, primary decide.Node, out decide.Outcome, decided time.Time, force bool) error {
	rec := w.newRecord(info, sh, rev, out, decided)
	if !primary.Reachable {
		rec.oldDown = primary.Err
	}
	if err := w.recs.Create(ctx, rec); err != nil {
		return fmt.Errorf("not failing over %s: %w", sh.ID, err)
	}
	// Fleet limit, strictly: two workers on two shards may both have passed the
	// check; the later records give way.
	if !force && w.set.MaxConcurrent > 0 {
		all, err := w.recs.List(ctx, "")
		if err == nil {
			n := 0
			for _, r := range all {
				if r.Unfinished() && !r.Planned {
					if r.ID == rec.ID {
						break
					}
					n++
				}
			}
			if n >= w.set.MaxConcurrent {
				rec.State, rec.Outcome, rec.Finished = StateAborted, string(decide.FleetLimit), w.now()
				_ = w.recs.Save(ctx, rec)
				w.m.Holds.WithLabelValues(string(decide.FleetLimit)).Inc()
				w.setPending(sh.ID, info, force, "hold/"+string(decide.FleetLimit))
				hold := decide.Outcome{Decision: events.DecisionHold, Reason: decide.FleetLimit,
					Detail:   fmt.Sprintf("%d other failover(s) started first, the fleet limit is %d", n, w.set.MaxConcurrent),
					Override: fmt.Sprintf("lazarus retries when a running failover ends; to move this shard now run `lazarus failover --shard %s`", sh.ID)}
				w.recordDecision(ctx, info, sh, hold, decided)
				return nil
			}
		}
	}
	l := w.recLog(rec)
	l.Warn().Str("decision", "failover").Str("reason", string(rec.Reason)).Str("detail", rec.Detail).
		Str("old_primary", rec.OldPrimary).Str("new_primary", rec.NewPrimary).Int64("loss_window_bytes", rec.LossWindow).
		Int64("acked_bound", rec.Bound).Msg("decision: failover " + string(rec.Reason))
	w.publish(ctx, w.failoverEvent(events.KindFailoverStarted, rec, rec.Step(StepDecided)))
	return w.run(ctx, rec)
}

func (w *Worker) recLog(rec *Record) *zerolog.Logger {
	l := logging.Incident(w.log, rec.Shard, rec.CorrelationID, rec.ToEpoch).With().Str("failover_id", rec.ID).
		Bool("planned", rec.Planned).Logger()
	return &l
}

// run executes the record's remaining steps, then completes it. A failing step before
// the promotion rolls the failover back; after it the failover is aborted and the
// alert re-evaluated (a promoted candidate is chosen again: it has the most data).
func (w *Worker) run(ctx context.Context, rec *Record) error {
	ctx, cancel := context.WithTimeout(ctx, w.set.FailoverTimeout)
	defer cancel()
	for _, st := range rec.steps() {
		if rec.finished(st) {
			continue
		}
		err := w.runStep(ctx, rec, st)
		switch {
		case err == nil:
			continue
		case errors.Is(err, ErrCrashed), errors.Is(err, ErrRecordTaken), errors.Is(context.Cause(ctx), ErrLeaseLost):
			return err
		}
		return w.fail(ctx, rec, st, err)
	}
	return w.complete(ctx, rec)
}

func (w *Worker) runStep(ctx context.Context, rec *Record, st string) error {
	start := w.now()
	if s := rec.Step(st); s == nil {
		rec.Steps = append(rec.Steps, StepRecord{Name: st, Status: StatusStarted, Started: start, Worker: w.owner})
	} else {
		s.Status, s.Error, s.Started, s.Worker = StatusStarted, "", start, w.owner
	}
	if err := w.recs.Save(ctx, rec); err != nil {
		return err
	}
	var detail, status string
	pol := backoff.Policy{Initial: 50 * time.Millisecond, Max: 500 * time.Millisecond}
	err := pol.Retry(ctx, 4, retryable, func(ctx context.Context) error {
		var err error
		detail, status, err = w.doStep(ctx, rec, st)
		return err
	})
	s := rec.Step(st)
	s.Ended = w.now()
	l := w.recLog(rec)
	if err != nil {
		s.Status, s.Error = StatusFailed, err.Error()
		_ = w.recs.Save(context.WithoutCancel(ctx), rec)
		l.Error().Str("step", st).Err(err).Msg("failover step failed: " + st)
		w.publish(ctx, w.failoverEvent(events.KindFailoverStep, rec, s))
		return err
	}
	s.Status, s.Detail = status, detail
	if err := w.recs.Save(ctx, rec); err != nil {
		return err
	}
	w.m.Steps.WithLabelValues(st).Observe(s.Ended.Sub(start).Seconds())
	l.Info().Str("step", st).Str("status", status).Str("detail", detail).Dur("took", s.Ended.Sub(start)).Msg("failover step " + st + ": " + status)
	w.publish(ctx, w.failoverEvent(events.KindFailoverStep, rec, s))
	if w.hooks.AfterStep != nil {
		if err := w.hooks.AfterStep(rec, st); err != nil {
			return err
		}
	}
	return nil
}

func retryable(err error) bool {
	return !errors.Is(err, ErrRouteConflict) && !errors.Is(err, redisops.ErrEpochAhead) && !errors.Is(err, ErrRecordTaken) &&
		!errors.Is(err, ErrCrashed) && !errors.Is(err, redisops.ErrNotCaughtUp)
}

// doStep performs one step idempotently, returning its detail and status.
func (w *Worker) doStep(ctx context.Context, rec *Record, st string) (string, string, error) {
	switch st {
	case StepFence:
		if rec.oldDown != "" {
			return fmt.Sprintf("old primary %s unreachable at decision (%s): the reconcile loop demotes it if it comes back", rec.OldPrimary, rec.oldDown), StatusSkipped, nil
		}
		n := w.ops.Check(ctx, rec.OldPrimary)
		switch {
		case !n.Reachable:
			return fmt.Sprintf("old primary %s unreachable (%s): the reconcile loop demotes it if it comes back", rec.OldPrimary, n.Err), StatusSkipped, nil
		case n.Loading:
			return fmt.Sprintf("old primary %s is loading: the reconcile loop demotes it when it answers", rec.OldPrimary), StatusSkipped, nil
		case n.Role != "master":
			return fmt.Sprintf("old primary %s is already a replica (of %s)", rec.OldPrimary, n.MasterAddr), StatusSkipped, nil
		}
		if rec.FenceSaved == nil {
			v, err := w.ops.MinReplicas(ctx, rec.OldPrimary)
			if err != nil {
				return "", "", err
			}
			if v >= redisops.FenceMinReplicas {
				v = w.set.MinReplicasToWrite
			}
			rec.FenceSaved = &v
			if err := w.recs.Save(ctx, rec); err != nil {
				return "", "", err
			}
		}
		if err := w.ops.SetMinReplicas(ctx, rec.OldPrimary, redisops.FenceMinReplicas); err != nil {
			return "", "", err
		}
		return fmt.Sprintf("old primary %s fenced: min-replicas-to-write %d -> %d, it refuses every write", rec.OldPrimary, *rec.FenceSaved, redisops.FenceMinReplicas), StatusDone, nil

	case StepPauseWrites:
		if err := w.ops.PauseWrites(ctx, rec.OldPrimary, w.set.PauseFor); err != nil {
			return "", "", err
		}
		return fmt.Sprintf("CLIENT PAUSE %s WRITE on %s", w.set.PauseFor, rec.OldPrimary), StatusDone, nil

	case StepCatchUp:
		off, err := w.ops.WaitCaughtUp(ctx, rec.OldPrimary, rec.NewPrimary, w.set.CatchUpTimeout)
		if err != nil {
			return "", "", err
		}
		rec.LossWindow = 0
		return fmt.Sprintf("%s caught up with %s at offset %d", rec.NewPrimary, rec.OldPrimary, off), StatusDone, nil

	case StepPromote:
		n := w.ops.Check(ctx, rec.NewPrimary)
		if !n.Reachable {
			return "", "", fmt.Errorf("candidate %s unreachable: %s", rec.NewPrimary, n.Err)
		}
		if rec.PromotedOffset == 0 {
			rec.PromotedOffset = n.Offset
		}
		detail := fmt.Sprintf("%s was already a primary (offset %d)", rec.NewPrimary, n.Offset)
		if n.Role != "master" {
			if err := w.ops.Promote(ctx, rec.NewPrimary); err != nil {
				return "", "", err
			}
			detail = fmt.Sprintf("REPLICAOF NO ONE on %s at offset %d", rec.NewPrimary, n.Offset)
		}
		if rec.Phases.Promoted.IsZero() {
			rec.Phases.Promoted = w.now()
		}
		return detail, StatusDone, nil

	case StepStampEpoch:
		if err := w.ops.StampEpoch(ctx, rec.NewPrimary, rec.ToEpoch); err != nil {
			return "", "", err
		}
		return fmt.Sprintf("SET %s %d on %s", redisops.EpochKey, rec.ToEpoch, rec.NewPrimary), StatusDone, nil

	case StepRepoint:
		return w.repoint(ctx, rec)

	case StepRoute:
		return w.route(ctx, rec)

	case StepUnpauseWrites:
		if err := w.ops.UnpauseWrites(ctx, rec.OldPrimary); err != nil {
			return "", "", err
		}
		return "CLIENT UNPAUSE on " + rec.OldPrimary, StatusDone, nil

	case StepVerify:
		deadline := time.Now().Add(w.set.VerifyTimeout)
		// When no other node of the shard answers, no replica can acknowledge within
		// the timeout: one attempt, then degraded at once, so that the lease is free
		// for the reconcile loop to attach a spare (and verify later).
		alone := true
		for _, n := range w.ops.CheckAll(ctx, append(append([]string(nil), rec.Others...), rec.OldPrimary)) {
			alone = alone && !n.Reachable
		}
		if alone {
			deadline = time.Now()
		}
		for {
			n, err := w.ops.Verify(ctx, rec.NewPrimary, rec.ID, 250*time.Millisecond)
			if err == nil && n >= 1 {
				rec.Verified, rec.Degraded = true, ""
				rec.Phases.Verified = w.now()
				return fmt.Sprintf("a write on %s was acknowledged by %d replica(s)", rec.NewPrimary, n), StatusDone, nil
			}
			if ctx.Err() != nil || !time.Now().Before(deadline) {
				why := "no replica acknowledged within " + w.set.VerifyTimeout.String()
				if err != nil {
					why += ": " + err.Error()
				}
				if alone {
					why = "no other node of the shard answers"
					if err != nil {
						why += ": " + err.Error()
					}
				}
				rec.Degraded = why + " (no replica attached yet; verified again when one joins)"
				return rec.Degraded, StatusDegraded, nil
			}
			select {
			case <-ctx.Done():
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	return "", "", fmt.Errorf("unknown step %q", st)
}

// repoint makes the other replicas, and the old primary when it answers, replicas of
// the new primary, never at the cost of data the new primary does not have.
func (w *Worker) repoint(ctx context.Context, rec *Record) (string, string, error) {
	p := w.ops.Check(ctx, rec.NewPrimary)
	if !p.IsMaster() {
		return "", "", fmt.Errorf("new primary %s does not answer as master (%s%s)", rec.NewPrimary, p.Role, p.Err)
	}
	targets := append([]string(nil), rec.Others...)
	if rec.OldPrimary != rec.NewPrimary {
		targets = append(targets, rec.OldPrimary)
	}
	if rec.oldDown != "" && len(targets) > 0 && targets[len(targets)-1] == rec.OldPrimary {
		targets = targets[:len(targets)-1] // down at decision: the reconcile loop rejoins it
	}
	var notes []string
	checked := w.ops.CheckAll(ctx, targets)
	for i, addr := range targets {
		if addr == rec.NewPrimary {
			continue
		}
		n := checked[i]
		old := addr == rec.OldPrimary
		switch {
		case !n.Reachable:
			notes = append(notes, addr+" unreachable: left to the reconcile loop")
			continue
		case n.Role == "slave" && n.MasterAddr == rec.NewPrimary && !n.Parked:
			notes = append(notes, addr+" already follows")
		default:
			if ok, why := decide.SafeToFollow(n, p); !ok {
				w.recLog(rec).Error().Str("node", addr).Str("why", why).Msg("NOT repointing a node: it would lose data")
				w.m.Reconciles.WithLabelValues("refused_wipe").Inc()
				notes = append(notes, "NOT repointing "+addr+": "+why)
				continue
			}
			if err := w.ops.ReplicaOf(ctx, addr, rec.NewPrimary); err != nil {
				return "", "", err
			}
			notes = append(notes, addr+" -> "+rec.NewPrimary)
		}
		if old && rec.FenceSaved != nil {
			if err := w.ops.SetMinReplicas(ctx, addr, *rec.FenceSaved); err != nil {
				return "", "", err
			}
			notes = append(notes, fmt.Sprintf("%s min-replicas-to-write restored to %d", addr, *rec.FenceSaved))
		}
	}
	if len(notes) == 0 {
		notes = append(notes, "no other node")
	}
	return strings.Join(notes, "; "), StatusDone, nil
}

// route advances the topology, conditional on the revision read at decision time, and
// announces it.
func (w *Worker) route(ctx context.Context, rec *Record) (string, string, error) {
	cur, rev, err := w.topo.Get(ctx, rec.Shard)
	if err != nil {
		return "", "", err
	}
	if cur.Epoch >= rec.ToEpoch {
		if cur.FailoverID == rec.ID {
			if rec.Phases.Routed.IsZero() {
				rec.Phases.Routed = w.now()
			}
			return fmt.Sprintf("topology already at epoch %d with %s", cur.Epoch, cur.Primary), StatusDone, nil
		}
		return "", "", fmt.Errorf("%w: the shard is at epoch %d (primary %s, failover %s)", ErrRouteConflict, cur.Epoch, cur.Primary, cur.FailoverID)
	}
	if rev != rec.TopologyRevision {
		return "", "", fmt.Errorf("%w: revision %d at decision, %d now", ErrRouteConflict, rec.TopologyRevision, rev)
	}
	next := cur
	next.Epoch, next.Primary = rec.ToEpoch, rec.NewPrimary
	next.Replicas = nil
	for _, r := range cur.Replicas {
		if r != rec.NewPrimary {
			next.Replicas = append(next.Replicas, r)
		}
	}
	if rec.OldPrimary != rec.NewPrimary {
		next.Replicas = append(next.Replicas, rec.OldPrimary)
	}
	now := w.now()
	next.UpdatedAt, next.UpdatedBy, next.Reason = now.UTC(), "lazarus "+w.owner, string(rec.Reason)
	next.FailoverID, next.CorrelationID = rec.ID, rec.CorrelationID
	if _, err := w.topo.Advance(ctx, cur, rec.TopologyRevision, next); err != nil {
		if errors.Is(err, kv.ErrConflict) {
			return "", "", fmt.Errorf("%w: %v", ErrRouteConflict, err)
		}
		return "", "", err
	}
	rec.Phases.Routed = now
	w.forgetKnown(rec.Shard)
	reason := "failover"
	if rec.Planned {
		reason = "switchover"
	}
	tc := &events.TopologyChanged{Primary: next.Primary, Replicas: next.Replicas, PreviousPrimary: rec.OldPrimary, Reason: reason, FailoverID: rec.ID}
	w.publish(ctx, w.event(events.KindTopologyChanged, rec.Shard, rec.CorrelationID, rec.ToEpoch, tc))
	return fmt.Sprintf("topology %s epoch %d -> %d: primary %s, replicas %v", rec.Shard, rec.FromEpoch, rec.ToEpoch, next.Primary, next.Replicas), StatusDone, nil
}

// fail ends a failover whose step failed: rolled back when nothing was promoted yet,
// aborted otherwise; the alert is re-evaluated either way.
func (w *Worker) fail(ctx context.Context, rec *Record, st string, cause error) error {
	ctx = context.WithoutCancel(ctx)
	outcome := decide.StepFailed
	if errors.Is(cause, ErrRouteConflict) {
		outcome = decide.RouteConflict
	}
	if !rec.finished(StepPromote) {
		w.undo(ctx, rec)
	}
	rec.State, rec.Outcome, rec.Finished = StateAborted, string(outcome), w.now()
	rec.Detail = fmt.Sprintf("step %s failed: %v", st, cause)
	if err := w.recs.Save(ctx, rec); err != nil {
		return err
	}
	w.recLog(rec).Error().Str("step", st).Err(cause).Str("reason", string(outcome)).Msg("failover aborted")
	w.m.Failovers.WithLabelValues("aborted").Inc()
	w.publish(ctx, w.failoverEvent(events.KindFailoverAborted, rec, nil))
	w.requeue(rec)
	return nil
}

// undo reverts what a failover did before its promotion: the fence and the write pause.
func (w *Worker) undo(ctx context.Context, rec *Record) {
	l := w.recLog(rec)
	if rec.started(StepFence) && rec.FenceSaved != nil {
		if err := w.ops.SetMinReplicas(ctx, rec.OldPrimary, *rec.FenceSaved); err != nil {
			l.Warn().Err(err).Msg("could not unfence the old primary; the reconcile loop retries")
		}
	}
	if rec.started(StepPauseWrites) {
		if err := w.ops.UnpauseWrites(ctx, rec.OldPrimary); err != nil {
			l.Warn().Err(err).Msg("could not unpause writes on the old primary; the pause times out on its own")
		}
	}
}

// requeue makes an unplanned, automatic failover's alert pending again, so the next
// reconcile pass decides afresh.
func (w *Worker) requeue(rec *Record) {
	if rec.Planned || rec.Reason == decide.ManualFailover || rec.AlertCode == "" {
		return
	}
	info := alertInfo{shard: rec.Shard, detected: rec.Phases.Detected, alerted: rec.Phases.Alerted,
		a: decide.Alert{Kind: events.KindAlertOpened, Code: events.AlertCode(rec.AlertCode), Epoch: rec.FromEpoch,
			IncidentID: rec.IncidentID, CorrelationID: rec.CorrelationID, Primary: rec.OldPrimary}}
	w.setPending(rec.Shard, info, false, "requeued/"+rec.ID)
}

func (w *Worker) complete(ctx context.Context, rec *Record) error {
	rec.State, rec.Finished = StateCompleted, w.now()
	result := "completed"
	if !rec.Verified {
		result = "degraded"
	}
	rec.Outcome = result
	if err := w.recs.Save(ctx, rec); err != nil {
		return err
	}
	w.m.Failovers.WithLabelValues(result).Inc()
	w.m.observePhases(rec.Phases)
	l := w.recLog(rec)
	ev := l.Warn()
	if !rec.Verified {
		ev = l.Error().Str("degraded", rec.Degraded)
	}
	ev.Str("old_primary", rec.OldPrimary).Str("new_primary", rec.NewPrimary).Uint64("from_epoch", rec.FromEpoch).
		Uint64("to_epoch", rec.ToEpoch).Int64("loss_window_bytes", rec.LossWindow).Dur("decided_to_routed", rec.Phases.Routed.Sub(rec.Phases.Decided)).
		Msg("failover " + result)
	w.publish(ctx, w.failoverEvent(events.KindFailoverCompleted, rec, nil))
	w.dropPending(rec.Shard)
	if err := w.recs.Prune(ctx, rec.Shard, w.set.KeepRecords); err != nil {
		l.Warn().Err(err).Msg("pruning old failover records failed")
	}
	return nil
}

// recoverShard finishes or rolls back failovers of the shard left unfinished by a
// worker that died (its lease expired, so we hold it now).
func (w *Worker) recoverShard(ctx context.Context, shard string) error {
	recs, err := w.recs.List(ctx, shard)
	if err != nil {
		return fmt.Errorf("reading failover records of %s: %w", shard, err)
	}
	for _, rec := range recs {
		if !rec.Unfinished() {
			continue
		}
		w.m.Reconciles.WithLabelValues("recover_failover").Inc()
		l := w.recLog(rec)
		if rec.started(StepPromote) {
			l.Warn().Str("dead_worker", rec.Worker).Msg("finishing a failover left unfinished by a worker that stopped after its promotion began")
			rec.Worker = w.owner
			if err := w.run(ctx, rec); err != nil {
				return err
			}
			continue
		}
		l.Warn().Str("dead_worker", rec.Worker).Msg("rolling back a failover left unfinished before its promotion; the alert is re-evaluated")
		w.undo(ctx, rec)
		rec.State, rec.Outcome, rec.Finished = StateRolledBack, string(decide.RolledBack), w.now()
		if err := w.recs.Save(ctx, rec); err != nil {
			return err
		}
		w.m.Failovers.WithLabelValues("rolled_back").Inc()
		w.publish(ctx, w.failoverEvent(events.KindFailoverAborted, rec, nil))
		w.requeue(rec)
	}
	return nil
}
