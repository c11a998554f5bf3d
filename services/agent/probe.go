package agent

import (
	"context"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/stream"
)

// replicaResult is one probe of the replica.
type replicaResult struct {
	ok      bool
	err     error
	info    redisinfo.Node
	latency time.Duration
	drift   []events.ConfigDrift
	driftOK bool // a drift check ran and succeeded
}

// primaryResult is one probe of the primary.
type primaryResult struct {
	addr    string
	ran     bool
	ok      bool // answered PING within the probe timeout
	err     error
	latency time.Duration
	info    redisinfo.Node
	infoOK  bool
	drift   []events.ConfigDrift
	driftOK bool
}

// cycle is one probe cycle: probe both nodes at once, decide, act, queue a heartbeat.
func (a *Agent) cycle(ctx context.Context) {
	started := time.Now()
	defer func() {
		a.lastCycle.Store(time.Now().UnixNano())
		a.m.cycle.Observe(time.Since(started).Seconds())
	}()
	a.resolvePrimary()
	a.mu.Lock()
	prim, cli := a.st.primary, a.primCli
	a.st.sinceDrift++
	due := len(a.cfg.desired) > 0 && a.st.sinceDrift >= a.cfg.DriftEvery
	dueP := len(a.cfg.desired) > 0 && (due || a.st.driftDueP) && !a.addrs.same(prim, a.cfg.Replica)
	dueR := len(a.cfg.desired) > 0 && (due || a.st.driftDueR)
	if due {
		a.st.sinceDrift = 0
	}
	a.st.sincePark++
	parkDue := a.cfg.Freeze && a.st.sincePark >= a.cfg.DriftEvery
	a.mu.Unlock()
	if parkDue {
		_ = a.checkPark(ctx) // recorded in the state, logged on change
	}

	var rp replicaResult
	var pp primaryResult
	var wg sync.WaitGroup
	if cli != nil {
		wg.Add(1)
		go func() { defer wg.Done(); pp = a.probePrimary(ctx, cli, dueP) }()
	}
	rp = a.probeReplica(ctx, dueR)
	wg.Wait()
	if cli == nil && rp.ok {
		// No primary known yet: the replica just told us which one it follows.
		a.learnMaster(rp.info)
		a.resolvePrimary()
		a.mu.Lock()
		prim, cli = a.st.primary, a.primCli
		a.mu.Unlock()
		if cli != nil {
			pp = a.probePrimary(ctx, cli, false)
		}
	}
	if ctx.Err() != nil {
		return
	}
	if prim == "" {
		a.mu.Lock()
		if time.Since(a.st.noPrimaryAt) > time.Minute {
			a.st.noPrimaryAt = time.Now()
			a.log.Warn().Bool("replica_reachable", rp.ok).Str("role", rp.info.Role).Bool("parked", a.cfg.park.Holds(rp.info)).
				Msg("no heartbeat: primary address unknown (set -primary, seed the topology, or point the replica at its primary)")
		}
		a.mu.Unlock()
		return
	}
	hb := a.decide(ctx, started, rp, pp)
	a.emit(started, hb)
}

func (a *Agent) probeReplica(ctx context.Context, drift bool) replicaResult {
	var r replicaResult
	c := a.replica.get()
	pctx, cancel := context.WithTimeout(ctx, a.cfg.ProbeTimeout)
	defer cancel()
	t0 := time.Now()
	var info *redis.StringCmd
	var cfgs []*redis.MapStringStringCmd
	_, err := c.Pipelined(pctx, func(p redis.Pipeliner) error {
		info = p.Info(pctx, "server", "replication", "keyspace")
		if drift {
			cfgs = queueConfigGets(pctx, p, a.cfg.desired)
		}
		return nil
	})
	r.latency = time.Since(t0)
	if info.Err() == nil {
		r.info, r.err = redisinfo.Parse(info.Val())
		r.ok = r.err == nil
	} else {
		r.err = info.Err()
		a.replica.failed(c, r.err)
	}
	if drift && r.ok {
		r.drift, err = driftFrom(a.cfg.Replica, a.cfg.desired, cfgs)
		r.driftOK = err == nil
		if err != nil {
			a.m.driftErrors.Inc()
			a.log.Warn().Err(err).Msg("configuration drift check of the replica failed (CONFIG GET)")
		}
	}
	a.m.probes.WithLabelValues(targetReplica, classify(r.err)).Inc()
	a.m.probeLatency.WithLabelValues(targetReplica).Observe(r.latency.Seconds())
	return r
}

func (a *Agent) probePrimary(ctx context.Context, n *nodeClient, drift bool) primaryResult {
	r := primaryResult{addr: n.addr, ran: true}
	c := n.get()
	pctx, cancel := context.WithTimeout(ctx, a.cfg.ProbeTimeout)
	defer cancel()
	t0 := time.Now()
	var ping *redis.StatusCmd
	var info *redis.StringCmd
	var cfgs []*redis.MapStringStringCmd
	_, _ = c.Pipelined(pctx, func(p redis.Pipeliner) error {
		ping = p.Ping(pctx)
		info = p.Info(pctx, "server", "replication", "keyspace")
		if drift {
			cfgs = queueConfigGets(pctx, p, a.cfg.desired)
		}
		return nil
	})
	r.latency = time.Since(t0)
	r.err = ping.Err()
	r.ok = r.err == nil
	if info.Err() == nil {
		var err error
		r.info, err = redisinfo.Parse(info.Val())
		r.infoOK = err == nil
		if r.err == nil && err != nil {
			r.err, r.ok = err, false
		}
	}
	if r.err != nil {
		n.failed(c, r.err)
	}
	if drift && r.infoOK {
		var err error
		r.drift, err = driftFrom(n.addr, a.cfg.desired, cfgs)
		r.driftOK = err == nil
		if err != nil {
			a.m.driftErrors.Inc()
			a.log.Debug().Err(err).Str("primary", n.addr).Msg("configuration drift check of the primary failed (CONFIG GET)")
		}
	}
	a.m.probes.WithLabelValues(targetPrimary, classify(r.err)).Inc()
	a.m.probeLatency.WithLabelValues(targetPrimary).Observe(r.latency.Seconds())
	return r
}

// learnMaster remembers the primary the replica follows (for the fallback source).
func (a *Agent) learnMaster(n redisinfo.Node) {
	if n.Role != "slave" || a.cfg.park.Holds(n) || n.MasterHost == "" {
		return
	}
	a.mu.Lock()
	a.st.masterAddr = n.MasterAddr()
	a.mu.Unlock()
}

// action is what a probe cycle decided to do to the replica.
type action int

const (
	actNone action = iota
	actPark
	actUnpark
)

// decide folds the probe results into the state, computes the flags, parks or unparks
// the replica as the results call for, and returns the heartbeat payload.
func (a *Agent) decide(ctx context.Context, started time.Time, rp replicaResult, pp primaryResult) *events.Heartbeat {
	if rp.ok {
		a.learnMaster(rp.info)
	}
	now := time.Now()
	flags := map[events.Flag]bool{}
	var act action
	var parkReason, parkDetail string
	var verifyDue *verifyInfo

	a.mu.Lock()
	st := &a.st
	rep := rp.info
	selfPrimary := a.addrs.same(st.primary, a.cfg.Replica)
	parked := a.cfg.park.Holds(rep)
	follows := rp.ok && rep.Role == "slave" && !parked && a.addrs.same(rep.MasterAddr(), st.primary)
	if rp.ok {
		if st.repOK && rep.RunID != st.rep.RunID {
			// The replica itself restarted: what was seen of its link is history.
			st.linkSeenUp, st.linkedReplID = false, ""
			a.log.Warn().Str("previous_run_id", st.rep.RunID).Str("run_id", rep.RunID).Int64("keys", rep.Keys).
				Msg("replica restarted (run id changed)")
		}
		st.rep, st.repOK = rep, true
		// What Redis says about parking wins, unless a park or unpark of ours happened
		// after this INFO was read.
		if !started.Before(st.opAt) {
			switch {
			case parked && !st.frozen:
				st.frozen, st.healthySince, st.leftAlone = true, time.Time{}, ""
				st.park = parkInfo{reason: "found_parked", at: now, primary: st.primary, epoch: st.epoch}
				a.m.frozen.Set(1)
				a.log.Warn().Str("primary", st.primary).Uint64(logging.FieldEpoch, st.epoch).
					Str("parked_at", rep.MasterAddr()).
					Msg("replica found parked (it follows a park address): frozen by an earlier run of the agent or by hand; the agent unparks it only when a partial resync is certain")
			case !parked && st.frozen:
				st.frozen, st.verify = false, nil
				a.m.frozen.Set(0)
				a.log.Info().Str("follows", rep.MasterAddr()).Str("role", rep.Role).
					Msg("replica is no longer parked: repointed by lazarus or an operator")
			}
		}
		if follows && rep.LinkUp && !rep.SyncInProgress {
			st.linkSeenUp, st.linkedReplID = true, rep.ReplID
		}
	} else if st.repOK {
		rep = st.rep // judge the primary against the last known replica state
	}

	if pp.ran {
		switch {
		case pp.ok && st.primaryFails > 0:
			a.log.Info().Str("primary", st.primary).Int("failed_probes", st.primaryFails).
				Dur("down_for", now.Sub(st.primaryFailedAt).Round(time.Millisecond)).Msg("primary answers probes again")
			st.primaryFails = 0
		case !pp.ok:
			if st.primaryFails == 0 {
				st.primaryFailedAt = started
				a.log.Warn().Str("primary", st.primary).Str("result", classify(pp.err)).AnErr("probe_error", pp.err).
					Msg("primary probe failed")
			}
			st.primaryFails++
		}
	}
	switch {
	case rp.ok && st.replicaFails > 0:
		a.log.Info().Int("failed_probes", st.replicaFails).Msg("replica answers probes again")
		st.replicaFails = 0
	case !rp.ok:
		if st.replicaFails == 0 {
			a.log.Warn().Str("result", classify(rp.err)).AnErr("probe_error", rp.err).Msg("replica probe failed")
		}
		st.replicaFails++
	}

	// The primary's identity and the immediate flags.
	var restarted, regressed, sameIncarnation bool
	if pp.infoOK && !selfPrimary {
		p := pp.info
		restarted = st.runID != "" && p.RunID != st.runID
		sameIncarnation = st.runID == "" || p.RunID == st.runID
		offsetBack := !restarted && st.replID != "" && p.ReplID == st.replID && p.Offset < st.offset
		// A replica streaming from this primary right now holds nothing it lacks: both
		// INFOs are read at once, so under write load the replica's offset is often read
		// a moment later than the primary's and is the larger. Regression shows as a
		// broken link (the primary restarted) before any resync could wipe the replica.
		streaming := follows && rep.LinkUp && !rep.SyncInProgress && p.ReplID == rep.ReplID
		regressed = offsetBack || (!streaming && a.regressedLocked(p, rep, rp.ok || st.repOK))
		if restarted {
			st.driftDueP = true
			a.log.Warn().Str("primary", st.primary).Str("previous_run_id", st.runID).Str("run_id", p.RunID).
				Int64("uptime_seconds", p.UptimeSec).Int64("keys", p.Keys).Int64("offset", p.Offset).
				Msg("primary restarted (run id changed)")
		}
		if p.Role == "slave" {
			flags[events.FlagPrimaryRoleChanged] = true
		}
		st.runID, st.replID, st.offset = p.RunID, p.ReplID, p.Offset
	}
	if restarted {
		flags[events.FlagPrimaryRestarted] = true
	}
	if regressed {
		flags[events.FlagPrimaryDataRegressed] = true
	}

	// Park: the replica's link to the guarded primary is down, and the primary is not
	// verifiably the same healthy incarnation it can partially resync from; or the
	// primary regressed (a resync would wipe the replica).
	if a.cfg.Freeze && !st.frozen && !st.named && !selfPrimary && follows && !rep.LinkUp && rep.Keys > 0 {
		healthy := pp.ok && pp.infoOK && sameIncarnation && !restarted && canContinue(pp.info, rep)
		// A primary that answers as something else is evidence at once; one that does
		// not answer is evidence once refused, or after two probes in a row failed (a
		// single slow probe on a loaded host is not).
		silent := pp.ran && !pp.infoOK
		evidence := !healthy && (!silent || classify(pp.err) == resultRefused || st.primaryFails >= 2)
		switch {
		case regressed:
			act, parkReason = actPark, reasonRegressed
			parkDetail = "the primary has less data than the replica under another replication id; a resync would wipe the replica"
		case st.linkSeenUp && evidence:
			act, parkReason = actPark, reasonLinkDown
			parkDetail = "the replica's link to the primary is down and the primary is " + describePrimary(pp, restarted)
		}
	}

	// Unpark: only when a partial resync is certain, continuously for unfreeze-after.
	if st.frozen && act == actNone {
		why := ""
		switch {
		case st.named:
			why = "the topology names this replica as the shard's primary"
		case st.primary != st.park.primary:
			why = "the topology names another primary (" + st.primary + "); lazarus repoints the replica"
		case st.epoch != st.park.epoch:
			why = "the shard's epoch changed (" + strconv.FormatUint(st.park.epoch, 10) + " to " + strconv.FormatUint(st.epoch, 10) + "); lazarus repoints the replica"
		}
		switch {
		case why != "":
			st.healthySince = time.Time{}
			if st.leftAlone != why {
				st.leftAlone = why
				a.log.Info().Str("reason", why).Msg("leaving the parked replica alone")
			}
		case rp.ok && pp.ok && pp.infoOK && pp.info.Role == "master" && !pp.info.Loading &&
			pp.info.ReplID == rep.ReplID && pp.info.Offset >= rep.Offset:
			if st.healthySince.IsZero() {
				st.healthySince = now
			} else if now.Sub(st.healthySince) >= a.cfg.UnfreezeAfter {
				act = actUnpark
			}
		default:
			st.healthySince = time.Time{}
		}
	}

	// Verification of the last unpark.
	if v := st.verify; v != nil {
		switch {
		case rp.ok && follows && rep.LinkUp && !rep.SyncInProgress:
			verifyDue = v
			st.verify = nil
		case now.After(v.deadline):
			st.verify = nil
			a.m.resyncs.WithLabelValues("timeout").Inc()
			a.log.Warn().Dur("after", now.Sub(v.at).Round(time.Millisecond)).
				Msg("unparked replica's link to the primary did not come up")
		}
	}

	// Drift.
	if pp.driftOK {
		st.primaryDrift, st.driftDueP = pp.drift, false
	}
	if rp.driftOK {
		st.replicaDrift, st.driftDueR = rp.drift, false
	}
	a.mu.Unlock()

	switch act {
	case actPark:
		if err := a.park(ctx, parkReason, parkDetail); err != nil {
			a.logParkErr(err, parkReason)
		}
	case actUnpark:
		if err := a.unpark(ctx); err != nil {
			a.log.Error().Err(err).Msg("unpark failed; retrying after unfreeze-after")
		}
	}
	if verifyDue != nil {
		a.verifyResync(ctx, verifyDue)
	}

	a.mu.Lock()
	if a.st.frozen {
		flags[events.FlagReplicationFrozen] = true
	}
	if a.st.parkGuardOff && a.cfg.Freeze {
		flags[events.FlagParkGuardOff] = true
	}
	drift := append(append([]events.ConfigDrift(nil), a.st.primaryDrift...), a.st.replicaDrift...)
	if len(drift) > 0 {
		flags[events.FlagConfigDrift] = true
	}
	frozen := a.st.frozen
	prevFlags := a.st.flags
	a.st.flags = flags
	prim := a.st.primary
	a.mu.Unlock()

	a.noteFlags(prevFlags, flags, drift)
	a.m.driftParams.Set(float64(len(drift)))
	hb := &events.Heartbeat{AgentStart: a.start, Interval: a.cfg.Interval, Drift: drift,
		Replica: replicaState(a.cfg.Replica, rp, frozen), Primary: primaryProbe(prim, pp)}
	for _, f := range allFlags {
		if flags[f] {
			hb.Flags = append(hb.Flags, f)
		}
	}
	return hb
}

// regressedLocked: the primary came back with less data than the replica holds, under
// a replication id the replica cannot continue from (a resync would wipe it), or with
// an offset below the replica's under the same replication id.
func (a *Agent) regressedLocked(p, r redisinfo.Node, repKnown bool) bool {
	if !repKnown || r.Keys == 0 || p.Role != "master" {
		return false // the replica holds nothing a resync could take away
	}
	if p.ReplID == r.ReplID {
		return p.Offset < r.Offset
	}
	if canContinue(p, r) {
		return false
	}
	// The replica's data came from this primary's lineage: it is still on the
	// replication id it had when last linked to it, or it is parked.
	lineage := (a.st.linkedReplID != "" && r.ReplID == a.st.linkedReplID) || a.cfg.park.Holds(r)
	return lineage && (p.Keys < r.Keys || p.Offset < r.Offset)
}

// canContinue reports whether replica r could partially resync from primary p: they
// share a replication id (either's current one or the other's previous one) and p is
// not behind.
func canContinue(p, r redisinfo.Node) bool {
	related := p.ReplID != "" && (p.ReplID == r.ReplID || p.ReplID == validID(r.ReplID2) || validID(p.ReplID2) == r.ReplID)
	return related && p.Offset >= r.Offset
}

func validID(id string) string {
	for _, c := range id {
		if c != '0' {
			return id
		}
	}
	return "\x00none"
}

func describePrimary(pp primaryResult, restarted bool) string {
	switch {
	case !pp.ran:
		return "not probed"
	case restarted:
		return "a new incarnation (run id changed)"
	case !pp.ok && pp.err != nil:
		return "not answering (" + classify(pp.err) + ": " + pp.err.Error() + ")"
	case pp.info.Loading:
		return "loading"
	case pp.info.Role != "master":
		return "not a master (role " + pp.info.Role + ")"
	default:
		return "on another replication history"
	}
}

// noteFlags logs and counts flags that appeared or cleared since the last heartbeat.
func (a *Agent) noteFlags(prev, cur map[events.Flag]bool, drift []events.ConfigDrift) {
	for _, f := range allFlags {
		on := cur[f]
		if on {
			a.m.flagActive.WithLabelValues(string(f)).Set(1)
		} else {
			a.m.flagActive.WithLabelValues(string(f)).Set(0)
		}
		switch {
		case on && !prev[f]:
			a.m.flagsRaised.WithLabelValues(string(f)).Inc()
			ev := a.log.Warn().Str("flag", string(f))
			if f == events.FlagConfigDrift {
				arr := zerologDrift(drift)
				ev = ev.Array("drift", arr)
			}
			if f != events.FlagReplicationFrozen && f != events.FlagPrimaryRestarted {
				ev.Msg("flag raised")
			}
		case !on && prev[f] && f != events.FlagPrimaryRestarted:
			a.log.Info().Str("flag", string(f)).Msg("flag cleared")
		}
	}
}

// emit queues the heartbeat of a probe cycle.
func (a *Agent) emit(started time.Time, hb *events.Heartbeat) {
	a.mu.Lock()
	shard, epoch := a.st.shard, a.st.epoch
	a.mu.Unlock()
	if shard == "" {
		return // a spare: no shard to report on (the guard still runs)
	}
	a.seq++
	a.beats.Store(a.seq)
	hb.Seq = a.seq
	e := events.New(events.KindHeartbeat, a.src, shard, hb)
	e.Time = started.UTC()
	e.Epoch = epoch
	data, err := events.Encode(e)
	if err != nil {
		a.log.Error().Err(err).Uint64("seq", hb.Seq).Msg("heartbeat does not encode; not published (a bug)")
		return
	}
	a.m.heartbeatSize.Observe(float64(len(data)))
	a.out.Add(stream.Message{Key: shard, ID: e.ID, Data: data})
}

func replicaState(addr string, rp replicaResult, frozen bool) events.ReplicaState {
	s := events.ReplicaState{Addr: addr, Reachable: rp.ok, Frozen: frozen, LastIOSeconds: -1}
	if !rp.ok {
		if rp.err != nil {
			s.Error = rp.err.Error()
		}
		return s
	}
	n := rp.info
	s.Role, s.MasterHost, s.MasterPort = n.Role, n.MasterHost, n.MasterPort
	s.LinkUp, s.LastIOSeconds, s.SyncInProgress = n.LinkUp, n.LastIOSeconds, n.SyncInProgress
	s.Offset, s.ReplID, s.ReplID2, s.Keys = n.Offset, n.ReplID, n.ReplID2, n.Keys
	return s
}

func primaryProbe(addr string, pp primaryResult) events.PrimaryProbe {
	p := events.PrimaryProbe{Addr: addr, OK: pp.ok, Latency: pp.latency}
	if pp.err != nil {
		p.Error = pp.err.Error()
	}
	if !pp.ran {
		p.Error = "not probed"
	}
	if pp.infoOK {
		n := pp.info
		p.RunID, p.Role, p.Offset, p.ReplID = n.RunID, n.Role, n.Offset, n.ReplID
		p.Loading, p.Keys, p.Replicas, p.UptimeSec = n.Loading, n.Keys, n.ConnectedReplicas, n.UptimeSec
	}
	return p
}
