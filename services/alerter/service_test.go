package alerter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/memstream"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

// hb builds agent's heartbeat number seq for shard, probed at at.
func hb(shard, agent string, seq uint64, ok bool, at time.Time) events.Event {
	p := &events.Heartbeat{Seq: seq, AgentStart: t0, Interval: 250 * time.Millisecond,
		Replica: events.ReplicaState{Addr: "replica-" + agent + ":6379", Reachable: true, Role: "slave", LinkUp: ok},
		Primary: events.PrimaryProbe{Addr: "10.0.0.1:6379", OK: ok, Role: "master"}}
	if !ok {
		p.Primary = events.PrimaryProbe{Addr: "10.0.0.1:6379", Error: "connection refused"}
	}
	id := fmt.Sprintf("%s-%s-%d", shard, agent, seq)
	return events.Event{ID: id, Schema: events.SchemaVersion, Kind: events.KindHeartbeat, Shard: shard,
		Source: events.Source{Service: "agent", Instance: agent}, Time: at, CorrelationID: id, Payload: p}
}

func delivery(t testing.TB, e events.Event) stream.Delivery {
	t.Helper()
	b, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return stream.Delivery{Message: stream.Message{Key: e.Shard, ID: e.ID, Data: b}, Topic: events.TopicHeartbeats,
		Attempt: 1, Published: time.Now()}
}

// killSequence is a healthy primary that dies and comes back: ok ×2, fail ×6, ok ×3,
// 250 ms apart from t0. It opens exactly one PRIMARY_DOWN and resolves it.
func killSequence(shard, agent string) []events.Event {
	var out []events.Event
	for i := 0; i < 11; i++ {
		out = append(out, hb(shard, agent, uint64(i+1), i < 2 || i >= 8, t0.Add(time.Duration(i)*250*time.Millisecond)))
	}
	return out
}

func TestMalformedEventsAreDeadLettered(t *testing.T) {
	srv := memstream.NewServer(memstream.Options{Partitions: 2, LeaseTTL: time.Second})
	svc := startService(t, srv, memkv.New(), svcOpts{run: true})
	pub := srv.New()
	defer pub.Close()
	ctx := context.Background()
	raw := func(key, id string, data []byte) {
		t.Helper()
		if err := pub.Publish(ctx, events.TopicHeartbeats, stream.Message{Key: key, ID: id, Data: data}); err != nil {
			t.Fatal(err)
		}
	}
	raw("shard-1", "garbage", []byte(`{not json`))
	unknownFlag := hb("shard-1", "a", 1, true, time.Now())
	unknownFlag.Payload.(*events.Heartbeat).Flags = []events.Flag{"PRIMARY_ON_FIRE"}
	b, _ := json.Marshal(unknownFlag)
	raw("shard-1", "unknown-flag", b)
	alert := events.New(events.KindAlertOpened, events.Source{Service: "x"}, "shard-1",
		&events.Alert{IncidentID: "i", Code: events.AlertPrimaryDown, Severity: events.SeverityCritical, State: events.StateHard})
	b, _ = events.Encode(alert)
	raw("shard-1", "wrong-kind", b)
	mismatch := hb("shard-2", "a", 1, true, time.Now())
	b, _ = events.Encode(mismatch)
	raw("shard-1", "wrong-key", b)
	good := hb("shard-1", "a", 1, true, time.Now())
	publish(t, pub, good)

	waitFor(t, 10*time.Second, "five messages handled", func() bool { return svc.handled() >= 5 })
	if got, want := svc.results(), map[string]int{"accepted": 1, "malformed": 2, "rejected": 2}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("results %v, want %v", got, want)
	}
	// Every rejected message is kept in the dead-letter topic, with the reason.
	var mu sync.Mutex
	var dead []stream.DeadLetter
	c := srv.New()
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	go func() {
		_ = c.Consume(dctx, stream.Subscription{Topic: stream.DeadLetterTopic, Group: "test-dl", Start: stream.StartOldest},
			func(_ context.Context, d stream.Delivery) error {
				var dl stream.DeadLetter
				if err := json.Unmarshal(d.Data, &dl); err != nil {
					t.Errorf("dead letter: %v", err)
				}
				mu.Lock()
				dead = append(dead, dl)
				mu.Unlock()
				return nil
			})
	}()
	waitFor(t, 10*time.Second, "four dead letters", func() bool { mu.Lock(); defer mu.Unlock(); return len(dead) >= 4 })
	mu.Lock()
	defer mu.Unlock()
	reasons := map[string]string{}
	for _, d := range dead {
		if d.Group != "alerter" || d.Topic != events.TopicHeartbeats || len(d.Data) == 0 {
			t.Errorf("dead letter %+v: want group alerter, topic heartbeats, data kept", d)
		}
		reasons[d.ID] = d.Error
	}
	for id, want := range map[string]string{"garbage": "malformed event", "unknown-flag": `unknown flag "PRIMARY_ON_FIRE"`,
		"wrong-kind": "not a heartbeat", "wrong-key": "partition key does not match"} {
		if !strings.Contains(reasons[id], want) {
			t.Errorf("dead letter %s: reason %q, want it to mention %q", id, reasons[id], want)
		}
	}
	if st, ok := svc.ShardState("shard-1"); !ok || st != events.StateOK {
		t.Errorf("shard-1 state %q (known %t) after the good heartbeat, want OK", st, ok)
	}
}

// TestRestartMidIncident: an alerter that stops with an incident open, and its next
// incarnation (an empty memory) seeing the same failure, publish one opened alert, not
// two; the new incarnation resolves the same incident.
func TestRestartMidIncident(t *testing.T) {
	srv := memstream.NewServer(memstream.Options{Partitions: 2, LeaseTTL: time.Second})
	store := memkv.New()
	clock := &fakeClock{t: t0}
	reader := readAlerts(t, srv)
	pub := srv.New()
	defer pub.Close()
	seq := killSequence("shard-1", "a")

	first := startService(t, srv, store, svcOpts{clock: clock.Now, run: true})
	for i, e := range seq[:6] { // ok ok fail fail fail fail: opened at the third failure
		clock.Set(e.Time)
		publish(t, pub, e)
		waitFor(t, 10*time.Second, "heartbeat handled", func() bool { return first.handled() >= i+1 })
	}
	if got := summary(reader.sync(t, pub, "shard-1")); !slices.Equal(got, []string{"alert.opened PRIMARY_DOWN #1"}) {
		t.Fatalf("before the restart: %v", got)
	}
	first.stop(t)

	second := startService(t, srv, store, svcOpts{clock: clock.Now, run: true})
	for i, e := range seq[6:] { // fail fail ok ok ok
		clock.Set(e.Time)
		publish(t, pub, e)
		waitFor(t, 10*time.Second, "heartbeat handled", func() bool { return second.handled() >= i+1 })
	}
	got := reader.sync(t, pub, "shard-1")
	if s := summary(got); !slices.Equal(s, []string{"alert.opened PRIMARY_DOWN #1", "alert.resolved PRIMARY_DOWN #1"}) {
		t.Fatalf("after the restart: %v", s)
	}
	if got[1].Source.Instance != second.Instance() {
		t.Errorf("resolved by %q", got[1].Source.Instance)
	}
}

// failingPublisher fails alert publications while failing is set.
type failingPublisher struct {
	stream.Publisher
	failing atomic.Bool
	calls   atomic.Int32
}

func (f *failingPublisher) Publish(ctx context.Context, topic string, m stream.Message) error {
	if topic == events.TopicAlerts {
		f.calls.Add(1)
		if f.failing.Load() {
			return errors.New("stream unavailable")
		}
	}
	return f.Publisher.Publish(ctx, topic, m)
}

// TestCrashBetweenRecordAndPublish: the decision is recorded with its alert, the
// publication fails, and the process dies. The next incarnation publishes that very
// alert (same event id) at start and decides nothing twice.
func TestCrashBetweenRecordAndPublish(t *testing.T) {
	srv := memstream.NewServer(memstream.Options{Partitions: 2, LeaseTTL: time.Second})
	store := memkv.New()
	clock := &fakeClock{t: t0}
	reader := readAlerts(t, srv)
	client := srv.New()
	defer client.Close()
	fp := &failingPublisher{Publisher: client}
	fp.failing.Store(true)
	crashed := startService(t, srv, store, svcOpts{clock: clock.Now, pub: fp})
	seq := killSequence("shard-1", "a")
	ctx := context.Background()
	var err error
	for _, e := range seq[:5] {
		clock.Set(e.Time)
		err = crashed.Handle(ctx, delivery(t, e))
	}
	if err == nil || !strings.Contains(err.Error(), "recorded but not published") {
		t.Fatalf("handling the deciding heartbeat with the stream down: %v", err)
	}
	r, _, gerr := crashed.getRecord(ctx, "shard-1")
	if gerr != nil || len(r.Pending) != 1 || r.Incident == nil {
		t.Fatalf("record after the failed publication: %+v, %v", r, gerr)
	}
	pending, _ := events.Decode(r.Pending[0])
	// The process dies here. Its successor starts with a working stream.
	next := startService(t, srv, store, svcOpts{clock: clock.Now, run: true, instance: "alerter-next"})
	got := reader.sync(t, client, "shard-1")
	if len(got) != 1 || got[0].ID != pending.ID || got[0].Kind != events.KindAlertOpened {
		t.Fatalf("after the restart: %v, want the pending alert %s", summary(got), pending.ID)
	}
	for i, e := range seq[5:] {
		clock.Set(e.Time)
		publish(t, client, e)
		waitFor(t, 10*time.Second, "heartbeat handled", func() bool { return next.handled() >= i+1 })
	}
	if s := summary(reader.sync(t, client, "shard-1")); !slices.Equal(s, []string{"alert.opened PRIMARY_DOWN #1", "alert.resolved PRIMARY_DOWN #1"}) {
		t.Fatalf("alerts: %v", s)
	}
	next.Tick(ctx) // clears the published alerts from the record
	r, _, _ = next.getRecord(ctx, "shard-1")
	if len(r.Pending) != 0 || r.Incident != nil {
		t.Errorf("record at the end: %+v", r)
	}
}

// TestRedeliveryPublishesPendingAlert: the same instance gets the heartbeat again after
// the failed publication (the stream's retry) and publishes the recorded alert once.
func TestRedeliveryPublishesPendingAlert(t *testing.T) {
	srv := memstream.NewServer(memstream.Options{Partitions: 2, LeaseTTL: time.Second})
	clock := &fakeClock{t: t0}
	reader := readAlerts(t, srv)
	client := srv.New()
	defer client.Close()
	fp := &failingPublisher{Publisher: client}
	fp.failing.Store(true)
	svc := startService(t, srv, memkv.New(), svcOpts{clock: clock.Now, pub: fp})
	ctx := context.Background()
	seq := killSequence("shard-1", "a")
	for _, e := range seq[:5] {
		clock.Set(e.Time)
		_ = svc.Handle(ctx, delivery(t, e))
	}
	fp.failing.Store(false)
	if err := svc.Handle(ctx, delivery(t, seq[4])); err != nil {
		t.Fatalf("redelivery: %v", err)
	}
	for _, e := range seq[5:] {
		clock.Set(e.Time)
		if err := svc.Handle(ctx, delivery(t, e)); err != nil {
			t.Fatal(err)
		}
	}
	if s := summary(reader.sync(t, client, "shard-1")); !slices.Equal(s, []string{"alert.opened PRIMARY_DOWN #1", "alert.resolved PRIMARY_DOWN #1"}) {
		t.Fatalf("alerts: %v", s)
	}
}

// flakyKV fails writes while failing is set.
type flakyKV struct {
	kv.Store
	failing atomic.Bool
}

var errKVDown = errors.New("kv unavailable")

func (f *flakyKV) Create(ctx context.Context, key string, v []byte) (uint64, error) {
	if f.failing.Load() {
		return 0, errKVDown
	}
	return f.Store.Create(ctx, key, v)
}

func (f *flakyKV) Update(ctx context.Context, key string, v []byte, rev uint64) (uint64, error) {
	if f.failing.Load() {
		return 0, errKVDown
	}
	return f.Store.Update(ctx, key, v, rev)
}

// TestKVOutageDecisionRetried: with the kv store down at the moment of a decision, the
// heartbeat is redelivered until the store is back; the alert is published once.
func TestKVOutageDecisionRetried(t *testing.T) {
	srv := memstream.NewServer(memstream.Options{Partitions: 2, LeaseTTL: time.Second})
	store := &flakyKV{Store: memkv.New()}
	clock := &fakeClock{t: t0}
	reader := readAlerts(t, srv)
	pub := srv.New()
	defer pub.Close()
	svc := startService(t, srv, store, svcOpts{clock: clock.Now, run: true})
	seq := killSequence("shard-1", "a")
	for i, e := range seq[:4] {
		clock.Set(e.Time)
		publish(t, pub, e)
		waitFor(t, 10*time.Second, "heartbeat handled", func() bool { return svc.handled() >= i+1 })
	}
	store.failing.Store(true)
	clock.Set(seq[4].Time)
	publish(t, pub, seq[4]) // the deciding heartbeat: its decision cannot be recorded
	waitFor(t, 10*time.Second, "a failed incident write", func() bool {
		return testutil.ToFloat64(svc.m.kvErrors.WithLabelValues("write")) >= 2
	})
	if n := len(reader.sync(t, pub, "shard-1")); n != 0 {
		t.Fatalf("%d alerts published while the decision could not be recorded", n)
	}
	store.failing.Store(false)
	waitFor(t, 10*time.Second, "the deciding heartbeat handled", func() bool { return svc.handled() >= 5 })
	for i, e := range seq[5:] {
		clock.Set(e.Time)
		publish(t, pub, e)
		waitFor(t, 10*time.Second, "heartbeat handled", func() bool { return svc.handled() >= 6+i })
	}
	if s := summary(reader.sync(t, pub, "shard-1")); !slices.Equal(s, []string{"alert.opened PRIMARY_DOWN #1", "alert.resolved PRIMARY_DOWN #1"}) {
		t.Fatalf("alerts: %v", s)
	}
}

// TestTwoInstancesShareShards: two alerters in one consumer group split eight shards;
// one stops half-way through the incidents and the other takes its shards over. Every
// shard gets exactly one opened and one resolved alert.
func TestTwoInstancesShareShards(t *testing.T) {
	srv := memstream.NewServer(memstream.Options{Partitions: 8, LeaseTTL: time.Second})
	store := memkv.New()
	clock := &fakeClock{t: t0}
	reader := readAlerts(t, srv)
	pub := srv.New()
	defer pub.Close()
	a := startService(t, srv, store, svcOpts{clock: clock.Now, run: true, instance: "alerter-a"})
	b := startService(t, srv, store, svcOpts{clock: clock.Now, run: true, instance: "alerter-b"})
	shards := []string{"s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"}
	seqs := map[string][]events.Event{}
	for _, s := range shards {
		seqs[s] = killSequence(s, "agent")
	}
	// Both members must hold partitions before the test means anything: warm up on
	// other shards until both handled some.
	warm := 0
	for i := 0; a.handled() == 0 || b.handled() == 0; i++ {
		if i > 200 {
			t.Fatal("the two members never both handled heartbeats")
		}
		for j := 0; j < 16; j++ {
			publish(t, pub, hb(fmt.Sprintf("warmup-%d", j), "w", uint64(i+1), true, t0))
			warm++
		}
		time.Sleep(50 * time.Millisecond)
	}
	waitFor(t, 10*time.Second, "warm-up handled", func() bool { return a.handled()+b.handled() >= warm })
	base := warm
	sent := 0
	for step := 0; step < 11; step++ {
		if step == 6 {
			a.stop(t) // half-way: after the opened alerts, before the recovery
		}
		clock.Set(t0.Add(time.Duration(step) * 250 * time.Millisecond))
		for _, s := range shards {
			publish(t, pub, seqs[s][step])
			sent++
		}
		waitFor(t, 20*time.Second, "heartbeats handled", func() bool { return a.handled()+b.handled()-base >= sent })
	}
	handedOver := 0
	for _, s := range shards {
		es := reader.sync(t, pub, s)
		got := summary(es)
		if !slices.Equal(got, []string{"alert.opened PRIMARY_DOWN #1", "alert.resolved PRIMARY_DOWN #1"}) {
			t.Errorf("shard %s: %v", s, got)
			continue
		}
		if es[0].Source.Instance == "alerter-a" && es[1].Source.Instance == "alerter-b" {
			handedOver++
		}
	}
	if handedOver == 0 {
		t.Error("no incident opened by a was resolved by b: the hand-over was not exercised")
	}
	t.Logf("%d of %d incidents opened by a and resolved by b after a stopped", handedOver, len(shards))
}

// TestConcurrentInstancesSameShard: two instances handle the same heartbeats of one
// shard at the same moment (a hand-over overlap); the kv compare-and-set lets exactly
// one of them publish each alert.
func TestConcurrentInstancesSameShard(t *testing.T) {
	for round := 0; round < 10; round++ {
		srv := memstream.NewServer(memstream.Options{Partitions: 2, LeaseTTL: time.Second})
		store := memkv.New()
		clock := &fakeClock{t: t0}
		reader := readAlerts(t, srv)
		pub := srv.New()
		x := startService(t, srv, store, svcOpts{clock: clock.Now, instance: "alerter-x"})
		y := startService(t, srv, store, svcOpts{clock: clock.Now, instance: "alerter-y"})
		for _, e := range killSequence("shard-1", "a") {
			clock.Set(e.Time)
			var wg sync.WaitGroup
			for _, s := range []*testService{x, y} {
				wg.Add(1)
				go func() {
					defer wg.Done()
					if err := s.Handle(context.Background(), delivery(t, e)); err != nil {
						t.Errorf("%s: %v", s.Instance(), err)
					}
				}()
			}
			wg.Wait()
		}
		got := summary(reader.sync(t, pub, "shard-1"))
		if !slices.Equal(got, []string{"alert.opened PRIMARY_DOWN #1", "alert.resolved PRIMARY_DOWN #1"}) {
			t.Fatalf("round %d: %v", round, got)
		}
		_ = pub.Close()
	}
}

// TestAgentLostOnlyByOwner: an instance whose shard moved to another instance does not
// call the shard's agents lost; the instance that has it does, once they are silent.
func TestAgentLostOnlyByOwner(t *testing.T) {
	srv := memstream.NewServer(memstream.Options{Partitions: 2, LeaseTTL: time.Second})
	store := memkv.New()
	clock := &fakeClock{t: t0}
	reader := readAlerts(t, srv)
	pub := srv.New()
	defer pub.Close()
	a := startService(t, srv, store, svcOpts{clock: clock.Now, instance: "alerter-a"})
	b := startService(t, srv, store, svcOpts{clock: clock.Now, instance: "alerter-b"})
	ctx := context.Background()
	for i := 0; i < 4; i++ { // a has the shard
		e := hb("shard-1", "agent", uint64(i+1), true, t0.Add(time.Duration(i)*250*time.Millisecond))
		clock.Set(e.Time)
		if err := a.Handle(ctx, delivery(t, e)); err != nil {
			t.Fatal(err)
		}
	}
	for i := 4; i < 20; i++ { // the partition moved: b has it
		e := hb("shard-1", "agent", uint64(i+1), true, t0.Add(time.Duration(i)*250*time.Millisecond))
		clock.Set(e.Time)
		if err := b.Handle(ctx, delivery(t, e)); err != nil {
			t.Fatal(err)
		}
	}
	clock.Set(t0.Add(5 * time.Second)) // a heard nothing for 4.25 s, b for 0.25 s
	a.Tick(ctx)
	b.Tick(ctx)
	if got := reader.sync(t, pub, "shard-1"); len(got) != 0 {
		t.Fatalf("alerts while the agents report to the other instance: %v", summary(got))
	}
	if _, known := a.ShardState("shard-1"); known {
		t.Error("instance a still tracks the shard it handed over")
	}
	if n := testutil.ToFloat64(a.m.droppedShard); n != 1 {
		t.Errorf("a dropped %v shards, want 1", n)
	}
	clock.Set(t0.Add(9 * time.Second)) // now the agents are silent for b too
	a.Tick(ctx)
	b.Tick(ctx)
	if got := summary(reader.sync(t, pub, "shard-1")); !slices.Equal(got, []string{"alert.opened AGENT_LOST #1"}) {
		t.Fatalf("alerts: %v", got)
	}
}

func TestHealthEndpoints(t *testing.T) {
	srv := memstream.NewServer(memstream.Options{Partitions: 2, LeaseTTL: time.Second})
	svc := startService(t, srv, memkv.New(), svcOpts{})
	h := svc.Handler()
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, _ := get("/healthz"); code != http.StatusOK {
		t.Errorf("/healthz: %d", code)
	}
	if code, _ := get("/readyz"); code != http.StatusServiceUnavailable {
		t.Errorf("/readyz before Run: %d, want 503", code)
	}
	running := startService(t, srv, memkv.New(), svcOpts{run: true, instance: "running"})
	pub := srv.New()
	defer pub.Close()
	publish(t, pub, hb("shard-1", "a", 1, true, time.Now()))
	waitFor(t, 10*time.Second, "heartbeat handled", func() bool { return running.handled() >= 1 })
	rec := httptest.NewRecorder()
	running.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusOK {
		t.Errorf("/readyz while running: %d", rec.Code)
	}
	rec = httptest.NewRecorder()
	running.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	for _, want := range []string{`alerter_heartbeats_total{result="accepted"} 1`, `alerter_shards{state="OK"} 1`,
		"alerter_decision_latency_seconds_bucket", "alerter_consumer_lag_seconds", "alerter_alerts_published_total"} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}

func TestConfigValidateReportsEveryProblem(t *testing.T) {
	c := DefaultConfig()
	c.Detector.FailThreshold = 0
	c.Detector.FlapWindow = 0
	c.Group = "bad group"
	c.Tick = 0
	c.Connect.Stream = "carrier-pigeon://"
	err := c.Validate()
	if err == nil {
		t.Fatal("no error")
	}
	for _, want := range []string{"fail-threshold", "flap-window", "group", "tick", "stream"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if d := DefaultConfig(); d.Validate() != nil {
		t.Errorf("defaults invalid: %v", d.Validate())
	}
}

func TestNewRefusesMissingDependencies(t *testing.T) {
	if _, err := New(Options{Config: DefaultConfig()}); err == nil || !strings.Contains(err.Error(), "required") {
		t.Fatalf("New without dependencies: %v", err)
	}
}

// TestMassSilenceIsNotAgentLoss: when most shards go silent at once, the stream or the
// alerter's consumer stalled: no AGENT_LOST for them, /readyz says so. A single shard
// silent among reporting ones is AGENT_LOST.
func TestMassSilenceIsNotAgentLoss(t *testing.T) {
	srv := memstream.NewServer(memstream.Options{Partitions: 2, LeaseTTL: time.Second})
	clock := &fakeClock{t: t0}
	reader := readAlerts(t, srv)
	pub := srv.New()
	defer pub.Close()
	svc := startService(t, srv, memkv.New(), svcOpts{clock: clock.Now})
	ctx := context.Background()
	feed := func(from, to int, seq uint64) {
		t.Helper()
		for i := from; i < to; i++ {
			if err := svc.Handle(ctx, delivery(t, hb(fmt.Sprintf("s%d", i), "a", seq, true, clock.Now()))); err != nil {
				t.Fatal(err)
			}
		}
	}
	feed(0, 12, 1)
	clock.Add(5 * time.Second)
	svc.Tick(ctx)
	for i := 0; i < 12; i++ {
		if got := reader.sync(t, pub, fmt.Sprintf("s%d", i)); len(got) != 0 {
			t.Fatalf("s%d: %v while every shard went silent at once", i, summary(got))
		}
	}
	if testutil.ToFloat64(svc.m.stalled) != 1 || !strings.Contains(svc.logs.String(), "stalled") {
		t.Error("the stall is neither in the metric nor in the log")
	}
	svc.ready.Store(true)
	rec := httptest.NewRecorder()
	svc.Handler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the stall: %d", rec.Code)
	}
	// Heartbeats flow again for all but s11, which stays silent.
	for step := uint64(2); step < 20; step++ {
		clock.Add(250 * time.Millisecond)
		feed(0, 11, step)
		svc.Tick(ctx)
	}
	if got := summary(reader.sync(t, pub, "s11")); !slices.Equal(got, []string{"alert.opened AGENT_LOST #1"}) {
		t.Errorf("s11: %v", got)
	}
	if got := reader.sync(t, pub, "s3"); len(got) != 0 {
		t.Errorf("s3: %v", summary(got))
	}
	if testutil.ToFloat64(svc.m.stalled) != 0 {
		t.Error("still stalled")
	}
}

// TestLaggingConsumerDecidesNoSilence: while the alerter handles heartbeats that the
// stream accepted long ago (a backlog), silence measured on its clock is no evidence.
func TestLaggingConsumerDecidesNoSilence(t *testing.T) {
	srv := memstream.NewServer(memstream.Options{Partitions: 2, LeaseTTL: time.Second})
	clock := &fakeClock{t: t0}
	reader := readAlerts(t, srv)
	pub := srv.New()
	defer pub.Close()
	svc := startService(t, srv, memkv.New(), svcOpts{clock: clock.Now})
	ctx := context.Background()
	on := func(e events.Event, partition string, age time.Duration) {
		t.Helper()
		d := delivery(t, e)
		d.Partition, d.Published = partition, time.Now().Add(-age)
		if err := svc.Handle(ctx, d); err != nil {
			t.Fatal(err)
		}
	}
	on(hb("shard-1", "a", 1, true, t0), "p1", 10*time.Second) // handled 10 s after the stream took it
	clock.Add(5 * time.Second)
	on(hb("shard-2", "a", 1, true, clock.Now()), "p2", 0) // another partition keeps up
	svc.Tick(ctx)
	if got := reader.sync(t, pub, "shard-1"); len(got) != 0 {
		t.Fatalf("alerts while shard-1's partition lags: %v", summary(got))
	}
	on(hb("shard-3", "a", 1, true, clock.Now()), "p1", 0) // shard-1's partition caught up
	svc.Tick(ctx)
	if got := summary(reader.sync(t, pub, "shard-1")); !slices.Equal(got, []string{"alert.opened AGENT_LOST #1"}) {
		t.Fatalf("shard-1 after its partition caught up: %v", got)
	}
}

// TestStalledPartitionIsNotAgentLoss: when the consumer of one stream partition stalls,
// all its shards fall silent together (here 15 of 240 shards: under the fleet-wide
// threshold): no AGENT_LOST for them; a single silent shard elsewhere is AGENT_LOST.
func TestStalledPartitionIsNotAgentLoss(t *testing.T) {
	srv := memstream.NewServer(memstream.Options{Partitions: 2, LeaseTTL: time.Second})
	clock := &fakeClock{t: t0}
	reader := readAlerts(t, srv)
	pub := srv.New()
	defer pub.Close()
	svc := startService(t, srv, memkv.New(), svcOpts{clock: clock.Now})
	ctx := context.Background()
	feed := func(seq uint64, skip func(p, i int) bool) {
		t.Helper()
		for p := 0; p < 16; p++ {
			for i := 0; i < 15; i++ {
				if skip(p, i) {
					continue
				}
				d := delivery(t, hb(fmt.Sprintf("p%d-s%d", p, i), "a", seq, true, clock.Now()))
				d.Partition = strconv.Itoa(p)
				if err := svc.Handle(ctx, d); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	feed(1, func(int, int) bool { return false })
	for seq := uint64(2); seq < 22; seq++ {
		clock.Add(250 * time.Millisecond)
		feed(seq, func(p, i int) bool { return p == 1 || p == 2 && i == 0 }) // partition 1 stalls; p2-s0's agent dies
		svc.Tick(ctx)
	}
	if got := summary(reader.sync(t, pub, "p2-s0")); !slices.Equal(got, []string{"alert.opened AGENT_LOST #1"}) {
		t.Errorf("p2-s0: %v", got)
	}
	for i := 0; i < 15; i++ {
		if got := reader.sync(t, pub, fmt.Sprintf("p1-s%d", i)); len(got) != 0 {
			t.Fatalf("p1-s%d: %v while its partition stalled", i, summary(got))
		}
	}
	if testutil.ToFloat64(svc.m.stalled) != 0 {
		t.Error("one stalled partition of sixteen reported as the whole input stalled")
	}
}

// TestCrashAfterPublishBeforeClear: an alert is published but the process dies before
// its record is cleared (that happens on the next tick). The successor publishes it
// again with the same event id, which the stream drops: one alert.
func TestCrashAfterPublishBeforeClear(t *testing.T) {
	srv := memstream.NewServer(memstream.Options{Partitions: 2, LeaseTTL: time.Second})
	store := memkv.New()
	clock := &fakeClock{t: t0}
	reader := readAlerts(t, srv)
	pub := srv.New()
	defer pub.Close()
	crashed := startService(t, srv, store, svcOpts{clock: clock.Now})
	ctx := context.Background()
	seq := killSequence("shard-1", "a")
	for _, e := range seq[:5] {
		clock.Set(e.Time)
		if err := crashed.Handle(ctx, delivery(t, e)); err != nil {
			t.Fatal(err)
		}
	}
	if r, _, _ := crashed.getRecord(ctx, "shard-1"); len(r.Pending) != 1 {
		t.Fatalf("record before the crash: %d pending", len(r.Pending))
	}
	next := startService(t, srv, store, svcOpts{clock: clock.Now, run: true, instance: "alerter-next"})
	waitFor(t, 10*time.Second, "the successor cleared the record", func() bool {
		next.Tick(ctx)
		r, _, _ := next.getRecord(ctx, "shard-1")
		return len(r.Pending) == 0
	})
	if got := summary(reader.sync(t, pub, "shard-1")); !slices.Equal(got, []string{"alert.opened PRIMARY_DOWN #1"}) {
		t.Fatalf("alerts: %v", got)
	}
}
