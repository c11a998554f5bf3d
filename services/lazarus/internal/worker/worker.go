// Package worker is lazarus, the failover worker: it consumes alerts, checks the shard
// from its own vantage point, decides (package decide) and runs failovers as recorded,
// idempotent steps under a per-shard lease. A reconcile loop finishes or rolls back
// failovers whose worker died, demotes old primaries that come back, repoints replicas
// after a failover, verifies degraded failovers later and re-evaluates held alerts.
package worker

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/lazarus/internal/decide"
	"github.com/heartline/heartline/services/lazarus/internal/redisops"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/lease"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/topology"
)

// Settings tune the worker. Zero values take the defaults shown.
type Settings struct {
	// Instance names this process (logs, events, lease owner prefix).
	Instance string
	// Group is the consumer group on the alerts topic (default "lazarus").
	Group string
	// LeaseTTL of the per-shard lease (10 s), renewed every third of it while working.
	LeaseTTL time.Duration
	// LeaseWait is how long an alert waits for a shard lease another worker holds (5 s).
	LeaseWait time.Duration
	// CheckTimeout bounds one check of one node (200 ms); ActionTimeout one action (2 s).
	CheckTimeout  time.Duration
	ActionTimeout time.Duration
	// Park is the agents' park address (zero: redisinfo.DefaultPark), so that replicas
	// parked there are recognised.
	Park redisinfo.Park
	// Cooldown after a failover during which the shard is held (30 s).
	Cooldown time.Duration
	// MaxConcurrent failovers in the fleet (2; negative: no limit); MaxPerWindow
	// failovers started within Window (5 per 10 min; negative: no limit).
	MaxConcurrent int
	MaxPerWindow  int
	Window        time.Duration
	// MaxLag is how far, in bytes, a candidate may be behind the last known primary
	// offset (1 MiB; negative: no bound).
	MaxLag int64
	// ReconcileInterval between reconcile passes (1 s).
	ReconcileInterval time.Duration
	// VerifyTimeout: how long the verify step waits for a replica to acknowledge (5 s).
	VerifyTimeout time.Duration
	// FailoverTimeout bounds one failover (30 s).
	FailoverTimeout time.Duration
	// ParkGrace: a replica parked while its primary is fine (same replication id) is
	// the agent's to unpark; lazarus repoints it itself after this long (10 s).
	ParkGrace time.Duration
	// MinReplicasToWrite restored on a node found fenced with no failover running (1).
	MinReplicasToWrite int
	// CatchUpTimeout: how long a switchover waits for the target to catch up (5 s);
	// PauseFor: the CLIENT PAUSE safety timeout of a switchover (10 s).
	CatchUpTimeout time.Duration
	PauseFor       time.Duration
	// KeepRecords: finished failover records kept per shard (20).
	KeepRecords int
	// WatchOpen: an alert judged PRIMARY_HEALTHY is re-checked every reconcile pass for
	// this long, or until it is resolved (60 s; negative: not at all).
	WatchOpen time.Duration
	// SpareAfter: a shard whose replicas have all been unreachable this long, while its
	// primary is fine, gets a spare from the pool (2 s; negative: never).
	SpareAfter time.Duration
	// SpareSyncTimeout bounds the sync of an attached spare (60 s).
	SpareSyncTimeout time.Duration
	// Durability is the fleet's default policy for a shard with no replica in sync
	// (topology.DurabilityStrict, the default, or DurabilityDegrade); a shard's own
	// entry overrides it.
	Durability string
}

func (s *Settings) defaults() {
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	if s.Instance == "" {
		s.Instance = "lazarus"
	}
	if s.Group == "" {
		s.Group = "lazarus"
	}
	def(&s.LeaseTTL, 10*time.Second)
	def(&s.LeaseWait, 5*time.Second)
	def(&s.CheckTimeout, 200*time.Millisecond)
	def(&s.ActionTimeout, 2*time.Second)
	def(&s.Cooldown, 30*time.Second)
	def(&s.Window, 10*time.Minute)
	def(&s.ReconcileInterval, time.Second)
	def(&s.VerifyTimeout, 5*time.Second)
	def(&s.FailoverTimeout, 30*time.Second)
	def(&s.ParkGrace, 10*time.Second)
	def(&s.CatchUpTimeout, 5*time.Second)
	def(&s.PauseFor, 10*time.Second)
	if s.SpareAfter == 0 {
		s.SpareAfter = 2 * time.Second
	}
	def(&s.SpareSyncTimeout, time.Minute)
	if s.WatchOpen == 0 {
		s.WatchOpen = time.Minute
	}
	if s.MaxConcurrent == 0 {
		s.MaxConcurrent = 2
	}
	if s.MaxPerWindow == 0 {
		s.MaxPerWindow = 5
	}
	if s.MaxLag == 0 {
		s.MaxLag = 1 << 20
	}
	if s.MinReplicasToWrite <= 0 {
		s.MinReplicasToWrite = 1
	}
	if s.KeepRecords <= 0 {
		s.KeepRecords = 20
	}
}

// Hooks are fault-injection points for tests.
type Hooks struct {
	// AfterStep runs after a step was recorded as finished. An error wrapping
	// ErrCrashed makes the worker behave as if its process died there: it writes
	// nothing more and does not release the lease.
	AfterStep func(rec *Record, step string) error
}

// Deps are the worker's dependencies.
type Deps struct {
	KV        kv.Store
	Publisher stream.Publisher
	Consumer  stream.Consumer // needed by Run only
	Log       zerolog.Logger
	Registry  prometheus.Registerer // nil: metrics are not registered
	Now       func() time.Time
	Hooks     Hooks
}

// Worker is one lazarus instance.
type Worker struct {
	set    Settings
	kv     kv.Store
	pub    stream.Publisher
	cons   stream.Consumer
	log    zerolog.Logger
	now    func() time.Time
	hooks  Hooks
	ops    redisops.Ops
	topo   topology.Store
	leases lease.Manager
	recs   Records
	ctl    Control
	m      *Metrics
	owner  string
	src    events.Source

	mu          sync.Mutex
	shardSem    map[string]chan struct{}
	known       map[string]decide.Known
	pending     map[string]*pendingAlert
	parkedSince map[string]time.Time
	refused     map[string]time.Time // last time a refused wipe was logged, per node
	// Spares, per shard: since when no replica is in sync, since when none answers,
	// and the last spare decision logged.
	noReplicaAt      map[string]time.Time
	unreachableAt    map[string]time.Time
	spareNote        map[string]decide.SpareReason
	noReplicaCleared map[string]bool
	lastTick         time.Time
	consuming        bool
}

type pendingAlert struct {
	alert alertInfo
	force bool
	last  string // decision/reason last published for it
	// until bounds the watch of an open alert judged a false alarm (zero: no bound,
	// for holds and aborts, which are real failures).
	until time.Time
}

// alertInfo is an alert as lazarus keeps it for (re-)evaluation.
type alertInfo struct {
	a        decide.Alert
	shard    string
	detected time.Time
	alerted  time.Time
}

// New returns a worker. It does not start anything; call Run, HandleAlert, Switchover.
func New(set Settings, d Deps) (*Worker, error) {
	if d.KV == nil || d.Publisher == nil {
		return nil, errors.New("lazarus worker: KV and Publisher are required")
	}
	set.defaults()
	if set.ReconcileInterval >= set.LeaseTTL {
		return nil, fmt.Errorf("lazarus worker: reconcile interval %s must be below the lease TTL %s", set.ReconcileInterval, set.LeaseTTL)
	}
	now := d.Now
	if now == nil {
		now = time.Now
	}
	w := &Worker{
		set: set, kv: d.KV, pub: d.Publisher, cons: d.Consumer, log: d.Log, now: now, hooks: d.Hooks,
		ops:    redisops.Ops{CheckTimeout: set.CheckTimeout, ActionTimeout: set.ActionTimeout, Park: set.Park},
		topo:   topology.Store{KV: d.KV},
		leases: lease.Manager{Store: d.KV, Now: now},
		recs:   Records{KV: d.KV}, ctl: Control{KV: d.KV},
		m: NewMetrics(d.Registry),
		// A fresh owner per process: a restarted instance waits for its predecessor's
		// lease to expire like any other worker, so nothing acts twice.
		owner:    set.Instance + "-" + events.NewID()[24:],
		src:      events.Source{Service: "lazarus", Instance: set.Instance},
		shardSem: map[string]chan struct{}{}, known: map[string]decide.Known{}, pending: map[string]*pendingAlert{},
		parkedSince: map[string]time.Time{}, refused: map[string]time.Time{},
		noReplicaAt: map[string]time.Time{}, unreachableAt: map[string]time.Time{}, spareNote: map[string]decide.SpareReason{},
		noReplicaCleared: map[string]bool{},
	}
	return w, nil
}

// Owner is the lease owner id of this worker.
func (w *Worker) Owner() string { return w.owner }

// Run consumes alerts (group Settings.Group) and runs the reconcile loop until ctx is
// done.
func (w *Worker) Run(ctx context.Context) error {
	if w.cons == nil {
		return errors.New("lazarus worker: Run needs a Consumer")
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		w.reconcileLoop(ctx)
	}()
	w.mu.Lock()
	w.consuming = true
	w.mu.Unlock()
	err := w.cons.Consume(ctx, stream.Subscription{Topic: events.TopicAlerts, Group: w.set.Group, Instance: w.set.Instance,
		Start: stream.StartOldest}, w.handleDelivery)
	w.mu.Lock()
	w.consuming = false
	w.mu.Unlock()
	cancel()
	wg.Wait()
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("consuming alerts: %w", err)
	}
	return nil
}

// Ready reports whether the worker consumes alerts and its reconcile loop is alive.
func (w *Worker) Ready() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.consuming {
		return errors.New("not consuming alerts")
	}
	if w.lastTick.IsZero() || w.now().Sub(w.lastTick) > 5*w.set.ReconcileInterval+5*time.Second {
		return errors.New("reconcile loop has not completed a pass recently (kv store unreachable?)")
	}
	return nil
}

// Handler serves /healthz, /readyz and /metrics (from gatherer).
func (w *Worker) Handler(gatherer prometheus.Gatherer) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(rw http.ResponseWriter, _ *http.Request) { _, _ = rw.Write([]byte("ok\n")) })
	mux.HandleFunc("/readyz", func(rw http.ResponseWriter, _ *http.Request) {
		if err := w.Ready(); err != nil {
			http.Error(rw, err.Error(), http.StatusServiceUnavailable)
			return
		}
		_, _ = rw.Write([]byte("ready\n"))
	})
	mux.Handle("/metrics", promhttp.HandlerFor(gatherer, promhttp.HandlerOpts{}))
	return mux
}

func (w *Worker) handleDelivery(ctx context.Context, d stream.Delivery) error {
	ev, err := events.Decode(d.Data)
	if err != nil {
		return stream.Permanent(fmt.Errorf("not handling alert %s: %w", d.ID, err))
	}
	return w.HandleAlert(ctx, ev)
}

// HandleAlert decides on one alert event and acts on the decision. An error means the
// alert should be delivered again (a permanent one wraps stream.ErrPermanent).
func (w *Worker) HandleAlert(ctx context.Context, ev events.Event) error {
	a, ok := ev.Payload.(*events.Alert)
	if !ok || (ev.Kind != events.KindAlertOpened && ev.Kind != events.KindAlertEscalated && ev.Kind != events.KindAlertResolved) {
		return stream.Permanent(fmt.Errorf("not handling %s on the alerts topic: %w", ev.Kind, ErrNotAlert))
	}
	info := alertInfo{shard: ev.Shard, alerted: ev.Time,
		a: decide.Alert{Kind: ev.Kind, Code: a.Code, Flapping: a.Flapping, Epoch: ev.Epoch, IncidentID: a.IncidentID,
			CorrelationID: ev.CorrelationID, Primary: a.Primary}}
	info.detected = a.FirstFailure
	if info.detected.IsZero() {
		info.detected = ev.Time
	}
	if ev.Kind == events.KindAlertResolved || !decide.Actionable(a.Code) {
		// Nothing to check and nothing to lock: record the decision.
		if ev.Kind == events.KindAlertResolved {
			w.dropPending(ev.Shard)
		}
		out := decide.Decide(decide.Input{Now: w.now(), Alert: info.a, Shard: topology.Shard{ID: ev.Shard}})
		w.recordDecision(ctx, info, topology.Shard{ID: ev.Shard}, out, w.now())
		return nil
	}
	err := w.withLease(ctx, ev.Shard, w.set.LeaseWait, "alert "+a.IncidentID, func(ctx context.Context) error {
		return w.evaluate(ctx, info, false, true)
	})
	if errors.Is(err, ErrCrashed) {
		return nil
	}
	if err != nil {
		w.incidentLog(info).Warn().Err(err).Msg("alert not handled yet; it will be delivered again")
	}
	return err
}

func (w *Worker) incidentLog(info alertInfo) *zerolog.Logger {
	l := logging.Incident(w.log, info.shard, info.a.CorrelationID, info.a.Epoch).With().Str("incident_id", info.a.IncidentID).Logger()
	return &l
}

// evaluate runs the decision for an alert under the shard's lease and acts on it.
// fresh is false for re-evaluations of held alerts, which publish only changes.
func (w *Worker) evaluate(ctx context.Context, info alertInfo, force, fresh bool) error {
	shard := info.shard
	cur, rev, err := w.topo.Get(ctx, shard)
	known := true
	if errors.Is(err, topology.ErrUnknownShard) {
		known, cur = false, topology.Shard{ID: shard}
	} else if err != nil {
		return fmt.Errorf("not deciding on %s: reading the topology: %w", shard, err)
	}
	in := decide.Input{Now: w.now(), Alert: info.a, Known: known, Shard: cur, MaxLag: max(w.set.MaxLag, 0), Force: force}
	if known {
		nodes := w.ops.CheckAll(ctx, cur.Nodes())
		in.Primary, in.Replicas = nodes[0], nodes[1:]
		all, err := w.recs.List(ctx, "")
		if err != nil {
			return fmt.Errorf("not deciding on %s: reading failover records: %w", shard, err)
		}
		in.Handled, in.Holds = w.history(all, shard, info.a.IncidentID, in.Now)
		if in.Holds.Paused, err = w.ctl.Paused(ctx, shard); err != nil {
			return fmt.Errorf("not deciding on %s: reading pause flags: %w", shard, err)
		}
		in.Last = w.lastKnown(shard)
	}
	decided := w.now()
	out := decide.Decide(in)
	w.m.Decisions.WithLabelValues(string(out.Decision), string(out.Reason)).Inc()
	key := string(out.Decision) + "/" + string(out.Reason)
	switch out.Decision {
	case events.DecisionFailover:
		w.dropPending(shard)
		_ = w.ctl.ClearHold(ctx, shard)
		return w.startFailover(ctx, info, cur, rev, in.Primary, out, decided, force)
	case events.DecisionHold, events.DecisionAbort:
		changed := w.setPending(shard, info, force, key)
		if out.Decision == events.DecisionHold {
			if changed || fresh {
				w.m.Holds.WithLabelValues(string(out.Reason)).Inc()
			}
			_ = w.ctl.SetHold(ctx, shard, HoldRecord{Reason: out.Reason, Detail: out.Detail, Override: out.Override,
				Since: decided.UTC(), IncidentID: info.a.IncidentID, Worker: w.owner})
		}
		if !changed && !fresh {
			return nil
		}
		if out.Decision == events.DecisionAbort {
			return w.recordAbort(ctx, info, cur, rev, out, decided)
		}
	default:
		_ = w.ctl.ClearHold(ctx, shard)
		if out.Reason == decide.PrimaryHealthy && decide.Actionable(info.a.Code) && w.set.WatchOpen > 0 {
			// The alert stays open at the alerter: keep checking for a while, so that a
			// primary that dies while its incident is open fails over even if the
			// alerter sends nothing new.
			changed := w.watchPending(shard, info, key, decided.Add(w.set.WatchOpen))
			if !changed && !fresh {
				return nil
			}
			break
		}
		w.dropPending(shard)
		if !fresh && out.Reason == decide.AlreadyHandled {
			return nil
		}
	}
	w.recordDecision(ctx, info, cur, out, decided)
	return nil
}

// history derives what was already done and the holds from the failover records.
func (w *Worker) history(all []*Record, shard, incident string, now time.Time) (decide.Handled, decide.Holds) {
	var h decide.Handled
	holds := decide.Holds{Fleet: decide.Fleet{MaxConcurrent: max(w.set.MaxConcurrent, 0), MaxPerWindow: max(w.set.MaxPerWindow, 0), Window: w.set.Window}}
	for _, r := range all {
		if r.Unfinished() {
			holds.Fleet.Running++
			if r.Shard == shard {
				h.InProgress = r.ID
			}
		}
		if !r.Planned && (r.Unfinished() || r.State == StateCompleted) && now.Sub(r.Created) < w.set.Window {
			if holds.Fleet.InWindow == 0 || r.Created.Before(holds.Fleet.OldestInWindow) {
				holds.Fleet.OldestInWindow = r.Created
			}
			holds.Fleet.InWindow++
		}
		if r.Shard != shard || r.State != StateCompleted {
			continue
		}
		if incident != "" && r.IncidentID == incident {
			h.Incident = r.ID
		}
		if until := r.Finished.Add(w.set.Cooldown); !r.CooldownLifted && until.After(holds.CooldownUntil) {
			holds.CooldownUntil, holds.CooldownAfter = until, r.ID
		}
	}
	return h, holds
}

func (w *Worker) recordDecision(ctx context.Context, info alertInfo, sh topology.Shard, out decide.Outcome, decided time.Time) {
	l := w.incidentLog(info)
	ev := l.Info()
	if out.Decision == events.DecisionHold || out.Decision == events.DecisionAbort {
		ev = l.Warn()
	}
	ev.Str("decision", string(out.Decision)).Str("reason", string(out.Reason)).Str("detail", out.Detail).
		Str("override", out.Override).Str("alert_code", string(info.a.Code)).Msg("decision: " + string(out.Decision) + " " + string(out.Reason))
	p := &events.Failover{IncidentID: info.a.IncidentID, Decision: out.Decision, Reason: string(out.Reason), Detail: out.Detail,
		Override: out.Override, OldPrimary: sh.Primary, LossWindow: -1, Worker: w.owner,
		Phases: events.Phases{Detected: info.detected, Alerted: info.alerted, Decided: decided}}
	e := w.event(events.KindFailoverDecision, info.shard, info.a.CorrelationID, sh.Epoch, p)
	w.publish(ctx, e)
}

// recordAbort stores an aborted failover record (so status shows it) and publishes it.
func (w *Worker) recordAbort(ctx context.Context, info alertInfo, sh topology.Shard, rev uint64, out decide.Outcome, decided time.Time) error {
	rec := w.newRecord(info, sh, rev, out, decided)
	rec.State, rec.Outcome, rec.Finished = StateAborted, string(out.Reason), decided
	if err := w.recs.Create(ctx, rec); err != nil {
		return err
	}
	w.incidentLog(info).Error().Str("failover_id", rec.ID).Str("decision", "abort").Str("reason", string(out.Reason)).
		Str("detail", out.Detail).Msg("decision: abort " + string(out.Reason) + "; re-evaluating every reconcile interval")
	w.m.Failovers.WithLabelValues("aborted").Inc()
	w.publish(ctx, w.failoverEvent(events.KindFailoverAborted, rec, nil))
	return nil
}

func (w *Worker) newRecord(info alertInfo, sh topology.Shard, rev uint64, out decide.Outcome, decided time.Time) *Record {
	var others []string
	for _, r := range sh.Replicas {
		if r != out.Candidate {
			others = append(others, r)
		}
	}
	corr := info.a.CorrelationID
	id := events.NewID()
	if corr == "" {
		corr = id
	}
	return &Record{ID: id, Shard: sh.ID, IncidentID: info.a.IncidentID, CorrelationID: corr, AlertCode: string(info.a.Code),
		Reason: out.Reason, Detail: out.Detail, State: StateRunning, FromEpoch: sh.Epoch, ToEpoch: sh.Epoch + 1,
		OldPrimary: sh.Primary, NewPrimary: out.Candidate, Others: others, TopologyRevision: rev, ShardIndex: sh.Index,
		LossWindow: out.LossWindow, Bound: out.Bound, Worker: w.owner, Created: decided.UTC(),
		Phases: events.Phases{Detected: info.detected, Alerted: info.alerted, Decided: decided},
		Steps:  []StepRecord{{Name: StepDecided, Status: StatusDone, Detail: out.Detail, Started: decided, Ended: decided, Worker: w.owner}}}
}

func (w *Worker) setPending(shard string, info alertInfo, force bool, key string) (changed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.pending[shard]
	if p == nil || p.alert.a.IncidentID != info.a.IncidentID {
		w.pending[shard] = &pendingAlert{alert: info, force: force, last: key}
		return true
	}
	changed = p.last != key
	p.last, p.until = key, time.Time{}
	return changed
}

// watchPending keeps an alert judged healthy under watch until the given time (not
// extended by later evaluations of the same incident).
func (w *Worker) watchPending(shard string, info alertInfo, key string, until time.Time) (changed bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	p := w.pending[shard]
	if p == nil || p.alert.a.IncidentID != info.a.IncidentID {
		w.pending[shard] = &pendingAlert{alert: info, last: key, until: until}
		return true
	}
	changed = p.last != key
	p.last = key
	if p.until.IsZero() {
		p.until = until
	}
	return changed
}

func (w *Worker) dropPending(shard string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.pending, shard)
}

func (w *Worker) pendingFor(shard string) *pendingAlert {
	w.mu.Lock()
	defer w.mu.Unlock()
	if p := w.pending[shard]; p != nil {
		if !p.until.IsZero() && w.now().After(p.until) {
			delete(w.pending, shard)
			return nil
		}
		c := *p
		return &c
	}
	return nil
}

func (w *Worker) lastKnown(shard string) *decide.Known {
	w.mu.Lock()
	defer w.mu.Unlock()
	if k, ok := w.known[shard]; ok {
		return &k
	}
	return nil
}

func (w *Worker) setKnown(sh topology.Shard, p decide.Node) {
	w.mu.Lock()
	defer w.mu.Unlock()
	k := decide.Known{Epoch: sh.Epoch, Addr: p.Addr, RunID: p.RunID, ReplID: p.ReplID, Offset: p.Offset, AckedOffset: p.AckedOffset, At: w.now()}
	if prev, ok := w.known[sh.ID]; ok && prev.Epoch == k.Epoch && prev.ReplID == k.ReplID && k.AckedOffset < prev.AckedOffset {
		// No replica attached right now: what was acknowledged before still binds.
		k.AckedOffset = prev.AckedOffset
	}
	w.known[sh.ID] = k
}

func (w *Worker) forgetKnown(shard string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.known, shard)
}

// ---- leases ----

func (w *Worker) sem(shard string) chan struct{} {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.shardSem[shard]
	if s == nil {
		s = make(chan struct{}, 1)
		w.shardSem[shard] = s
	}
	return s
}

// withLease runs fn while holding the shard's lease (renewed every third of its TTL),
// after finishing any failover of the shard that a dead worker left unfinished. It
// waits up to wait for a lease held elsewhere.
func (w *Worker) withLease(ctx context.Context, shard string, wait time.Duration, note string, fn func(ctx context.Context) error) error {
	if !events.ValidShardID(shard) {
		return stream.Permanent(fmt.Errorf("%w: %q", ErrBadShard, shard))
	}
	deadline := time.Now().Add(wait)
	sem := w.sem(shard)
	select {
	case sem <- struct{}{}:
	default:
		if wait <= 0 {
			return fmt.Errorf("%w: %s is busy in this worker", ErrLeaseHeld, shard)
		}
		select {
		case sem <- struct{}{}:
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(wait):
			return fmt.Errorf("%w: %s is busy in this worker", ErrLeaseHeld, shard)
		}
	}
	defer func() { <-sem }()
	key := LeaseKey(shard)
	var l lease.Lease
	for {
		var err error
		l, err = w.leases.Acquire(ctx, key, w.owner, w.set.LeaseTTL, note)
		if err == nil {
			break
		}
		var he *lease.HeldError
		if !errors.As(err, &he) {
			return fmt.Errorf("acquiring lease %s: %w", key, err)
		}
		if !time.Now().Before(deadline) {
			return fmt.Errorf("%w: %v", ErrLeaseHeld, he)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(25 * time.Millisecond):
		}
	}
	w.m.LeaseHeld.WithLabelValues(shard).Set(1)
	// Once the lease is held the work is not interrupted by a shutdown: a failover
	// stopped half-way would leave the shard to the next lease holder. It is bounded by
	// its own timeouts, and stopped when the lease is lost.
	wctx, cancel := context.WithCancelCause(context.WithoutCancel(ctx))
	var lmu sync.Mutex
	renewed := make(chan struct{})
	go func() {
		defer close(renewed)
		t := time.NewTicker(w.set.LeaseTTL / 3)
		defer t.Stop()
		for {
			select {
			case <-wctx.Done():
				return
			case <-t.C:
				lmu.Lock()
				nl, err := w.leases.Renew(wctx, l, w.set.LeaseTTL)
				if err == nil {
					l = nl
				}
				lmu.Unlock()
				if errors.Is(err, lease.ErrLost) {
					w.log.Error().Str("shard", shard).Err(err).Msg("shard lease lost while working; stopping")
					cancel(ErrLeaseLost)
					return
				}
			}
		}
	}()
	err := w.recoverShard(wctx, shard)
	if err == nil {
		err = fn(wctx)
	}
	lost := errors.Is(context.Cause(wctx), ErrLeaseLost)
	cancel(nil)
	<-renewed
	w.m.LeaseHeld.WithLabelValues(shard).Set(0)
	if errors.Is(err, ErrCrashed) {
		return err // a dead process releases nothing
	}
	rctx, rcancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer rcancel()
	lmu.Lock()
	if rerr := w.leases.Release(rctx, l); rerr != nil {
		w.log.Warn().Err(rerr).Str("shard", shard).Msg("releasing the shard lease failed; it expires on its own")
	}
	lmu.Unlock()
	if lost && err != nil {
		return fmt.Errorf("%w: %w", ErrLeaseLost, err)
	}
	return err
}

// ---- events ----

func (w *Worker) event(kind events.Kind, shard, corr string, epoch uint64, p events.Payload) events.Event {
	e := events.New(kind, w.src, shard, p)
	e.Time = w.now().UTC()
	if corr != "" {
		e.CorrelationID = corr
	}
	e.Epoch = epoch
	return e
}

func (w *Worker) failoverEvent(kind events.Kind, rec *Record, step *StepRecord) events.Event {
	p := &events.Failover{FailoverID: rec.ID, IncidentID: rec.IncidentID, Decision: events.DecisionFailover, Reason: string(rec.Reason),
		Detail: rec.Detail, OldPrimary: rec.OldPrimary, NewPrimary: rec.NewPrimary, FromEpoch: rec.FromEpoch, ToEpoch: rec.ToEpoch,
		LossWindow: max(rec.LossWindow, -1), Phases: rec.Phases, Worker: w.owner, Planned: rec.Planned}
	switch kind {
	case events.KindFailoverAborted:
		p.Decision = events.DecisionAbort
		if rec.Outcome != "" {
			p.Reason = rec.Outcome
		}
	case events.KindFailoverCompleted:
		if rec.Degraded != "" {
			p.Detail = "completed, not verified: " + rec.Degraded
		}
	}
	if step != nil {
		p.Step, p.StepError = step.Name, step.Error
		if step.Detail != "" {
			p.Detail = step.Detail
		}
	}
	return w.event(kind, rec.Shard, rec.CorrelationID, rec.ToEpoch, p)
}

// publish sends an event to the failovers topic. Events are the on-call timeline; the
// kv record is the truth, so a failed publish is logged and does not stop a failover.
func (w *Worker) publish(ctx context.Context, e events.Event) {
	b, err := events.Encode(e)
	if err != nil {
		w.log.Error().Err(err).Str("kind", string(e.Kind)).Msg("not publishing an invalid event")
		return
	}
	pctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 3*time.Second)
	defer cancel()
	if err := w.pub.Publish(pctx, events.TopicFailovers, stream.Message{Key: e.Shard, ID: e.ID, Data: b}); err != nil {
		w.log.Error().Err(err).Str("kind", string(e.Kind)).Str("shard", e.Shard).Msg("publishing a failover event failed")
	}
}
