package runner_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/driver/local"
	"github.com/heartline/heartline/services/chaos/internal/experiment"
	"github.com/heartline/heartline/services/chaos/internal/fault"
	"github.com/heartline/heartline/services/chaos/internal/injector"
	"github.com/heartline/heartline/services/chaos/internal/runner"
	"github.com/heartline/heartline/services/chaos/internal/target"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/memstream"
	"github.com/heartline/heartline/shared/topology"
)

// synthLoad is a stand-in for `ratequeue load` in tests of the runner's own logic:
// every 10 ms it "enqueues" to each shard by PINGing its primary (acknowledged when
// the primary answers within 100 ms, failed otherwise) and writes the same history
// format, with one delivery per acknowledged enqueue.
type synthLoad struct {
	topo topology.Map
}

type synthRun struct {
	stop   chan struct{}
	done   chan struct{}
	ok     atomic.Int64
	once   sync.Once
	failed atomic.Int64
}

func (s *synthLoad) Start(ctx context.Context, spec runner.LoadSpec) (runner.LoadRun, error) {
	f, err := os.Create(spec.History)
	if err != nil {
		return nil, err
	}
	r := &synthRun{stop: make(chan struct{}), done: make(chan struct{})}
	clients := map[string]*redis.Client{}
	for _, sh := range s.topo.Shards {
		clients[sh.ID] = redis.NewClient(&redis.Options{Addr: sh.Primary, MaxRetries: -1, DialTimeout: 100 * time.Millisecond,
			ReadTimeout: 100 * time.Millisecond, ContextTimeoutEnabled: true, PoolSize: 2})
	}
	go func() {
		defer close(r.done)
		defer f.Close()
		w := bufio.NewWriter(f)
		line := func(v map[string]any) {
			b, _ := json.Marshal(v)
			w.Write(append(b, '\n'))
		}
		line(map[string]any{"type": "header", "version": 1, "run": spec.RunID, "mode": "direct", "t_us": time.Now().UnixMicro()})
		end := time.Now().Add(spec.Duration)
		seq := 0
		for time.Now().Before(end) {
			select {
			case <-r.stop:
				end = time.Now()
				continue
			case <-time.After(10 * time.Millisecond):
			}
			for _, sh := range s.topo.Shards {
				seq++
				q := fmt.Sprintf("q-%s", sh.ID)
				inv := time.Now()
				c, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				err := clients[sh.ID].Ping(c).Err()
				cancel()
				done := time.Now()
				id := fmt.Sprintf("%s-%d", spec.RunID, seq)
				if err != nil {
					r.failed.Add(1)
					line(map[string]any{"type": "enqueue", "status": "failed", "queue": q, "id": id, "idem": id, "attempt": 1, "client": "p0",
						"invoke_us": inv.UnixMicro(), "complete_us": done.UnixMicro(), "error": err.Error()})
					continue
				}
				r.ok.Add(1)
				line(map[string]any{"type": "enqueue", "status": "ok", "queue": q, "id": id, "idem": id, "attempt": 1, "client": "p0",
					"invoke_us": inv.UnixMicro(), "complete_us": done.UnixMicro(), "shard": sh.ID, "node": sh.Primary, "epoch": 1})
				line(map[string]any{"type": "deliver", "queue": q, "id": id, "server_us": done.UnixMicro(), "count": 1, "shard": sh.ID,
					"node": sh.Primary, "epoch": 1, "client": "c0", "t_us": done.UnixMicro(), "body_ok": true})
			}
			w.Flush()
		}
		line(map[string]any{"type": "end", "drained": true, "t_us": time.Now().UnixMicro()})
		w.Flush()
		for _, c := range clients {
			c.Close()
		}
	}()
	return r, nil
}

func (r *synthRun) Wait(ctx context.Context) error {
	select {
	case <-r.done:
		return nil
	case <-ctx.Done():
		r.Stop()
		<-r.done
		return ctx.Err()
	}
}
func (r *synthRun) Stop() error    { r.once.Do(func() { close(r.stop) }); return nil }
func (r *synthRun) Args() []string { return []string{"synthetic-load"} }

func (s *synthLoad) Check(ctx context.Context, history, jsonOut string) (runner.CheckReport, error) {
	b, err := os.ReadFile(history)
	if err != nil {
		return runner.CheckReport{}, err
	}
	cr := runner.CheckReport{Valid: true}
	for _, l := range strings.Split(string(b), "\n") {
		switch {
		case strings.Contains(l, `"status":"ok"`):
			cr.Acknowledged++
		case strings.Contains(l, `"type":"deliver"`):
			cr.Delivered++
		case strings.Contains(l, `"drained":true`):
			cr.Drained = true
		}
	}
	raw, _ := json.Marshal(cr)
	cr.Raw = raw
	return cr, os.WriteFile(jsonOut, raw, 0o644)
}

type testEnv struct {
	s    *memstream.Client
	k    *memkv.Store
	d    *local.Driver
	load *synthLoad
}

func (e *testEnv) Name() string                           { return "test" }
func (e *testEnv) Stream() stream.Backend                 { return e.s }
func (e *testEnv) KV() kv.Store                           { return e.k }
func (e *testEnv) Load() runner.Load                      { return e.load }
func (e *testEnv) StartStopped(ctx context.Context) error { return e.d.StartAll(ctx) }
func (e *testEnv) ResetLinks(context.Context) error       { return nil }

type rig struct {
	env    *testEnv
	shards map[string]*redistest.Shard
	r      *runner.Runner
	inj    *injector.Injector
	m      *injector.Metrics
	dir    string
}

func newRig(t *testing.T, n int) *rig {
	t.Helper()
	env := &testEnv{s: memstream.New(), k: memkv.New(), d: local.New(local.Options{RedisRestartDelay: 500 * time.Millisecond, Log: zerolog.Nop()})}
	rg := &rig{env: env, shards: map[string]*redistest.Shard{}, dir: t.TempDir()}
	var m topology.Map
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("s%d", i+1)
		sh := redistest.StartShard(t, id, 1)
		rg.shards[id] = sh
		m.Shards = append(m.Shards, topology.Shard{ID: id, Index: i, Epoch: 1, Primary: sh.Primary.Addr(), Replicas: []string{sh.Replicas[0].Addr()}})
		for _, nd := range sh.Nodes() {
			env.d.AddRedis(nd.Addr(), local.NewRedis(nd.Process))
		}
	}
	if _, err := (topology.Store{KV: env.k}).Seed(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	env.load = &synthLoad{topo: m}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { env.d.Supervise(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	health := injector.ShardHealth{KV: env.k}
	rg.m = injector.NewMetrics(prometheus.NewRegistry())
	rg.inj = injector.New(injector.Config{Allow: []string{"*"}}, fault.Deps{Driver: env.d, Log: zerolog.Nop()},
		target.Resolver{Inv: injector.Inventory{KV: env.k, Driver: env.d}}, health, env.s, env.k, rg.m, zerolog.Nop())
	t.Cleanup(func() { _, _ = rg.inj.Halt(context.Background(), "cleanup") })
	rg.r = &runner.Runner{Env: env, Inj: rg.inj, Health: health, Metrics: rg.m, Reports: rg.dir, Log: zerolog.Nop(), Poll: 50 * time.Millisecond}
	return rg
}

func parse(t *testing.T, doc string) *experiment.Experiment {
	t.Helper()
	x, err := experiment.Parse("test.yaml", []byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	return x
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

func TestAbortConditionRecoversFaultsAndReportsAborted(t *testing.T) {
	rg := newRig(t, 2)
	x := parse(t, `title: pause until the abort condition trips
steady_state:
  warmup: 1s
  probes:
    - probe: shards_healthy
    - probe: enqueue_success_rate
      min: 0.95
method:
  - fault: pause
    target: shard:s1/primary
    duration: 1m
observe: 1s
hypothesis:
  lost: 0
abort:
  max_duration: 3m
  when:
    - probe: enqueue_success_rate
      min: 0.9
      window: 1s
      for: 300ms
`)
	x.Load.Rate = 100
	rep := rg.r.Run(context.Background(), x, runner.Options{})
	if !rep.Aborted || rep.Passed || rep.ExitCode() == 0 {
		t.Fatalf("want an aborted run: passed=%v aborted=%v reason=%q error=%q", rep.Passed, rep.Aborted, rep.AbortReason, rep.Error)
	}
	if !strings.Contains(rep.AbortReason, "abort condition: enqueue_success_rate") {
		t.Fatalf("abort reason: %q", rep.AbortReason)
	}
	if !answersSoon(rg.shards["s1"].Primary.Addr()) {
		t.Fatal("the paused primary was not resumed by the abort")
	}
	if len(rg.inj.Active()) != 0 {
		t.Fatal("faults still active after the abort")
	}
	if len(rep.Attacks) != 1 || rep.Attacks[0].State != injector.StateHalted {
		t.Fatalf("attacks: %+v", rep.Attacks)
	}
	for _, f := range []string{"report.json", "report.html"} {
		if _, err := os.Stat(filepath.Join(rep.Dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	var back runner.Report
	b, _ := os.ReadFile(filepath.Join(rep.Dir, "report.json"))
	if err := json.Unmarshal(b, &back); err != nil || !back.Aborted {
		t.Fatalf("report.json: %v aborted=%v", err, back.Aborted)
	}
	html, _ := os.ReadFile(filepath.Join(rep.Dir, "report.html"))
	if !strings.Contains(string(html), "ABORTED") || strings.Contains(string(html), "<link") || strings.Contains(string(html), "src=") {
		t.Fatal("report.html must say ABORTED and load no external asset")
	}
	if testutil.ToFloat64(rg.m.Experiments.WithLabelValues("aborted")) != 1 {
		t.Fatal("experiments metric")
	}
}

func TestSteadyStateNotMetInjectsNothing(t *testing.T) {
	rg := newRig(t, 1)
	if _, err := rg.env.k.Put(context.Background(), injector.IncidentKey("s1"), []byte(`{"shard":"s1","incident":{"id":"i1","code":"PRIMARY_DOWN"}}`)); err != nil {
		t.Fatal(err)
	}
	x := parse(t, `title: t
steady_state:
  probes:
    - probe: no_open_alerts
method:
  - fault: kill
    target: shard:s1/primary
    duration: 1s
hypothesis:
  lost: 0
`)
	rep := rg.r.Run(context.Background(), x, runner.Options{})
	if rep.Passed || len(rep.Attacks) != 0 {
		t.Fatalf("passed=%v attacks=%d", rep.Passed, len(rep.Attacks))
	}
	// The injector refuses a shard with an open alert, and the runner says so.
	if !strings.Contains(rep.Error+rep.AbortReason, "open") {
		t.Fatalf("reason: %q %q", rep.Error, rep.AbortReason)
	}
	if !rg.shards["s1"].Primary.Running() {
		t.Fatal("the primary was killed")
	}
}

func TestRunPassesWithSyntheticLoadAndPublishesTheResult(t *testing.T) {
	rg := newRig(t, 2)
	results := make(chan events.Event, 1)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go rg.env.s.Consume(ctx, stream.Subscription{Topic: events.TopicChaos, Group: "t", Start: stream.StartOldest}, func(_ context.Context, d stream.Delivery) error {
		e, err := events.Decode(d.Data)
		if err == nil && e.Kind == events.KindExperimentResult {
			results <- e
		}
		return nil
	})
	x := parse(t, `title: pause a replica briefly
steady_state:
  warmup: 1s
method:
  - fault: pause
    target: shard:random/replica:any
    duration: 1s
observe: 1s
hypothesis:
  no_failover: true
  writes_resumed_within: 5s
  lost: 0
  healthy_within: 20s
`)
	x.Load.Rate = 100
	rep := rg.r.Run(context.Background(), x, runner.Options{Shard: "s2"})
	if !rep.Passed {
		b, _ := json.MarshalIndent(rep, "", " ")
		t.Fatalf("run failed:\n%s", b)
	}
	if keep := os.Getenv("CHAOS_KEEP_REPORT"); keep != "" {
		b, _ := os.ReadFile(filepath.Join(rep.Dir, "report.html"))
		_ = os.WriteFile(keep, b, 0o644)
	}
	if len(rep.Shards) != 1 || rep.Shards[0] != "s2" {
		t.Fatalf("the scheduler's shard binding was not used: %v", rep.Shards)
	}
	if len(rep.Control) != 2 || !rep.Control[1].Attacked || rep.Control[0].Attacked {
		t.Fatalf("control vs experiment: %+v", rep.Control)
	}
	if len(rep.Backups) != 1 || rep.Backups[0].Bytes < 9 || rep.Backups[0].Error != "" {
		t.Fatalf("backup: %+v", rep.Backups)
	}
	rdb, err := os.ReadFile(rep.Backups[0].File)
	if err != nil || !strings.HasPrefix(string(rdb), "REDIS") {
		t.Fatalf("the backup is not an RDB file: %v", err)
	}
	var marks []string
	for _, e := range rep.Timeline {
		if e.Mark != "" {
			marks = append(marks, e.Mark)
		}
	}
	if !strings.Contains(strings.Join(marks, ","), "fault") || !strings.Contains(strings.Join(marks, ","), "writes resumed") {
		t.Fatalf("timeline marks: %v", marks)
	}
	select {
	case e := <-results:
		p := e.Payload.(*events.ExperimentResult)
		if p.RunID != rep.RunID || !p.Passed || e.CorrelationID != rep.RunID {
			t.Fatalf("result event: %+v", p)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("no experiment.result event")
	}
}

// fakePipeline plays agent, alerter and lazarus: when it sees an attack start on the
// chaos topic it publishes a failed heartbeat, an alert, a failover and a topology
// change for the attacked shard, so that the runner's stream watch is tested on the
// events the real services publish.
func fakePipeline(t *testing.T, s *memstream.Client, primary string) {
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	go s.Consume(ctx, stream.Subscription{Topic: events.TopicChaos, Group: "fake-pipeline", Start: stream.StartOldest}, func(ctx context.Context, d stream.Delivery) error {
		e, err := events.Decode(d.Data)
		if err != nil || e.Kind != events.KindChaosAttackStarted {
			return nil
		}
		shard := e.Shard
		pub := func(ev events.Event) {
			b, err := events.Encode(ev)
			if err != nil {
				t.Errorf("encode %s: %v", ev.Kind, err)
				return
			}
			if err := s.Publish(ctx, ev.Kind.Topic(), stream.Message{Key: shard, ID: ev.ID, Data: b}); err != nil {
				t.Errorf("publish: %v", err)
			}
		}
		time.Sleep(20 * time.Millisecond)
		hb := events.New(events.KindHeartbeat, events.Source{Service: "agent", Instance: "agent-1"}, shard, &events.Heartbeat{Seq: 9,
			Replica: events.ReplicaState{Addr: "r:1"}, Primary: events.PrimaryProbe{Addr: primary, OK: false, Error: "connection refused"}})
		pub(hb)
		alert := events.Continue(events.KindAlertOpened, events.Source{Service: "alerter"}, hb, &events.Alert{IncidentID: "inc", Code: events.AlertPrimaryDown,
			Severity: events.SeverityCritical, State: events.StateHard, Reason: "3 failed probes"})
		pub(alert)
		now := time.Now()
		fo := events.Continue(events.KindFailoverCompleted, events.Source{Service: "lazarus"}, alert, &events.Failover{FailoverID: "fo-1",
			Decision: events.DecisionFailover, Reason: "PRIMARY_DOWN", FromEpoch: 1, ToEpoch: 2,
			Phases: events.Phases{Detected: hb.Time, Alerted: alert.Time, Decided: now, Promoted: now, Routed: now}})
		fo.Epoch = 2
		pub(fo)
		topo := events.Continue(events.KindTopologyChanged, events.Source{Service: "lazarus"}, fo, &events.TopologyChanged{Primary: "r:1", Reason: "failover"})
		topo.Epoch = 2
		pub(topo)
		return nil
	})
}

func TestHypothesesAreMeasuredFromTheStream(t *testing.T) {
	rg := newRig(t, 2)
	fakePipeline(t, rg.env.s, rg.shards["s1"].Primary.Addr())
	doc := `title: detection and failover are measured
steady_state:
  warmup: 1s
method:
  - fault: pause
    target: shard:s1/replica
    duration: 1s
observe: 1s
hypothesis:
  first_failed_heartbeat_within: 5s
  detected_within: 5s
  alert_code: PRIMARY_DOWN
  failed_over_within: 5s
  failovers: 1
  lost: 0
`
	x := parse(t, doc)
	x.Load.Rate = 50
	rep := rg.r.Run(context.Background(), x, runner.Options{})
	if !rep.Passed {
		b, _ := json.MarshalIndent(rep.Hypotheses, "", " ")
		t.Fatalf("run failed: %s %s\n%s", rep.Error, rep.AbortReason, b)
	}
	whats := map[string]bool{}
	for _, e := range rep.Timeline {
		whats[e.What] = true
	}
	for _, w := range []string{"first failed heartbeat", "alert.opened PRIMARY_DOWN", "failover.completed", "failover phase: promoted", "topology changed"} {
		if !whats[w] {
			t.Errorf("timeline lacks %q", w)
		}
	}
	// The same events break a hypothesis of no failover: the run fails, exit code 1.
	x = parse(t, strings.Replace(doc, "  failovers: 1\n", "  no_failover: true\n", 1))
	x.Load.Rate = 50
	rep = rg.r.Run(context.Background(), x, runner.Options{})
	if rep.Passed || rep.ExitCode() != 1 {
		t.Fatal("an unexpected failover must fail the run")
	}
	var broken []string
	for _, h := range rep.Hypotheses {
		if !h.Held {
			broken = append(broken, h.Name+"="+h.Actual)
		}
	}
	if len(broken) != 1 || !strings.HasPrefix(broken[0], "failovers=1") {
		t.Fatalf("broken: %v", broken)
	}
}
