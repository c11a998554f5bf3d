package runner

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/experiment"
	"github.com/heartline/heartline/services/chaos/internal/injector"
	"github.com/heartline/heartline/services/chaos/internal/target"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/topology"
)

// Runner runs experiments in one environment.
type Runner struct {
	Env Env
	Inj *injector.Injector
	// Health judges shards for the shards_healthy and no_open_alerts probes.
	Health  injector.ShardHealth
	Metrics *injector.Metrics
	// Reports is the folder that receives one sub-folder per run.
	Reports string
	Source  events.Source
	Log     zerolog.Logger
	// Poll is how often probes and abort conditions are evaluated (default 250 ms).
	Poll time.Duration
	// NoBackup skips the RDB copies (tests of the flow only).
	NoBackup      bool
	BackupTimeout time.Duration
	// LoadGrace is added to the load's producing phase so that it outlasts the
	// method and observation (default 2 s).
	LoadGrace time.Duration
}

// Options tune one run.
type Options struct {
	// RunID is the run's id (default: a new one).
	RunID string
	// Shard binds "random" in the experiment's selectors to this shard (the scheduler
	// picks it).
	Shard string
}

// run is the state of one experiment run.
type run struct {
	r      *Runner
	x      *experiment.Experiment
	rep    *Report
	log    zerolog.Logger
	w      *watcher
	hist   *History
	topo   topology.Map
	shards []string // every shard id
	// attacked is the set of shards the method targets; nil means the faults hit no
	// shard directly, and shard-scoped measures look at every shard.
	attacked map[string]bool
	binding  *target.Binding

	mu           sync.Mutex
	attacks      []injector.Attack
	firstFault   time.Time // Started of the first attack
	firstApplied time.Time
	methodEnded  time.Time
	healthyAt    time.Time
}

// Run runs x and returns its report, already written to disk and published. The
// report's ExitCode says whether every hypothesis held.
func (r *Runner) Run(parent context.Context, x *experiment.Experiment, o Options) *Report {
	if r.Poll <= 0 {
		r.Poll = 250 * time.Millisecond
	}
	if r.LoadGrace <= 0 {
		r.LoadGrace = 2 * time.Second
	}
	runID := o.RunID
	if runID == "" {
		runID = events.NewID()
	}
	started := time.Now().UTC()
	rep := &Report{RunID: runID, Experiment: x.Title, File: x.File, Description: x.Description, Env: r.Env.Name(), Started: started}
	rep.Dir = filepath.Join(r.Reports, started.Format("20060102-150405")+"-"+slug(x.Title)+"-"+shortID(runID))
	u := &run{r: r, x: x, rep: rep, w: newWatcher(), binding: &target.Binding{Shard: o.Shard},
		log: r.Log.With().Str("run_id", runID).Str("experiment", x.Title).Logger()}
	u.log.Info().Str("dir", rep.Dir).Msg("experiment starting")

	wctx, wcancel := context.WithCancel(context.WithoutCancel(parent))
	wdone := make(chan struct{})
	go func() { defer close(wdone); u.w.run(wctx, r.Env.Stream(), "chaos-"+shortID(runID), u.log) }()

	u.execute(parent)

	wcancel()
	<-wdone
	u.finish()
	return rep
}

// execute runs the experiment up to (not including) the report.
func (u *run) execute(parent context.Context) {
	r, x, rep := u.r, u.x, u.rep
	ctx, cancel := context.WithTimeout(parent, x.Abort.MaxDuration)
	defer cancel()
	if err := os.MkdirAll(rep.Dir, 0o755); err != nil {
		rep.Error = "creating the report folder: " + err.Error()
		return
	}
	topo, err := topology.Store{KV: r.Env.KV()}.Load(ctx)
	if err != nil {
		rep.Error = "not running: reading the topology: " + err.Error()
		return
	}
	u.topo = topo
	for _, s := range topo.Shards {
		u.shards = append(u.shards, s.ID)
	}
	// Resolve every step once: it binds "random" to one eligible shard and tells
	// which shards the run will touch (backups, the experiment group).
	touched := map[string]bool{}
	for i, s := range x.Method {
		ts, err := r.Inj.Resolver().Resolve(ctx, s.Selector, u.binding)
		if err != nil {
			rep.Error = fmt.Sprintf("not running: method[%d] %s %s: %v", i, s.Fault, s.Target, err)
			return
		}
		for _, t := range ts {
			if t.Shard != "" {
				touched[t.Shard] = true
			}
		}
	}
	if len(touched) > 0 {
		u.attacked = touched
		for s := range touched {
			rep.Shards = append(rep.Shards, s)
		}
		sort.Strings(rep.Shards)
	}
	u.mark(time.Now(), "runner", "targets resolved", "", "attacked shards: "+orNone(rep.Shards), "")

	// Steady state, first the parts that need no load.
	if !u.steady(ctx, false) {
		return
	}
	if !r.NoBackup {
		if !u.backups(ctx) {
			return
		}
	}
	var lr LoadRun
	if !x.Load.Disabled {
		if r.Env.Load() == nil {
			rep.Error = "not running: the experiment needs load and the environment has no load generator"
			return
		}
		spec := LoadSpec{RunID: shortID(rep.RunID), Duration: x.SteadyState.Warmup + x.End() + x.Observe + r.LoadGrace,
			Queues: x.Load.Queues, Rate: x.Load.Rate, Consumers: x.Load.Consumers, Args: x.Load.Args,
			History: filepath.Join(rep.Dir, "history.jsonl")}
		lr, err = r.Env.Load().Start(ctx, spec)
		if err != nil {
			rep.Error = "not running: starting the load: " + err.Error()
			return
		}
		rep.Load = &LoadInfo{Args: lr.Args(), History: spec.History}
		u.hist = NewHistory(spec.History, topo)
		u.mark(time.Now(), "runner", "load started", "", fmt.Sprintf("%d queues, %d enqueues/s, %d consumers, producing for %s", spec.Queues, spec.Rate, spec.Consumers, fmtDur(spec.Duration)), "")
		hctx, hcancel := context.WithCancel(context.WithoutCancel(parent))
		defer hcancel()
		go func() {
			t := time.NewTicker(200 * time.Millisecond)
			defer t.Stop()
			for {
				select {
				case <-hctx.Done():
					return
				case <-t.C:
					if err := u.hist.Poll(); err != nil {
						u.log.Warn().Err(err).Msg("reading the load history")
					}
				}
			}
		}()
	}
	// Warm-up, then the whole steady state.
	if err := sleepCtx(ctx, x.SteadyState.Warmup); err != nil {
		u.abort(ctx, lr, "max_duration reached during the warm-up")
		return
	}
	if u.hist != nil {
		_ = u.hist.Poll()
	}
	// An aborted run still drains its load (the load stops producing and drains on
	// Stop) and checks it: the report says whether anything acknowledged was lost, and
	// the next experiment finds none of this run's messages in the queues.
	if !u.steady(ctx, true) {
		if lr != nil {
			_ = lr.Stop()
			u.waitLoad(parent, lr)
			u.check(parent)
		}
		return
	}
	if !u.method(ctx, lr) {
		u.waitLoad(parent, lr)
		u.check(parent)
		return
	}
	u.waitLoad(parent, lr)
	u.check(parent)
}

// steady evaluates the steady-state probes (withLoad: all of them; else only those
// that need no load). It records the results and returns whether they held.
func (u *run) steady(ctx context.Context, withLoad bool) bool {
	var failed []string
	for _, p := range u.x.SteadyState.Probes {
		needsLoad := p.Kind == experiment.EnqueueSuccessRate || p.Kind == experiment.DequeueKeepsUp || p.Kind == experiment.EnqueueLatencyP99
		if needsLoad && !withLoad {
			continue
		}
		if needsLoad && u.hist == nil {
			continue
		}
		window := p.Window
		if window <= 0 || window > u.x.SteadyState.Warmup && u.x.SteadyState.Warmup > 0 {
			window = max(u.x.SteadyState.Warmup, time.Second)
		}
		v := u.probe(ctx, p, window)
		pr := probeResult(p, v)
		u.rep.SteadyState = append(u.rep.SteadyState, pr)
		if !pr.Held {
			failed = append(failed, fmt.Sprintf("%s = %s (want %s)", p.Kind, pr.Actual, pr.Expected))
		}
	}
	if len(failed) > 0 {
		u.rep.Aborted = true
		u.rep.AbortReason = "steady state not established, nothing injected: " + strings.Join(failed, "; ")
		u.mark(time.Now(), "runner", "steady state not met", "", strings.Join(failed, "; "), "")
		u.log.Warn().Str("reason", u.rep.AbortReason).Msg("experiment not run")
		return false
	}
	what := "steady state holds (no load yet)"
	if withLoad {
		what = "steady state holds"
	}
	u.mark(time.Now(), "runner", what, "", "", "")
	return true
}

func probeResult(p experiment.Probe, v float64) ProbeResult {
	info, _ := experiment.LookupProbe(p.Kind)
	b, lower := p.Bound()
	pr := ProbeResult{Probe: string(p.Kind), Value: v}
	show := func(f float64) string {
		switch {
		case math.IsNaN(f):
			return "no data"
		case info.Seconds:
			return fmtDur(time.Duration(f * float64(time.Second)))
		case info.Lower:
			return fmt.Sprintf("%.4f", f)
		default:
			return fmt.Sprintf("%g", f)
		}
	}
	if lower {
		pr.Expected = "≥ " + show(b)
	} else {
		pr.Expected = "≤ " + show(b)
	}
	pr.Actual = show(v)
	pr.Held = !math.IsNaN(v) && p.Holds(v)
	return pr
}

// probe measures one probe now over window.
func (u *run) probe(ctx context.Context, p experiment.Probe, window time.Duration) float64 {
	now := time.Now()
	switch p.Kind {
	case experiment.EnqueueSuccessRate, experiment.DequeueKeepsUp, experiment.EnqueueLatencyP99:
		if u.hist == nil {
			return math.NaN()
		}
		st := u.hist.Stats(now.Add(-window), now, nil)
		switch p.Kind {
		case experiment.EnqueueSuccessRate:
			return st.SuccessRate()
		case experiment.DequeueKeepsUp:
			return st.DequeueRatio()
		default:
			if st.OK == 0 {
				return math.NaN()
			}
			return st.LatencyP99.Seconds()
		}
	case experiment.NoOpenAlerts:
		open := map[string]bool{}
		for s := range u.w.openAlerts() {
			open[s] = true
		}
		kvOpen, err := u.r.Health.AnyOpenAlert(ctx)
		if err != nil {
			return math.NaN()
		}
		for _, s := range kvOpen {
			open[s] = true
		}
		return float64(len(open))
	case experiment.ShardsHealthy:
		return float64(len(u.unhealthy(ctx)))
	}
	return math.NaN()
}

func (u *run) unhealthy(ctx context.Context) []string {
	var bad []string
	for _, s := range u.shards {
		if err := u.r.Health.Degraded(ctx, s); err != nil {
			bad = append(bad, s)
		}
	}
	return bad
}

func (u *run) backups(ctx context.Context) bool {
	shards := u.rep.Shards
	for _, s := range shards {
		sh, err := u.topo.Shard(s)
		if err != nil {
			continue
		}
		file := filepath.Join(u.rep.Dir, "backups", s+"-"+strings.NewReplacer(":", "_", "/", "_").Replace(sh.Primary)+".rdb")
		start := time.Now()
		n, err := BackupRDB(ctx, sh.Primary, file, u.r.BackupTimeout)
		b := Backup{Shard: s, Node: sh.Primary, File: file, Bytes: n, Took: fmtDur(time.Since(start)), At: start.UTC()}
		if err != nil {
			b.Error = err.Error()
			u.rep.Backups = append(u.rep.Backups, b)
			u.rep.Aborted = true
			u.rep.AbortReason = "no backup, no attack: " + err.Error()
			return false
		}
		u.rep.Backups = append(u.rep.Backups, b)
		u.mark(time.Now(), "runner", "backup taken", s, fmt.Sprintf("%s: %d bytes in %s", sh.Primary, n, b.Took), "")
	}
	return true
}

type stepResult struct {
	i   int
	a   injector.Attack
	err error
}

// method injects the steps, watches the abort conditions and the observation period.
// It returns false when the run was aborted.
func (u *run) method(ctx context.Context, lr LoadRun) bool {
	r, x := u.r, u.x
	start := time.Now()
	u.mark(start, "runner", "method started", "", fmt.Sprintf("%d fault(s)", len(x.Method)), "")
	results := make(chan stepResult, len(x.Method))
	sctx, scancel := context.WithCancel(ctx)
	defer scancel()
	var attackedMu sync.Mutex
	attackedSoFar := []string{}
	for i, s := range x.Method {
		go func() {
			if err := sleepCtx(sctx, time.Until(start.Add(s.After))); err != nil {
				results <- stepResult{i: i, err: err}
				return
			}
			attackedMu.Lock()
			prior := append([]string(nil), attackedSoFar...)
			attackedMu.Unlock()
			req := injector.Request{Fault: s.Fault, Target: s.Target, Duration: s.Duration, Params: s.Params,
				RunID: u.rep.RunID, Experiment: x.Title, Binding: u.binding, MaxShards: x.Safety.MaxShards, Attacked: prior}
			a, err := r.Inj.Start(sctx, req)
			if err == nil {
				attackedMu.Lock()
				attackedSoFar = append(attackedSoFar, a.Shards()...)
				attackedMu.Unlock()
			}
			results <- stepResult{i: i, a: a, err: err}
		}()
	}
	abortSince := make([]time.Time, len(x.Abort.When))
	pending := len(x.Method)
	endAt := start.Add(x.End())
	var observeUntil time.Time
	var nextHealth time.Time
	tick := time.NewTicker(r.Poll)
	defer tick.Stop()
	for {
		select {
		case res := <-results:
			pending--
			if res.a.ID != "" {
				u.addAttack(res.a)
			}
			if res.err != nil {
				s := x.Method[res.i]
				reason := fmt.Sprintf("method[%d] (%s on %s) failed: %v", res.i, s.Fault, s.Target, res.err)
				if ctx.Err() != nil {
					reason = "max_duration reached"
				}
				u.abort(ctx, lr, reason)
				return false
			}
			u.mark(res.a.Started, "chaos", "fault injected: "+string(res.a.Fault), strings.Join(res.a.Shards(), ","), targetsOf(res.a), res.a.ID)
			continue
		case <-ctx.Done():
			u.abort(ctx, lr, "max_duration ("+x.Abort.MaxDuration.String()+") reached")
			return false
		case <-tick.C:
		}
		now := time.Now()
		if u.hist != nil {
			_ = u.hist.Poll()
		}
		// Abort conditions, once faults are in.
		for i, c := range x.Abort.When {
			window := c.Window
			if window <= 0 {
				window = 5 * time.Second
			}
			v := u.probe(ctx, c, window)
			if !math.IsNaN(v) && c.Holds(v) {
				abortSince[i] = time.Time{}
				continue
			}
			if abortSince[i].IsZero() {
				abortSince[i] = now
			}
			if now.Sub(abortSince[i]) >= c.For {
				pr := probeResult(c, v)
				u.abort(ctx, lr, fmt.Sprintf("abort condition: %s = %s (want %s) for %s", c.Kind, pr.Actual, pr.Expected, fmtDur(now.Sub(abortSince[i]))))
				return false
			}
		}
		if pending == 0 && u.methodEnded.IsZero() && !now.Before(endAt) && u.allRecoveredOrOpenEnded() {
			// Faults without a duration last until the end of the method.
			if err := r.Inj.HaltRun(context.WithoutCancel(ctx), u.rep.RunID, injector.StateRecovered); err != nil {
				u.log.Error().Err(err).Msg("recovering the run's faults at the end of the method")
			}
			u.refreshAttacks()
			u.mu.Lock()
			u.methodEnded = now
			for _, a := range u.attacks {
				if a.Recovered.After(u.methodEnded) {
					u.methodEnded = a.Recovered
				}
			}
			ended := u.methodEnded
			u.mu.Unlock()
			observeUntil = ended.Add(x.Observe)
			u.mark(ended, "runner", "method ended: every fault recovered", "", "observing for "+fmtDur(x.Observe), "")
		}
		if !u.methodEnded.IsZero() {
			if u.healthyAt.IsZero() && !now.Before(nextHealth) {
				nextHealth = now.Add(500 * time.Millisecond)
				if len(u.unhealthy(ctx)) == 0 {
					u.healthyAt = time.Now()
				}
			}
			if !now.Before(observeUntil) {
				return true
			}
		}
	}
}

// allRecoveredOrOpenEnded: every attack with a duration has been recovered.
func (u *run) allRecoveredOrOpenEnded() bool {
	for _, a := range u.snapshotAttacks() {
		if a.Duration > 0 {
			if _, active := u.r.Inj.Get(a.ID); active {
				return false
			}
		}
	}
	return true
}

func (u *run) addAttack(a injector.Attack) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.attacks = append(u.attacks, a)
	if u.firstFault.IsZero() || a.Started.Before(u.firstFault) {
		u.firstFault = a.Started
	}
	if !a.Applied.IsZero() && (u.firstApplied.IsZero() || a.Applied.Before(u.firstApplied)) {
		u.firstApplied = a.Applied
	}
}

func (u *run) snapshotAttacks() []injector.Attack {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]injector.Attack(nil), u.attacks...)
}

// refreshAttacks updates the attacks' states from the injector.
func (u *run) refreshAttacks() {
	u.mu.Lock()
	defer u.mu.Unlock()
	for i, a := range u.attacks {
		if cur, ok := u.r.Inj.Lookup(a.ID); ok {
			u.attacks[i] = cur
		}
	}
}

func (u *run) abort(ctx context.Context, lr LoadRun, reason string) {
	u.rep.Aborted = true
	u.rep.AbortReason = reason
	u.log.Warn().Str("reason", reason).Msg("experiment aborted; rolling back")
	u.mark(time.Now(), "runner", "aborted", "", reason, "")
	if err := u.r.Inj.HaltRun(context.WithoutCancel(ctx), u.rep.RunID, injector.StateHalted); err != nil {
		u.log.Error().Err(err).Msg("recovering the run's faults after the abort")
	}
	u.refreshAttacks()
	u.mu.Lock()
	if u.methodEnded.IsZero() {
		u.methodEnded = time.Now()
	}
	u.mu.Unlock()
	if lr != nil {
		_ = lr.Stop()
	}
}

func (u *run) waitLoad(parent context.Context, lr LoadRun) {
	if lr == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), u.x.Observe+5*time.Minute)
	defer cancel()
	// Interrupted (Ctrl-C): the load stops producing and closes its history now.
	stop := context.AfterFunc(parent, func() { _ = lr.Stop() })
	defer stop()
	if err := lr.Wait(ctx); err != nil && u.rep.Load != nil {
		u.rep.Load.Error = err.Error()
		if !u.rep.Aborted {
			u.log.Warn().Err(err).Msg("the load ended with an error")
		}
	}
	if u.hist != nil {
		_ = u.hist.Poll()
	}
}

func (u *run) check(parent context.Context) {
	if u.rep.Load == nil || u.r.Env.Load() == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(parent), 5*time.Minute)
	defer cancel()
	cr, err := u.r.Env.Load().Check(ctx, u.rep.Load.History, filepath.Join(u.rep.Dir, "check.json"))
	if err != nil {
		if u.rep.Error == "" {
			u.rep.Error = "loss check: " + err.Error()
		}
		if cr.Raw == nil {
			return
		}
	}
	u.rep.Check = &cr
	u.mark(time.Now(), "runner", "loss check done", "", fmt.Sprintf("acknowledged %d, delivered %d, lost %d, unexpected %d, rate violations %d, drained %v",
		cr.Acknowledged, cr.Delivered, cr.Lost, cr.Unexpected, cr.RateViolations, cr.Drained), "")
}

// finish evaluates the hypotheses, rolls back, builds the timeline and the control
// comparison, writes the report and publishes the result.
func (u *run) finish() {
	r, rep := u.r, u.rep
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	u.refreshAttacks()
	rep.Attacks = u.snapshotAttacks()
	if !u.firstFault.IsZero() && !rep.Aborted {
		u.waitHealthy(ctx)
		rep.Hypotheses = u.hypotheses()
	}
	u.rollback(ctx)
	u.timeline()
	u.control()
	rep.UndecodableEvents = u.w.bad
	rep.Ended = time.Now().UTC()
	held := len(rep.Hypotheses) > 0
	for _, h := range rep.Hypotheses {
		held = held && h.Held
	}
	rep.Passed = held && !rep.Aborted && rep.Error == ""
	result := "passed"
	switch {
	case rep.Error != "" && len(rep.Hypotheses) == 0 && !rep.Aborted:
		result = "error"
	case rep.Aborted:
		result = "aborted"
	case !rep.Passed:
		result = "failed"
	}
	if r.Metrics != nil {
		r.Metrics.Experiments.WithLabelValues(result).Inc()
	}
	if err := rep.Write(); err != nil {
		u.log.Error().Err(err).Msg("writing the report")
		if rep.Error == "" {
			rep.Error = "writing the report: " + err.Error()
		}
		rep.Passed = false
	}
	u.publish(ctx)
	lvl := u.log.Info()
	if !rep.Passed {
		lvl = u.log.Warn()
	}
	lvl.Str("result", result).Str("report", filepath.Join(rep.Dir, "report.html")).Str("abort", rep.AbortReason).Str("error", rep.Error).Msg("experiment finished")
}

func (u *run) waitHealthy(ctx context.Context) {
	h := u.x.Hypothesis.HealthyWithin
	if h == nil || !u.healthyAt.IsZero() || u.methodEnded.IsZero() {
		return
	}
	deadline := u.methodEnded.Add(*h)
	for time.Now().Before(deadline) {
		if len(u.unhealthy(ctx)) == 0 {
			u.healthyAt = time.Now()
			return
		}
		if sleepCtx(ctx, 500*time.Millisecond) != nil {
			return
		}
	}
}

func (u *run) rollback(ctx context.Context) {
	for _, rb := range u.x.Rollbacks {
		start := time.Now()
		var err error
		switch rb.Action {
		case experiment.RollbackRecoverFaults:
			err = u.r.Inj.HaltRun(ctx, u.rep.RunID, injector.StateRecovered)
		case experiment.RollbackStartStopped:
			err = u.r.Env.StartStopped(ctx)
		case experiment.RollbackResetLinks:
			err = u.r.Env.ResetLinks(ctx)
		case experiment.RollbackWaitHealthy:
			to := rb.Timeout
			if to <= 0 {
				to = time.Minute
			}
			deadline := time.Now().Add(to)
			for {
				bad := u.unhealthy(ctx)
				if len(bad) == 0 {
					break
				}
				if time.Now().After(deadline) {
					err = fmt.Errorf("still unhealthy after %s: %s", to, strings.Join(bad, ", "))
					break
				}
				if sleepCtx(ctx, 500*time.Millisecond) != nil {
					err = ctx.Err()
					break
				}
			}
		}
		res := RollbackResult{Action: rb.Action, Took: fmtDur(time.Since(start))}
		if err != nil {
			res.Error = err.Error()
			u.log.Error().Err(err).Str("action", rb.Action).Msg("rollback action failed")
		}
		u.rep.Rollbacks = append(u.rep.Rollbacks, res)
		u.mark(time.Now(), "runner", "rollback: "+rb.Action, "", res.Error, "")
	}
}

func (u *run) publish(ctx context.Context) {
	rep := u.rep
	p := &events.ExperimentResult{RunID: rep.RunID, Experiment: rep.Experiment, Passed: rep.Passed, Aborted: rep.Aborted,
		Hypotheses: rep.Hypotheses, Report: filepath.Join(rep.Dir, "report.json"), Started: rep.Started, Ended: rep.Ended}
	if rep.Check != nil {
		p.Acked, p.Delivered, p.Lost = rep.Check.Acknowledged, rep.Check.Delivered, rep.Check.Lost
	}
	shard, key := "", "fleet"
	if len(rep.Shards) == 1 {
		shard, key = rep.Shards[0], rep.Shards[0]
	}
	e := events.New(events.KindExperimentResult, u.r.source(), shard, p)
	e.CorrelationID = rep.RunID
	b, err := events.Encode(e)
	if err != nil {
		u.log.Error().Err(err).Msg("encoding the experiment result")
		return
	}
	if err := u.r.Env.Stream().Publish(ctx, events.TopicChaos, stream.Message{Key: key, ID: e.ID, Data: b}); err != nil {
		u.log.Error().Err(err).Msg("publishing the experiment result")
	}
}

func (r *Runner) source() events.Source {
	if r.Source.Service == "" {
		return events.Source{Service: "chaos"}
	}
	return r.Source
}

func (u *run) mark(at time.Time, source, what, shard, detail, corr string) {
	u.mu.Lock()
	defer u.mu.Unlock()
	u.rep.Timeline = append(u.rep.Timeline, TimelineEntry{At: at.UTC(), Source: source, What: what, Shard: shard, Detail: detail, CorrelationID: corr})
}

func (u *run) inScope(shard string) bool { return u.attacked == nil || u.attacked[shard] }

func targetsOf(a injector.Attack) string {
	var s []string
	for _, t := range a.Targets {
		s = append(s, t.String())
	}
	return strings.Join(s, ", ")
}

func orNone(s []string) string {
	if len(s) == 0 {
		return "none"
	}
	return strings.Join(s, ", ")
}

func sleepCtx(ctx context.Context, d time.Duration) error {
	if d <= 0 {
		return ctx.Err()
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

var nonSlug = regexp.MustCompile(`[^a-z0-9]+`)

func slug(s string) string {
	s = strings.Trim(nonSlug.ReplaceAllString(strings.ToLower(s), "-"), "-")
	if len(s) > 40 {
		s = strings.TrimRight(s[:40], "-")
	}
	if s == "" {
		s = "experiment"
	}
	return s
}

func shortID(id string) string {
	id = strings.ReplaceAll(id, "-", "")
	if len(id) > 12 {
		return id[len(id)-12:]
	}
	return id
}
