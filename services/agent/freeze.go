package agent

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/redisinfo"
)

// Why the agent parked its replica (the label of agent_freezes_total).
const (
	reasonPrimaryGone      = "primary_gone"      // the watch connection broke and the primary does not answer
	reasonPrimaryRestarted = "primary_restarted" // the watch connection broke and a new incarnation answers
	reasonLinkDown         = "link_down"         // the replica's link dropped and the primary is not its healthy self
	reasonRegressed        = "primary_regressed" // the primary has less data under another replication id
)

// adminTimeout bounds the commands that change the replica's replication. They are
// not probes: a slow answer is still worth having.
func (a *Agent) adminTimeout() time.Duration { return max(a.cfg.ProbeTimeout, time.Second) }

// park freezes the replica's replication: REPLICAOF <park address> (127.0.0.1 1 by
// default). The replica keeps its data and its cached primary state and cannot resync
// from anything. It is never done when freezing is off, when the topology names the
// replica as primary, when the replica does not follow the guarded primary (lazarus
// repointed it), or when something accepts connections at the park address.
func (a *Agent) park(ctx context.Context, reason, detail string) error {
	a.opMu.Lock()
	defer a.opMu.Unlock()
	if !a.cfg.Freeze {
		return ErrFreezeDisabled
	}
	a.mu.Lock()
	frozen, named, prim, epoch := a.st.frozen, a.st.named, a.st.primary, a.st.epoch
	a.mu.Unlock()
	switch {
	case frozen:
		return ErrAlreadyParked
	case named || a.addrs.same(prim, a.cfg.Replica):
		return fmt.Errorf("not parking: %w", ErrNamedPrimary)
	case prim == "":
		return fmt.Errorf("not parking: %w", ErrNoPrimary)
	}
	ctx, cancel := context.WithTimeout(ctx, a.adminTimeout())
	defer cancel()
	c := a.replica.get()
	// A fresh look: lazarus may have repointed the replica since the last probe.
	info, err := redisinfo.Read(ctx, c)
	if err != nil {
		a.replica.failed(c, err)
		a.m.freezeErrors.WithLabelValues("park").Inc()
		return fmt.Errorf("not parking: reading the replica's INFO: %w", err)
	}
	if a.cfg.park.Holds(info) {
		a.mu.Lock()
		if !a.st.frozen {
			a.st.frozen, a.st.opAt, a.st.healthySince = true, time.Now(), time.Time{}
			a.st.park = parkInfo{reason: "found_parked", at: time.Now(), primary: prim, epoch: epoch}
		}
		a.mu.Unlock()
		a.m.frozen.Set(1)
		return ErrAlreadyParked
	}
	if info.Role != "slave" || !a.addrs.same(info.MasterAddr(), prim) {
		return fmt.Errorf("not parking: %w: role %s, follows %q, guarded primary %s", ErrNotFollowing, info.Role, info.MasterAddr(), prim)
	}
	if info.Keys == 0 {
		return fmt.Errorf("not parking: %w", ErrNothingToProtect)
	}
	t0 := time.Now()
	if err := a.checkPark(ctx); err != nil {
		return fmt.Errorf("not parking: %w", err)
	}
	pk := a.cfg.park.OrDefault()
	if err := c.SlaveOf(ctx, pk.Host, fmt.Sprint(pk.Port)).Err(); err != nil {
		a.replica.failed(c, err)
		a.m.freezeErrors.WithLabelValues("park").Inc()
		return fmt.Errorf("not parked: REPLICAOF %s %d: %w", pk.Host, pk.Port, err)
	}
	now := time.Now()
	a.mu.Lock()
	a.st.frozen, a.st.opAt, a.st.healthySince, a.st.leftAlone, a.st.verify = true, now, time.Time{}, "", nil
	a.st.linkSeenUp = false
	a.st.park = parkInfo{reason: reason, detail: detail, at: now, primary: prim, epoch: epoch}
	a.mu.Unlock()
	a.m.freezes.WithLabelValues(reason).Inc()
	a.m.frozen.Set(1)
	host, port, _ := net.SplitHostPort(prim)
	a.log.Warn().Str("reason", reason).Str("detail", detail).Str("primary", prim).Uint64(logging.FieldEpoch, epoch).
		Int64("replica_offset", info.Offset).Str("replica_repl_id", info.ReplID).Int64("replica_keys", info.Keys).
		Dur("took", now.Sub(t0)).
		Str("park_addr", pk.Addr()).Str("unfreeze_by_hand", fmt.Sprintf("redis-cli -h %s REPLICAOF %s %s  (only once the primary is known to hold this replica's data)", hostOf(a.cfg.Replica), host, port)).
		Msg("replica parked (REPLICATION_FROZEN): pointed at the park address on loopback, so it cannot resync from a primary that came back empty")
	return nil
}

// checkPark dials the park address (from the agent's network namespace: the same as
// the replica's when the agent runs beside it on one host or in one pod) and records
// whether parking is safe. It returns an error wrapping ErrParkUnsafe when something
// accepts connections there, and the cancellation when ctx ends.
func (a *Agent) checkPark(ctx context.Context) error {
	err := a.cfg.park.Check(ctx, a.cfg.ProbeTimeout)
	if err != nil && !errors.Is(err, redisinfo.ErrParkAnswers) {
		return err
	}
	off := err != nil
	a.mu.Lock()
	was := a.st.parkGuardOff
	a.st.parkGuardOff, a.st.sincePark = off, 0
	a.mu.Unlock()
	pk := a.cfg.park.OrDefault().Addr()
	if !off {
		a.m.parkGuardOff.Set(0)
		if was {
			a.log.Info().Str("park_addr", pk).Msg("the park address refuses connections again: the agent parks the replica when its primary dies")
		}
		return nil
	}
	a.m.parkAnswers.Inc()
	a.m.parkGuardOff.Set(1)
	if !was {
		a.log.Error().Err(err).Str("park_addr", pk).Str("flag", string(events.FlagParkGuardOff)).
			Msg("something accepts connections at the park address: the agent will not park this replica when its primary dies, because a replica parked there could resync from whatever listens (the restart-wipe guard is off); free that port or set -park-addr / HEARTLINE_PARK_ADDR to a loopback port where nothing listens")
	}
	return fmt.Errorf("%w: %w", ErrParkUnsafe, err)
}

// unpark points the parked replica back at the primary it was parked from, once a
// partial resync is certain (checked by the caller), and arms the verification.
func (a *Agent) unpark(ctx context.Context) error {
	a.opMu.Lock()
	defer a.opMu.Unlock()
	a.mu.Lock()
	frozen, named, prim, epoch, park := a.st.frozen, a.st.named, a.st.primary, a.st.epoch, a.st.park
	cli := a.primCli
	a.mu.Unlock()
	if !frozen || named || prim != park.primary || epoch != park.epoch {
		return nil // something changed since the decision: the next cycle decides again
	}
	host, port, err := net.SplitHostPort(prim)
	if err != nil {
		return fmt.Errorf("not unparking: primary %q: %w", prim, err)
	}
	ctx, cancel := context.WithTimeout(ctx, a.adminTimeout())
	defer cancel()
	v := &verifyInfo{}
	if cli != nil {
		v.fullBefore, v.partialBefore, v.statsOK = syncCounters(ctx, cli)
	}
	c := a.replica.get()
	if err := c.SlaveOf(ctx, host, port).Err(); err != nil {
		a.replica.failed(c, err)
		a.m.freezeErrors.WithLabelValues("unpark").Inc()
		return fmt.Errorf("not unparked: REPLICAOF %s %s: %w", host, port, err)
	}
	now := time.Now()
	v.at, v.deadline = now, now.Add(max(10*time.Second, 20*a.cfg.Interval))
	a.mu.Lock()
	parkedFor := now.Sub(a.st.park.at)
	a.st.frozen, a.st.opAt, a.st.healthySince, a.st.verify, a.st.leftAlone = false, now, time.Time{}, v, ""
	a.st.linkSeenUp = false
	a.mu.Unlock()
	a.m.unfreezes.Inc()
	a.m.frozen.Set(0)
	a.log.Info().Str("primary", prim).Uint64(logging.FieldEpoch, epoch).Dur("parked_for", parkedFor.Round(time.Millisecond)).
		Str("park_reason", park.reason).Dur("unfreeze_after", a.cfg.UnfreezeAfter).
		Msg("replica unparked: same primary and epoch, same replication id, offset at or above the replica's; expecting a partial resync")
	return nil
}

// verifyResync reports how the unparked replica resumed, from the primary's sync
// counters (INFO stats sync_partial_ok and sync_full).
func (a *Agent) verifyResync(ctx context.Context, v *verifyInfo) {
	a.mu.Lock()
	cli := a.primCli
	a.mu.Unlock()
	kind := "unknown"
	var full, partial int64
	ok := false
	if cli != nil && v.statsOK {
		cctx, cancel := context.WithTimeout(ctx, a.cfg.ProbeTimeout)
		full, partial, ok = syncCounters(cctx, cli)
		cancel()
	}
	switch {
	case !ok:
	case full > v.fullBefore:
		kind = "full"
	case partial > v.partialBefore:
		kind = "partial"
	}
	a.m.resyncs.WithLabelValues(kind).Inc()
	ev := a.log.Info()
	if kind == "full" {
		ev = a.log.Warn()
	}
	ev.Str("resync", kind).Dur("after", time.Since(v.at).Round(time.Millisecond)).
		Int64("primary_sync_full", full).Int64("primary_sync_partial_ok", partial).
		Msg("unparked replica is linked to its primary again")
}

// syncCounters reads sync_full and sync_partial_ok from the primary's INFO stats.
func syncCounters(ctx context.Context, n *nodeClient) (full, partial int64, ok bool) {
	c := n.get()
	s, err := c.Info(ctx, "stats").Result()
	if err != nil {
		n.failed(c, err)
		return 0, 0, false
	}
	var sf, sp int64
	var got int
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if v, found := strings.CutPrefix(line, "sync_full:"); found {
			sf, _ = strconv.ParseInt(v, 10, 64)
			got++
		}
		if v, found := strings.CutPrefix(line, "sync_partial_ok:"); found {
			sp, _ = strconv.ParseInt(v, 10, 64)
			got++
		}
	}
	return sf, sp, got == 2
}

// logParkErr logs a park that did not happen, unless it did not need to.
func (a *Agent) logParkErr(err error, reason string) {
	var ev *zerolog.Event
	switch {
	case errors.Is(err, ErrAlreadyParked), errors.Is(err, ErrFreezeDisabled):
		return
	case errors.Is(err, ErrNothingToProtect):
		ev = a.log.Debug()
	case errors.Is(err, ErrParkUnsafe):
		// Logged at error once per change by checkPark; repeated here at most every 5 s
		// while the outage lasts, so that the skipped park is in the incident's log.
		a.mu.Lock()
		quiet := time.Since(a.st.parkErrLog) < 5*time.Second
		if !quiet {
			a.st.parkErrLog = time.Now()
		}
		a.mu.Unlock()
		if quiet {
			return
		}
		ev = a.log.Error()
	case errors.Is(err, ErrNotFollowing), errors.Is(err, ErrNamedPrimary), errors.Is(err, ErrNoPrimary):
		ev = a.log.Info()
	default:
		ev = a.log.Error()
	}
	ev.Err(err).Str("reason", reason).Msg("replica not parked")
}

// zerologDrift renders drift entries as a log array.
type driftArray []events.ConfigDrift

func (d driftArray) MarshalZerologArray(arr *zerolog.Array) {
	for _, x := range d {
		arr.Str(x.Node + " " + x.Param + ": want " + quoteEmpty(x.Want) + ", got " + quoteEmpty(x.Got))
	}
}

func zerologDrift(d []events.ConfigDrift) driftArray { return driftArray(d) }

func quoteEmpty(s string) string {
	if s == "" {
		return `""`
	}
	return s
}

func hostOf(addr string) string {
	h, p, err := net.SplitHostPort(addr)
	if err != nil {
		return addr
	}
	return h + " -p " + p
}
