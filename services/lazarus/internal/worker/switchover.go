package worker

import (
	"context"
	"errors"
	"fmt"
	"sort"

	"github.com/heartline/heartline/services/lazarus/internal/decide"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/topology"
)

// Switchover moves the shard's primary role to a replica with zero loss: writes are
// paused on the primary (CLIENT PAUSE WRITE), the target catches up to the primary's
// offset, is promoted, stamped and routed, the old primary becomes its replica, and
// writes resume (they fail with READONLY on the old node and clients retry on the new
// one). to is the target address ("" picks the attached replica with the highest
// offset, then the topology order). It runs under the shard lease as a recorded
// failover with Planned set, and returns the finished record.
func (w *Worker) Switchover(ctx context.Context, shard, to string) (*Record, error) {
	var rec *Record
	err := w.withLease(ctx, shard, w.set.LeaseWait, "switchover", func(ctx context.Context) error {
		cur, rev, err := w.topo.Get(ctx, shard)
		if errors.Is(err, topology.ErrUnknownShard) {
			return fmt.Errorf("%w: %w", ErrUnknownShard, err)
		}
		if err != nil {
			return err
		}
		nodes := w.ops.CheckAll(ctx, cur.Nodes())
		p, reps := nodes[0], nodes[1:]
		if !p.IsMaster() {
			return fmt.Errorf("%w: primary %s does not answer as master (%s%s); use `lazarus failover --shard %s`", ErrSwitchover, p.Addr, p.Role, p.Err, shard)
		}
		type cand struct {
			n    decide.Node
			prio int
		}
		var ok []cand
		var why []string
		for i, r := range reps {
			switch {
			case to != "" && r.Addr != to:
				continue
			case !r.Reachable:
				why = append(why, r.Addr+" unreachable: "+r.Err)
			case r.Role != "slave" || r.MasterAddr != p.Addr || r.Parked || !r.LinkUp || r.SyncInProgress:
				why = append(why, fmt.Sprintf("%s is not an attached, synced replica of %s", r.Addr, p.Addr))
			default:
				ok = append(ok, cand{r, i})
			}
		}
		if to != "" && !cur.Has(to) {
			return fmt.Errorf("%w: %s is not a replica of shard %s (%v)", ErrSwitchover, to, shard, cur.Replicas)
		}
		if len(ok) == 0 {
			return fmt.Errorf("%w: no replica can take over: %v", ErrSwitchover, why)
		}
		sort.SliceStable(ok, func(i, j int) bool {
			if ok[i].n.Offset != ok[j].n.Offset {
				return ok[i].n.Offset > ok[j].n.Offset
			}
			return ok[i].prio < ok[j].prio
		})
		now := w.now()
		out := decide.Outcome{Decision: events.DecisionFailover, Reason: decide.PlannedSwitchover, Candidate: ok[0].n.Addr,
			Detail: fmt.Sprintf("planned switchover from %s to %s", p.Addr, ok[0].n.Addr), LossWindow: 0, Bound: p.AckedOffset}
		info := alertInfo{shard: shard, detected: now, alerted: now}
		rec = w.newRecord(info, cur, rev, out, now)
		rec.Planned = true
		if err := w.recs.Create(ctx, rec); err != nil {
			return err
		}
		w.m.Decisions.WithLabelValues(string(out.Decision), string(out.Reason)).Inc()
		w.recLog(rec).Warn().Str("old_primary", rec.OldPrimary).Str("new_primary", rec.NewPrimary).Msg("switchover started")
		w.publish(ctx, w.failoverEvent(events.KindFailoverStarted, rec, rec.Step(StepDecided)))
		return w.run(ctx, rec)
	})
	if err != nil {
		return rec, err
	}
	if rec != nil && rec.State != StateCompleted {
		return rec, fmt.Errorf("%w: %s", ErrSwitchover, rec.Detail)
	}
	return rec, nil
}

// Failover forces a failover of shard, skipping the holds (pause, flapping, cooldown,
// fleet limit) but not the health check: a primary that lazarus reaches as a healthy
// master is switched with Switchover instead. It returns the decision taken.
func (w *Worker) Failover(ctx context.Context, shard, by string) (decide.Outcome, *Record, error) {
	var out decide.Outcome
	var rec *Record
	now := w.now()
	id := events.NewID()
	info := alertInfo{shard: shard, detected: now, alerted: now,
		a: decide.Alert{Kind: events.KindAlertOpened, Code: events.AlertPrimaryDown, IncidentID: "manual-" + id, CorrelationID: id}}
	err := w.withLease(ctx, shard, w.set.LeaseWait, "manual failover by "+by, func(ctx context.Context) error {
		if err := w.evaluate(ctx, info, true, true); err != nil {
			return err
		}
		recs, err := w.recs.List(ctx, shard)
		if err != nil {
			return err
		}
		for _, r := range recs {
			if r.IncidentID == info.a.IncidentID {
				rec = r
			}
		}
		return nil
	})
	w.dropPending(shard)
	if err != nil {
		return out, rec, err
	}
	if rec == nil {
		return out, nil, fmt.Errorf("%w: see `lazarus events --shard %s` for the decision", ErrNoFailover, shard)
	}
	out.Decision, out.Reason, out.Detail = events.DecisionFailover, rec.Reason, rec.Detail
	if rec.State != StateCompleted {
		out.Decision = events.DecisionAbort
		return out, rec, fmt.Errorf("%w: %s: %s", ErrNoFailover, rec.Outcome, rec.Detail)
	}
	return out, rec, nil
}
