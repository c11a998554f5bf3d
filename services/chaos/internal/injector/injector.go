// Package injector runs attacks: it validates a request, resolves its targets, applies
// the safety rules (allowlist, dry run outside the local topology, at most N shards
// under attack, never a degraded shard or one with an open alert), publishes every
// attack on the chaos topic (started, recovered, halted; correlation id = attack id),
// applies the faults, recovers them when their duration is over, and recovers every
// active fault at once on a halt.
package injector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/fault"
	"github.com/heartline/heartline/services/chaos/internal/target"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/stream"
)

// ActivePrefix is the kv prefix of the record of each active attack, so that a chaos
// process that died mid-attack leaves a trace its successor recovers.
const ActivePrefix = "chaos.active"

// Config holds the safety settings.
type Config struct {
	Source events.Source
	// Execute allows acting through drivers that need it (docker, kubernetes). Without
	// it, attacks there are dry runs.
	Execute bool
	// DryRun makes every attack a dry run.
	DryRun bool
	// Allow is the allowlist: path.Match patterns over target names such as
	// "shard-*/primary", "ratequeue/*", "link/*". Empty allows nothing.
	Allow []string
	// MaxShards is how many shards may be under attack at once (default 1).
	MaxShards int
	// RecoverTimeout bounds one recovery (default 30 s).
	RecoverTimeout time.Duration
}

// Request asks for one attack.
type Request struct {
	Fault    fault.Kind        `json:"fault"`
	Target   string            `json:"target"`
	Duration time.Duration     `json:"duration"`
	Params   map[string]string `json:"params,omitempty"`
	DryRun   bool              `json:"dry_run,omitempty"`
	// Set by the experiment runner.
	RunID      string          `json:"run_id,omitempty"`
	Experiment string          `json:"experiment,omitempty"`
	Binding    *target.Binding `json:"-"`
	// MaxShards overrides Config.MaxShards for this request when above it (an
	// experiment that says so explicitly).
	MaxShards int `json:"-"`
	// Attacked lists shards this run attacked earlier (its faults may be recovered
	// already while the shard is still healing): their health is not checked again.
	Attacked []string `json:"-"`
}

// State of an attack.
type State string

const (
	StateActive    State = "active"
	StateRecovered State = "recovered"
	StateHalted    State = "halted"
	StateFailed    State = "failed"
	StateDryRun    State = "dry-run"
)

// Attack is one request applied to its targets.
type Attack struct {
	ID         string            `json:"id"`
	Fault      fault.Kind        `json:"fault"`
	Selector   string            `json:"selector"`
	Targets    []target.Target   `json:"targets"`
	Params     fault.Params      `json:"params,omitempty"`
	Duration   time.Duration     `json:"duration_ns,omitempty"`
	DryRun     bool              `json:"dry_run"`
	RunID      string            `json:"run_id,omitempty"`
	Experiment string            `json:"experiment,omitempty"`
	Started    time.Time         `json:"started"`
	Applied    time.Time         `json:"applied,omitzero"`
	Recovered  time.Time         `json:"recovered,omitzero"`
	State      State             `json:"state"`
	Error      string            `json:"error,omitempty"`
	Stats      map[string]string `json:"stats,omitempty"`

	faults []fault.Fault
	timer  *time.Timer
	done   chan struct{}
}

// Shards lists the shards the attack touches.
func (a *Attack) Shards() []string {
	seen := map[string]bool{}
	var out []string
	for _, t := range a.Targets {
		if t.Shard != "" && !seen[t.Shard] {
			seen[t.Shard] = true
			out = append(out, t.Shard)
		}
	}
	sort.Strings(out)
	return out
}

// Done is closed when the attack is recovered (or halted).
func (a *Attack) Done() <-chan struct{} { return a.done }

func (a *Attack) snapshot() Attack {
	c := *a
	c.faults, c.timer = nil, nil
	c.Targets = append([]target.Target(nil), a.Targets...)
	return c
}

// Injector applies attacks.
type Injector struct {
	cfg      Config
	deps     fault.Deps
	resolver target.Resolver
	health   Health
	pub      stream.Publisher
	kv       kv.Store
	log      zerolog.Logger
	m        *Metrics

	mu       sync.Mutex
	active   map[string]*Attack
	finished map[string]*Attack // recently finished, for Lookup
	order    []string
	halting  bool
}

// New returns an injector. health may be nil (no shard checks: tests only); kvs may be
// nil (no active-attack records).
func New(cfg Config, deps fault.Deps, resolver target.Resolver, health Health, pub stream.Publisher, kvs kv.Store, m *Metrics, log zerolog.Logger) *Injector {
	if cfg.MaxShards <= 0 {
		cfg.MaxShards = 1
	}
	if cfg.RecoverTimeout <= 0 {
		cfg.RecoverTimeout = 30 * time.Second
	}
	if cfg.Source.Service == "" {
		cfg.Source.Service = "chaos"
	}
	if m == nil {
		m = NewMetrics(nil)
	}
	in := &Injector{cfg: cfg, deps: deps, health: health, pub: pub, kv: kvs, log: log, m: m, active: map[string]*Attack{}, finished: map[string]*Attack{}}
	in.resolver = resolver
	if in.resolver.Eligible == nil {
		in.resolver.Eligible = in.eligible
	}
	return in
}

// Resolver returns the resolver with the injector's eligibility rules, for callers that
// bind a run's shard before attacking.
func (in *Injector) Resolver() target.Resolver { return in.resolver }

// eligible: a shard "random" may pick: allowlisted for some node, not under attack by
// anyone, healthy.
func (in *Injector) eligible(ctx context.Context, shard string) error {
	if !in.allowed(shard+"/primary") && !in.allowed(shard+"/replica") {
		return fmt.Errorf("%w: neither %s/primary nor %s/replica", ErrNotAllowed, shard, shard)
	}
	in.mu.Lock()
	for _, a := range in.active {
		for _, s := range a.Shards() {
			if s == shard {
				in.mu.Unlock()
				return fmt.Errorf("%w: attack %s", ErrBusy, a.ID)
			}
		}
	}
	in.mu.Unlock()
	if in.health != nil {
		return in.health.Check(ctx, shard)
	}
	return nil
}

func (in *Injector) allowed(name string) bool {
	for _, p := range in.cfg.Allow {
		if p == "*" {
			return true
		}
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// Plan validates a request and resolves its targets without applying anything.
func (in *Injector) Plan(ctx context.Context, req Request) (fault.Info, fault.Params, []target.Target, error) {
	info, err := fault.Lookup(req.Fault)
	if err != nil {
		return info, nil, nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	params, err := info.CheckParams(req.Params)
	if err != nil {
		return info, nil, nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if req.Duration < 0 || req.Duration > fault.MaxDuration {
		return info, nil, nil, fmt.Errorf("%w: duration %s: want 0 to %s", ErrInvalid, req.Duration, fault.MaxDuration)
	}
	if info.Duration == fault.DurationRequired && req.Duration <= 0 {
		return info, nil, nil, fmt.Errorf("%w: %s needs a duration", ErrInvalid, info.Kind)
	}
	sel, err := target.Parse(req.Target)
	if err != nil {
		return info, nil, nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	if err := info.CheckSelector(sel); err != nil {
		return info, nil, nil, fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	targets, err := in.resolver.Resolve(ctx, sel, req.Binding)
	if err != nil {
		return info, nil, nil, fmt.Errorf("not attacking: %w", err)
	}
	for _, t := range targets {
		if err := info.CheckTarget(t); err != nil {
			return info, nil, nil, fmt.Errorf("%w: %v", ErrInvalid, err)
		}
	}
	return info, params, targets, nil
}

// Start validates, checks safety, publishes and applies one attack. The returned
// attack is a snapshot.
func (in *Injector) Start(ctx context.Context, req Request) (Attack, error) {
	info, params, targets, err := in.Plan(ctx, req)
	if err != nil {
		in.m.Attacks.WithLabelValues(string(req.Fault), "refused").Inc()
		return Attack{}, err
	}
	dry := req.DryRun || in.cfg.DryRun
	if in.deps.Driver != nil && in.deps.Driver.NeedsExecute() && !in.cfg.Execute {
		dry = true
	}
	a := &Attack{ID: events.NewID(), Fault: info.Kind, Selector: req.Target, Targets: targets, Params: params,
		Duration: req.Duration, DryRun: dry, RunID: req.RunID, Experiment: req.Experiment, done: make(chan struct{})}
	for _, t := range targets {
		f, err := fault.Build(fault.Spec{Kind: info.Kind, Params: params, Duration: req.Duration, AttackID: a.ID}, t, in.deps)
		if err != nil {
			in.m.Attacks.WithLabelValues(string(req.Fault), "refused").Inc()
			return Attack{}, fmt.Errorf("not attacking: %w", err)
		}
		a.faults = append(a.faults, f)
	}
	log := in.log.With().Str("attack_id", a.ID).Str(logging.FieldCorrelationID, a.ID).Str("fault", string(a.Fault)).
		Str("selector", a.Selector).Str("run_id", a.RunID).Logger()

	// Safety: the cheap rules under the lock, the health of the shards (network I/O)
	// outside it, then the cheap rules again with the registration, so that two
	// concurrent requests cannot both pass and a halt never waits on a health check.
	in.mu.Lock()
	toCheck, err := in.checkSafety(a, req)
	in.mu.Unlock()
	if err == nil && in.health != nil {
		for _, s := range toCheck {
			if herr := in.health.Check(ctx, s); herr != nil {
				err = fmt.Errorf("not attacking shard %s: %w", s, herr)
				break
			}
		}
	}
	if err == nil {
		in.mu.Lock()
		_, err = in.checkSafety(a, req)
		if err != nil {
			in.mu.Unlock()
		}
	}
	if err != nil {
		in.m.Attacks.WithLabelValues(string(a.Fault), "refused").Inc()
		log.Warn().Err(err).Msg("attack refused")
		return Attack{}, err
	}
	a.Started = time.Now().UTC()
	if dry {
		in.mu.Unlock()
		a.State = StateDryRun
		if err := in.publish(ctx, events.KindChaosAttackStarted, a, ""); err != nil {
			log.Warn().Err(err).Msg("dry-run event not published")
		}
		in.m.Attacks.WithLabelValues(string(a.Fault), "dry_run").Inc()
		log.Info().Strs("targets", names(a.Targets)).Msg("dry run: would attack")
		close(a.done)
		return a.snapshot(), nil
	}
	a.State = StateActive
	in.active[a.ID] = a
	in.m.Active.Set(float64(len(in.active)))
	in.mu.Unlock()

	// No attack without its event: if the stream cannot record it, it does not happen.
	if err := in.publish(ctx, events.KindChaosAttackStarted, a, ""); err != nil {
		in.forget(a)
		close(a.done)
		in.m.Attacks.WithLabelValues(string(a.Fault), "refused").Inc()
		return Attack{}, fmt.Errorf("not attacking: %w: %v", ErrNotRecorded, err)
	}
	in.record(ctx, a)
	in.m.Attacks.WithLabelValues(string(a.Fault), "started").Inc()
	log.Warn().Strs("targets", names(a.Targets)).Dur("duration", a.Duration).Msg("attack started")

	// Apply to every target at once (a resync storm hits its replicas together).
	errs := make([]error, len(a.faults))
	var wg sync.WaitGroup
	for i, f := range a.faults {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f.Apply(ctx)
		}()
	}
	wg.Wait()
	applyErr := errors.Join(errs...)
	in.mu.Lock()
	a.Applied = time.Now().UTC()
	in.mu.Unlock()
	if applyErr != nil {
		log.Error().Err(applyErr).Msg("applying the fault failed; recovering")
		in.m.Attacks.WithLabelValues(string(a.Fault), "failed").Inc()
		in.mu.Lock()
		a.Error = applyErr.Error()
		in.mu.Unlock()
		_ = in.recover(context.WithoutCancel(ctx), a, StateFailed)
		return a.snapshotLocked(in), fmt.Errorf("attack %s: %w", a.ID, applyErr)
	}
	if a.Duration > 0 {
		in.mu.Lock()
		if a.State == StateActive {
			a.timer = time.AfterFunc(a.Duration, func() {
				_ = in.recover(context.Background(), a, StateRecovered)
			})
		}
		in.mu.Unlock()
	}
	return a.snapshotLocked(in), nil
}

func (a *Attack) snapshotLocked(in *Injector) Attack {
	in.mu.Lock()
	defer in.mu.Unlock()
	return a.snapshot()
}

// checkSafety runs the rules that need no I/O (in.mu is held) and returns the shards
// whose health must be checked: those not already under attack by the same run.
func (in *Injector) checkSafety(a *Attack, req Request) ([]string, error) {
	if in.halting {
		return nil, fmt.Errorf("not attacking: %w", ErrHalted)
	}
	for _, t := range a.Targets {
		if !in.allowed(t.Name()) {
			return nil, fmt.Errorf("not attacking %s: %w (allowed: %s)", t, ErrNotAllowed, strings.Join(in.cfg.Allow, ", "))
		}
	}
	// Shards under attack now, and by whom.
	owner := map[string]string{}
	busy := map[string]string{}
	for _, other := range in.active {
		for _, s := range other.Shards() {
			owner[s] = other.RunID
		}
		for _, t := range other.Targets {
			busy[string(t.Kind)+t.Name()+t.Addr] = other.RunID
		}
	}
	for _, t := range a.Targets {
		if run, ok := busy[string(t.Kind)+t.Name()+t.Addr]; ok && (run != a.RunID || a.RunID == "") {
			return nil, fmt.Errorf("not attacking %s: %w", t, ErrBusy)
		}
	}
	all := map[string]bool{}
	for s := range owner {
		all[s] = true
	}
	for _, s := range a.Shards() {
		all[s] = true
	}
	limit := in.cfg.MaxShards
	if req.MaxShards > limit {
		limit = req.MaxShards
	}
	if len(all) > limit {
		return nil, fmt.Errorf("not attacking %s: %w: %d shards would be under attack, at most %d", strings.Join(a.Shards(), ","), ErrTooManyShards, len(all), limit)
	}
	var check []string
	for _, s := range a.Shards() {
		if run, ok := owner[s]; ok && run == a.RunID && a.RunID != "" {
			continue // this run degraded it on purpose
		}
		if contains(req.Attacked, s) {
			continue
		}
		check = append(check, s)
	}
	return check, nil
}

// Recover recovers one active attack.
func (in *Injector) Recover(ctx context.Context, id string) (Attack, error) {
	in.mu.Lock()
	a, ok := in.active[id]
	in.mu.Unlock()
	if !ok {
		return Attack{}, fmt.Errorf("%w: %q", ErrUnknownAttack, id)
	}
	err := in.recover(ctx, a, StateRecovered)
	return a.snapshotLocked(in), err
}

// recover recovers every fault of a once; concurrent callers wait for the first.
func (in *Injector) recover(ctx context.Context, a *Attack, final State) error {
	in.mu.Lock()
	if _, ok := in.active[a.ID]; !ok {
		in.mu.Unlock()
		<-a.done
		return nil
	}
	delete(in.active, a.ID)
	in.m.Active.Set(float64(len(in.active)))
	if a.timer != nil {
		a.timer.Stop()
	}
	in.mu.Unlock()
	defer close(a.done)

	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), in.cfg.RecoverTimeout)
	defer cancel()
	errs := make([]error, len(a.faults))
	var wg sync.WaitGroup
	for i, f := range a.faults {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = f.Recover(rctx)
		}()
	}
	wg.Wait()
	err := errors.Join(errs...)
	stats := map[string]string{}
	for _, f := range a.faults {
		if s, ok := f.(fault.Statser); ok {
			for k, v := range s.Stats() {
				stats[k] = v
			}
		}
	}
	in.mu.Lock()
	a.Recovered = time.Now().UTC()
	if a.State == StateActive {
		a.State = final
	}
	in.finished[a.ID] = a
	in.order = append(in.order, a.ID)
	if len(in.order) > 1000 {
		delete(in.finished, in.order[0])
		in.order = in.order[1:]
	}
	if len(stats) > 0 {
		a.Stats = stats
	}
	if err != nil {
		if a.Error != "" {
			a.Error += "; "
		}
		a.Error += "recovery: " + err.Error()
	}
	in.mu.Unlock()
	kind := events.KindChaosAttackRecover
	result := "recovered"
	if final == StateHalted {
		kind, result = events.KindChaosAttackHalted, "halted"
	}
	if final != StateFailed {
		in.m.Attacks.WithLabelValues(string(a.Fault), result).Inc()
	}
	errText := ""
	if err != nil {
		errText = err.Error()
	}
	if perr := in.publish(rctx, kind, a, errText); perr != nil {
		in.log.Error().Err(perr).Str("attack_id", a.ID).Msg("recovery event not published")
	}
	in.unrecord(rctx, a)
	l := in.log.With().Str("attack_id", a.ID).Str(logging.FieldCorrelationID, a.ID).Str("fault", string(a.Fault)).Logger()
	if err != nil {
		l.Error().Err(err).Str("state", string(a.State)).Msg("attack recovered with errors: check the targets by hand")
	} else {
		l.Warn().Str("state", string(final)).Msg("attack recovered")
	}
	return err
}

// Halt recovers every active attack at once and refuses new ones while it runs.
func (in *Injector) Halt(ctx context.Context, reason string) ([]Attack, error) {
	in.mu.Lock()
	in.halting = true
	list := make([]*Attack, 0, len(in.active))
	for _, a := range in.active {
		list = append(list, a)
	}
	in.mu.Unlock()
	defer func() {
		in.mu.Lock()
		in.halting = false
		in.mu.Unlock()
	}()
	in.m.Halts.Inc()
	in.log.Warn().Int("active", len(list)).Str("reason", reason).Msg("HALT: recovering every active attack")
	errs := make([]error, len(list))
	var wg sync.WaitGroup
	for i, a := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = in.recover(ctx, a, StateHalted)
		}()
	}
	wg.Wait()
	out := make([]Attack, len(list))
	for i, a := range list {
		out[i] = a.snapshotLocked(in)
	}
	return out, errors.Join(errs...)
}

// HaltRun recovers every active attack of one run (an experiment's abort or end).
func (in *Injector) HaltRun(ctx context.Context, runID string, final State) error {
	in.mu.Lock()
	var list []*Attack
	for _, a := range in.active {
		if a.RunID == runID {
			list = append(list, a)
		}
	}
	in.mu.Unlock()
	errs := make([]error, len(list))
	var wg sync.WaitGroup
	for i, a := range list {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = in.recover(ctx, a, final)
		}()
	}
	wg.Wait()
	return errors.Join(errs...)
}

// Active lists the active attacks, oldest first.
func (in *Injector) Active() []Attack {
	in.mu.Lock()
	defer in.mu.Unlock()
	out := make([]Attack, 0, len(in.active))
	for _, a := range in.active {
		out = append(out, a.snapshot())
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Started.Before(out[j].Started) })
	return out
}

// Get returns an active attack.
func (in *Injector) Get(id string) (Attack, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	a, ok := in.active[id]
	if !ok {
		return Attack{}, false
	}
	return a.snapshot(), true
}

// Lookup returns an active or recently finished attack.
func (in *Injector) Lookup(id string) (Attack, bool) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if a, ok := in.active[id]; ok {
		return a.snapshot(), true
	}
	if a, ok := in.finished[id]; ok {
		return a.snapshot(), true
	}
	return Attack{}, false
}

func (in *Injector) forget(a *Attack) {
	in.mu.Lock()
	delete(in.active, a.ID)
	in.m.Active.Set(float64(len(in.active)))
	in.mu.Unlock()
}

func (in *Injector) publish(ctx context.Context, kind events.Kind, a *Attack, errText string) error {
	if in.pub == nil {
		return nil
	}
	in.mu.Lock()
	p := &events.ChaosAttack{AttackID: a.ID, Fault: string(a.Fault), Target: strings.Join(names(a.Targets), ","),
		Experiment: a.Experiment, RunID: a.RunID, Duration: a.Duration, DryRun: a.DryRun, Error: errText}
	if len(p.Target) > 512 {
		p.Target = p.Target[:512] + "..."
	}
	var nodes []string
	for _, t := range a.Targets {
		if t.Addr != "" {
			nodes = append(nodes, t.Addr)
		}
	}
	p.Node = strings.Join(nodes, ",")
	if len(a.Params) > 0 || len(a.Stats) > 0 {
		p.Params = map[string]string{}
		for k, v := range a.Params {
			p.Params[k] = v
		}
		for k, v := range a.Stats {
			p.Params["stat."+k] = v
		}
	}
	key := "fleet"
	shard := ""
	if s := a.Shards(); len(s) == 1 {
		key, shard = s[0], s[0]
	}
	in.mu.Unlock()
	e := events.New(kind, in.cfg.Source, shard, p)
	e.CorrelationID = a.ID
	b, err := events.Encode(e)
	if err != nil {
		return err
	}
	return in.pub.Publish(ctx, events.TopicChaos, stream.Message{Key: key, ID: e.ID, Data: b})
}

func (in *Injector) record(ctx context.Context, a *Attack) {
	if in.kv == nil {
		return
	}
	in.mu.Lock()
	b, _ := json.Marshal(a.snapshot())
	in.mu.Unlock()
	if _, err := in.kv.Put(ctx, kv.Key(ActivePrefix, a.ID), b); err != nil {
		in.log.Warn().Err(err).Str("attack_id", a.ID).Msg("could not record the active attack in kv")
	}
}

func (in *Injector) unrecord(ctx context.Context, a *Attack) {
	if in.kv == nil {
		return
	}
	if err := in.kv.Delete(ctx, kv.Key(ActivePrefix, a.ID), 0); err != nil {
		in.log.Warn().Err(err).Str("attack_id", a.ID).Msg("could not remove the attack record from kv")
	}
}

// RecoverLeftovers recovers attacks recorded in kv by a chaos process that died before
// recovering them (a paused node would otherwise stay paused). Faults that cannot be
// rebuilt here (the links died with that process) are logged and dropped.
func (in *Injector) RecoverLeftovers(ctx context.Context) (int, error) {
	if in.kv == nil {
		return 0, nil
	}
	entries, err := in.kv.List(ctx, ActivePrefix)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, e := range entries {
		var rec Attack
		if err := json.Unmarshal(e.Value, &rec); err != nil || rec.ID == "" {
			in.log.Warn().Str("key", e.Key).Msg("unreadable leftover attack record; deleted")
			_ = in.kv.Delete(ctx, e.Key, 0)
			continue
		}
		a := &rec
		a.done = make(chan struct{})
		a.State = StateActive
		for _, t := range a.Targets {
			f, err := fault.Build(fault.Spec{Kind: a.Fault, Params: a.Params, Duration: a.Duration, AttackID: a.ID}, t, in.deps)
			if err != nil {
				in.log.Warn().Err(err).Str("attack_id", a.ID).Str("target", t.String()).Msg("cannot rebuild a leftover fault")
				continue
			}
			a.faults = append(a.faults, f)
		}
		in.mu.Lock()
		in.active[a.ID] = a
		in.mu.Unlock()
		in.log.Warn().Str("attack_id", a.ID).Str("fault", string(a.Fault)).Strs("targets", names(a.Targets)).
			Msg("recovering an attack left active by an earlier chaos process")
		if err := in.recover(ctx, a, StateRecovered); err != nil {
			in.log.Error().Err(err).Str("attack_id", a.ID).Msg("leftover attack recovered with errors")
		}
		n++
	}
	return n, nil
}

func names(ts []target.Target) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.String()
	}
	return out
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}
