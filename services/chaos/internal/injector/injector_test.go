package injector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/driver"
	"github.com/heartline/heartline/services/chaos/internal/driver/local"
	"github.com/heartline/heartline/services/chaos/internal/fault"
	"github.com/heartline/heartline/services/chaos/internal/target"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/memstream"
	"github.com/heartline/heartline/shared/topology"
)

type fleet struct {
	shards map[string]*redistest.Shard
	kv     *memkv.Store
	stream *memstream.Client
	drv    *local.Driver
	inj    *Injector
	reg    *prometheus.Registry
	m      *Metrics
	evMu   sync.Mutex
	evs    []events.Event
}

func newFleet(t *testing.T, n int, cfg Config) *fleet {
	t.Helper()
	f := &fleet{shards: map[string]*redistest.Shard{}, kv: memkv.New(), stream: memstream.New()}
	var m topology.Map
	f.drv = local.New(local.Options{RedisRestartDelay: time.Hour, Log: zerolog.Nop()})
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("s%d", i+1)
		sh := redistest.StartShard(t, id, 1)
		f.shards[id] = sh
		m.Shards = append(m.Shards, topology.Shard{ID: id, Index: i, Epoch: 1, Primary: sh.Primary.Addr(), Replicas: []string{sh.Replicas[0].Addr()}})
		for _, nd := range sh.Nodes() {
			f.drv.AddRedis(nd.Addr(), local.NewRedis(nd.Process))
		}
	}
	ctx := context.Background()
	if _, err := (topology.Store{KV: f.kv}).Seed(ctx, m); err != nil {
		t.Fatal(err)
	}
	f.reg = prometheus.NewRegistry()
	f.m = NewMetrics(f.reg)
	if cfg.Allow == nil {
		cfg.Allow = []string{"*"}
	}
	deps := fault.Deps{Driver: f.drv, Log: zerolog.Nop()}
	f.inj = New(cfg, deps, target.Resolver{Inv: Inventory{KV: f.kv, Driver: f.drv}}, ShardHealth{KV: f.kv}, f.stream, f.kv, f.m, zerolog.Nop())
	cctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = f.stream.Consume(cctx, stream.Subscription{Topic: events.TopicChaos, Group: "test", Start: stream.StartOldest},
			func(_ context.Context, d stream.Delivery) error {
				e, err := events.Decode(d.Data)
				if err != nil {
					t.Errorf("undecodable chaos event: %v", err)
					return nil
				}
				f.evMu.Lock()
				f.evs = append(f.evs, e)
				f.evMu.Unlock()
				return nil
			})
	}()
	t.Cleanup(func() {
		_, _ = f.inj.Halt(context.Background(), "test cleanup")
		cancel()
		<-done
	})
	return f
}

func (f *fleet) events(kind events.Kind, attack string) []events.Event {
	f.evMu.Lock()
	defer f.evMu.Unlock()
	var out []events.Event
	for _, e := range f.evs {
		if e.Kind == kind && (attack == "" || e.CorrelationID == attack) {
			out = append(out, e)
		}
	}
	return out
}

// answersSoon polls: a loaded machine may be slow to answer, a paused node never does.
func answersSoon(addr string) bool {
	deadline := time.Now().Add(10 * time.Second)
	for !answers(addr) {
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
	return true
}

func answers(addr string) bool {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 300 * time.Millisecond, ReadTimeout: 300 * time.Millisecond, ContextTimeoutEnabled: true})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 400*time.Millisecond)
	defer cancel()
	return c.Ping(ctx).Err() == nil
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func TestAttackIsPublishedRecordedAndRecoveredAfterItsDuration(t *testing.T) {
	ctx := ctxT(t)
	f := newFleet(t, 1, Config{})
	p := f.shards["s1"].Primary
	a, err := f.inj.Start(ctx, Request{Fault: fault.Pause, Target: "shard:s1/primary", Duration: 400 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	if a.State != StateActive || len(a.Targets) != 1 || a.Targets[0].Addr != p.Addr() {
		t.Fatalf("attack: %+v", a)
	}
	if answers(p.Addr()) {
		t.Fatal("the primary answers while paused")
	}
	if _, err := f.kv.Get(ctx, kv.Key(ActivePrefix, a.ID)); err != nil {
		t.Fatalf("active attack not recorded in kv: %v", err)
	}
	redistest.WaitFor(t, 20*time.Second, "automatic recovery", func() bool { return answers(p.Addr()) })
	redistest.WaitFor(t, 10*time.Second, "recovered event", func() bool { return len(f.events(events.KindChaosAttackRecover, a.ID)) == 1 })
	st := f.events(events.KindChaosAttackStarted, a.ID)
	if len(st) != 1 {
		t.Fatalf("started events: %d", len(st))
	}
	e := st[0]
	pl := e.Payload.(*events.ChaosAttack)
	if e.CorrelationID != a.ID || e.Shard != "s1" || pl.AttackID != a.ID || pl.Fault != "pause" || pl.Target != "s1/primary("+p.Addr()+")" || pl.DryRun {
		t.Fatalf("started event: %+v %+v", e, pl)
	}
	if _, err := f.kv.Get(ctx, kv.Key(ActivePrefix, a.ID)); !errors.Is(err, kv.ErrNotFound) {
		t.Fatalf("record not removed after recovery: %v", err)
	}
	if len(f.inj.Active()) != 0 {
		t.Fatal("attack still listed as active")
	}
	if v := testutil.ToFloat64(f.m.Attacks.WithLabelValues("pause", "recovered")); v != 1 {
		t.Fatalf("recovered metric %v", v)
	}
}

func TestDryRunChangesNothing(t *testing.T) {
	ctx := ctxT(t)
	f := newFleet(t, 1, Config{})
	p := f.shards["s1"].Primary
	a, err := f.inj.Start(ctx, Request{Fault: fault.Kill, Target: "shard:s1/primary", DryRun: true})
	if err != nil {
		t.Fatal(err)
	}
	if a.State != StateDryRun || !a.DryRun {
		t.Fatalf("state %s", a.State)
	}
	if !p.Running() || !answersSoon(p.Addr()) {
		t.Fatal("a dry run killed the primary")
	}
	redistest.WaitFor(t, 10*time.Second, "dry-run event", func() bool { return len(f.events(events.KindChaosAttackStarted, a.ID)) == 1 })
	if !f.events(events.KindChaosAttackStarted, a.ID)[0].Payload.(*events.ChaosAttack).DryRun {
		t.Fatal("event not marked dry_run")
	}

	// A driver that needs --execute makes every attack a dry run without it.
	rec := &recDriver{}
	inj := New(Config{Allow: []string{"*"}}, fault.Deps{Driver: rec}, target.Resolver{Inv: Inventory{KV: f.kv, Driver: rec}}, nil, f.stream, nil, nil, zerolog.Nop())
	for _, k := range []fault.Kind{fault.Kill, fault.Pause, fault.Restart} {
		a, err := inj.Start(ctx, Request{Fault: k, Target: "shard:s1/primary", Duration: time.Second})
		if err != nil || !a.DryRun {
			t.Fatalf("%s without --execute: %+v %v", k, a, err)
		}
	}
	if rec.n() != 0 {
		t.Fatalf("dry runs reached the driver: %v", rec.calls)
	}
	inj = New(Config{Allow: []string{"*"}, Execute: true}, fault.Deps{Driver: rec}, target.Resolver{Inv: Inventory{KV: f.kv, Driver: rec}}, nil, f.stream, nil, nil, zerolog.Nop())
	if a, err := inj.Start(ctx, Request{Fault: fault.Kill, Target: "shard:s1/primary"}); err != nil || a.DryRun {
		t.Fatalf("with --execute: %+v %v", a, err)
	}
	if rec.n() != 1 {
		t.Fatalf("with --execute the driver must act once, got %v", rec.calls)
	}
	_, _ = inj.Halt(ctx, "test")
}

type recDriver struct {
	mu    sync.Mutex
	calls []string
}

func (r *recDriver) rec(s string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, s)
	return nil
}
func (r *recDriver) n() int             { r.mu.Lock(); defer r.mu.Unlock(); return len(r.calls) }
func (r *recDriver) Name() string       { return "rec" }
func (r *recDriver) NeedsExecute() bool { return true }
func (r *recDriver) Kill(_ context.Context, t target.Target, _ driver.KillOptions) error {
	return r.rec("kill " + t.String())
}
func (r *recDriver) Pause(_ context.Context, t target.Target) error {
	return r.rec("pause " + t.String())
}
func (r *recDriver) Resume(_ context.Context, t target.Target) error {
	return r.rec("resume " + t.String())
}
func (r *recDriver) Restart(_ context.Context, t target.Target, _ driver.RestartOptions) error {
	return r.rec("restart " + t.String())
}
func (r *recDriver) RestoreConfig(context.Context, target.Target) ([][2]string, error) {
	return nil, nil
}
func (r *recDriver) EnsureRunning(context.Context, target.Target) error { return nil }
func (r *recDriver) Instances(context.Context, string) ([]target.Target, error) {
	return nil, nil
}

func TestAllowlistRefusal(t *testing.T) {
	ctx := ctxT(t)
	f := newFleet(t, 1, Config{Allow: []string{"s9/*", "ratequeue/*"}})
	_, err := f.inj.Start(ctx, Request{Fault: fault.Kill, Target: "shard:s1/primary"})
	if !errors.Is(err, ErrNotAllowed) {
		t.Fatalf("want ErrNotAllowed, got %v", err)
	}
	if !f.shards["s1"].Primary.Running() {
		t.Fatal("a refused attack killed the primary")
	}
	// random finds no allowlisted shard either
	if _, err := f.inj.Start(ctx, Request{Fault: fault.Kill, Target: "shard:random/primary"}); !errors.Is(err, target.ErrNoTarget) {
		t.Fatalf("random over a fleet with no allowed shard: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if n := len(f.events(events.KindChaosAttackStarted, "")); n != 0 {
		t.Fatalf("refused attacks published %d events", n)
	}
}

func TestOneShardAtATimeAndHaltRecoversEverything(t *testing.T) {
	ctx := ctxT(t)
	f := newFleet(t, 2, Config{})
	p1, r2 := f.shards["s1"].Primary, f.shards["s2"].Replicas[0]
	a1, err := f.inj.Start(ctx, Request{Fault: fault.Pause, Target: "shard:s1/primary", Duration: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.inj.Start(ctx, Request{Fault: fault.Pause, Target: "shard:s2/replica", Duration: time.Hour}); !errors.Is(err, ErrTooManyShards) {
		t.Fatalf("second shard: want ErrTooManyShards, got %v", err)
	}
	if !answersSoon(r2.Addr()) {
		t.Fatal("the refused attack paused the replica")
	}
	if _, err := f.inj.Start(ctx, Request{Fault: fault.Pause, Target: "shard:s1/primary", Duration: time.Hour}); !errors.Is(err, ErrBusy) {
		t.Fatalf("same target twice: want ErrBusy, got %v", err)
	}
	// Told otherwise: two shards.
	a2, err := f.inj.Start(ctx, Request{Fault: fault.Pause, Target: "shard:s2/replica", Duration: time.Hour, MaxShards: 2})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.inj.Active()) != 2 || answers(p1.Addr()) || answers(r2.Addr()) {
		t.Fatal("both attacks should be active")
	}
	halted, err := f.inj.Halt(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	if len(halted) != 2 || len(f.inj.Active()) != 0 {
		t.Fatalf("halted %d, active %d", len(halted), len(f.inj.Active()))
	}
	if !answersSoon(p1.Addr()) || !answersSoon(r2.Addr()) {
		t.Fatal("halt did not resume every paused node")
	}
	for _, id := range []string{a1.ID, a2.ID} {
		redistest.WaitFor(t, 10*time.Second, "halted event", func() bool { return len(f.events(events.KindChaosAttackHalted, id)) == 1 })
	}
	if v := testutil.ToFloat64(f.m.Halts); v != 1 {
		t.Fatalf("halts metric %v", v)
	}
	if testutil.ToFloat64(f.m.Active) != 0 {
		t.Fatal("active gauge not zero")
	}
}

func TestRefusesDegradedShardsAndOpenAlerts(t *testing.T) {
	ctx := ctxT(t)
	f := newFleet(t, 2, Config{})
	s1 := f.shards["s1"]
	expect := func(what string, want error) {
		t.Helper()
		_, err := f.inj.Start(ctx, Request{Fault: fault.Kill, Target: "shard:s1/primary"})
		if !errors.Is(err, want) {
			t.Fatalf("%s: want %v, got %v", what, want, err)
		}
		if !s1.Primary.Running() {
			t.Fatalf("%s: the refused attack killed the primary", what)
		}
	}
	// A parked replica.
	rc := s1.Replicas[0].Client()
	if err := rc.SlaveOf(ctx, redisinfo.DefaultPark.Host, "1").Err(); err != nil {
		t.Fatal(err)
	}
	expect("parked replica", ErrDegraded)
	// random avoids it and picks s2.
	b := &target.Binding{}
	a, err := f.inj.Start(ctx, Request{Fault: fault.Pause, Target: "shard:random/primary", Duration: time.Hour, Binding: b})
	if err != nil || b.Shard != "s2" {
		t.Fatalf("random with s1 degraded: %v (bound %q)", err, b.Shard)
	}
	if _, err := f.inj.Recover(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	// Unpark: healthy again once the link is back.
	if err := rc.SlaveOf(ctx, "127.0.0.1", fmt.Sprint(portOf(s1.Primary.Addr()))).Err(); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 15*time.Second, "replica link up", func() bool { i := s1.Replicas[0].Info(); return i.LinkUp && !i.SyncInProgress })
	// The alerter's record keeps the flap history after its incident resolved: not an
	// open alert.
	if _, err := f.kv.Put(ctx, IncidentKey("s1"), []byte(`{"shard":"s1","last_incident_id":"i0","changes":["2026-01-01T00:00:00Z"],"flapping":false}`)); err != nil {
		t.Fatal(err)
	}
	if err := f.inj.health.Check(ctx, "s1"); err != nil {
		t.Fatalf("a resolved incident's record is not an open alert: %v", err)
	}
	// An open incident in kv.
	if _, err := f.kv.Put(ctx, IncidentKey("s1"), []byte(`{"shard":"s1","incident":{"id":"i1","code":"PRIMARY_DOWN","severity":"critical","state":"HARD"}}`)); err != nil {
		t.Fatal(err)
	}
	expect("open incident", ErrOpenAlert)
	_ = f.kv.Delete(ctx, IncidentKey("s1"), 0)
	// Automation paused.
	if _, err := f.kv.Put(ctx, "lazarus.pause.all", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	expect("lazarus paused", ErrDegraded)
	_ = f.kv.Delete(ctx, "lazarus.pause.all", 0)
	// An alert seen on the stream.
	w := NewAlertWatch()
	f.inj.health = ShardHealth{KV: f.kv, Alerts: w}
	w.Observe(events.New(events.KindAlertOpened, events.Source{Service: "alerter"}, "s1", &events.Alert{IncidentID: "i", Code: events.AlertReplicaProblem, Severity: events.SeverityWarning, State: events.StateSoft}))
	expect("open alert on the stream", ErrOpenAlert)
	w.Observe(events.New(events.KindAlertResolved, events.Source{Service: "alerter"}, "s1", &events.Alert{IncidentID: "i", Code: events.AlertReplicaProblem, Severity: events.SeverityWarning, State: events.StateOK}))
	// A replica that is down.
	if err := s1.Replicas[0].Kill(); err != nil {
		t.Fatal(err)
	}
	expect("replica down", ErrDegraded)
	// A topology that says something odd: no replica.
	st := topology.Store{KV: f.kv}
	sh, _, _ := st.Get(ctx, "s1")
	sh.Replicas = nil
	_ = st.Put(ctx, sh)
	expect("no replica in the topology", ErrDegraded)
}

func portOf(addr string) string {
	for i := len(addr) - 1; i >= 0; i-- {
		if addr[i] == ':' {
			return addr[i+1:]
		}
	}
	return ""
}

func TestFailedApplyIsRecoveredAndReported(t *testing.T) {
	ctx := ctxT(t)
	f := newFleet(t, 1, Config{})
	// A resync storm on a replica that is really a primary: the apply fails.
	st := topology.Store{KV: f.kv}
	sh, _, _ := st.Get(ctx, "s1")
	sh.Primary, sh.Replicas = sh.Replicas[0], []string{sh.Primary}
	_ = st.Put(ctx, sh)
	f.inj.health = nil
	a, err := f.inj.Start(ctx, Request{Fault: fault.ResyncStorm, Target: "shard:s1/replica:all"})
	if !errors.Is(err, fault.ErrBadTarget) {
		t.Fatalf("want the apply error, got %v", err)
	}
	if a.State != StateFailed || a.Error == "" {
		t.Fatalf("attack %+v", a)
	}
	redistest.WaitFor(t, 10*time.Second, "recovered event with the error", func() bool {
		ev := f.events(events.KindChaosAttackRecover, a.ID)
		return len(ev) == 1
	})
	if testutil.ToFloat64(f.m.Attacks.WithLabelValues("resync-storm", "failed")) != 1 {
		t.Fatal("failed metric")
	}
}

func TestRecoverLeftoversOfADeadChaosProcess(t *testing.T) {
	ctx := ctxT(t)
	f := newFleet(t, 1, Config{})
	p := f.shards["s1"].Primary
	// An earlier chaos process paused the primary and died.
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	rec := Attack{ID: "01-old", Fault: fault.Pause, Selector: "shard:s1/primary", State: StateActive, Duration: time.Hour,
		Targets: []target.Target{{Kind: target.Node, Shard: "s1", Role: "primary", Addr: p.Addr()}}}
	b, _ := json.Marshal(rec)
	if _, err := f.kv.Put(ctx, kv.Key(ActivePrefix, "01-old"), b); err != nil {
		t.Fatal(err)
	}
	// The local driver only resumes processes it paused: register the pause.
	if err := f.drv.Pause(ctx, rec.Targets[0]); err != nil {
		t.Fatal(err)
	}
	n, err := f.inj.RecoverLeftovers(ctx)
	if err != nil || n != 1 {
		t.Fatalf("leftovers: %d %v", n, err)
	}
	if !answersSoon(p.Addr()) {
		t.Fatal("leftover pause not recovered")
	}
	if entries, _ := f.kv.List(ctx, ActivePrefix); len(entries) != 0 {
		t.Fatal("leftover record not removed")
	}
}

func TestPlanRejectsBadRequests(t *testing.T) {
	ctx := ctxT(t)
	inj := New(Config{Allow: []string{"*"}}, fault.Deps{}, target.Resolver{Inv: Inventory{KV: memkv.New()}}, nil, nil, nil, nil, zerolog.Nop())
	cases := []Request{
		{Fault: "explode", Target: "shard:s1/primary"},
		{Fault: fault.Pause, Target: "shard:s1/primary"}, // needs a duration
		{Fault: fault.Kill, Target: "shard:s1/leader"},
		{Fault: fault.Kill, Target: "link:client->ratequeue"},
		{Fault: fault.Latency, Target: "shard:s1/primary"},
		{Fault: fault.Kill, Target: "shard:s1/primary", Params: map[string]string{"colour": "red"}},
		{Fault: fault.Kill, Target: "shard:s1/primary", Duration: -time.Second},
		{Fault: fault.LoadSpike, Target: "shard:s1/replica", Duration: time.Second},
	}
	for _, c := range cases {
		if _, err := inj.Start(ctx, c); !errors.Is(err, ErrInvalid) {
			t.Errorf("%+v: want ErrInvalid, got %v", c, err)
		}
	}
}
