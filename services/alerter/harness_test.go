package alerter

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/heartline/heartline/services/alerter/detector"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/memstream"
)

// fakeClock is the decisions' clock in tests.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

func (c *fakeClock) Add(d time.Duration) time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
	return c.t
}

// testService is a Service running Run in the background.
type testService struct {
	*Service
	logs   *logging.Buffer
	cancel context.CancelFunc
	done   chan error
}

type svcOpts struct {
	instance string
	clock    func() time.Time
	detector *detector.Config
	tick     time.Duration // 0: no ticker (the test calls Tick itself)
	kv       kv.Store
	pub      stream.Publisher
	run      bool // call Run (consume); false: tests call Handle directly
}

// startService builds an alerter on the memstream server and store, and runs it until
// the test ends (or stop is called).
func startService(t testing.TB, srv *memstream.Server, store kv.Store, o svcOpts) *testService {
	t.Helper()
	cfg := DefaultConfig()
	if o.detector != nil {
		cfg.Detector = *o.detector
	}
	cfg.Instance = o.instance
	if cfg.Instance == "" {
		cfg.Instance = "alerter-test"
	}
	cfg.Tick = o.tick
	if cfg.Tick == 0 {
		cfg.Tick = 100 * time.Millisecond // not used: the test ticks by hand
	}
	if store == nil {
		store = o.kv
	}
	client := srv.New()
	t.Cleanup(func() { _ = client.Close() })
	var pub stream.Publisher = client
	if o.pub != nil {
		pub = o.pub
	}
	logs := &logging.Buffer{}
	svc, err := New(Options{Config: cfg, Consumer: client, Publisher: pub, KV: store, Log: logging.Test(logs),
		Registry: prometheus.NewRegistry(), Now: o.clock, StartOldest: true, ManualTick: o.tick == 0})
	if err != nil {
		t.Fatal(err)
	}
	ts := &testService{Service: svc, logs: logs, done: make(chan error, 1)}
	if !o.run {
		close(ts.done)
		ts.cancel = func() {}
		return ts
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts.cancel = cancel
	go func() { ts.done <- svc.Run(ctx); close(ts.done) }()
	t.Cleanup(func() { ts.stop(t) })
	waitFor(t, 10*time.Second, "alerter ready", func() bool { return svc.ready.Load() })
	return ts
}

// stop stops Run and waits for it.
func (ts *testService) stop(t testing.TB) {
	t.Helper()
	ts.cancel()
	select {
	case err, ok := <-ts.done:
		if ok && err != nil {
			t.Errorf("alerter Run: %v", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("alerter did not stop within 15s")
	}
}

// handled is the number of heartbeat messages the service finished handling.
func (ts *testService) handled() int {
	n := 0
	for _, r := range []string{"accepted", "duplicate", "out_of_order", "stale", "malformed", "rejected"} {
		n += int(testutil.ToFloat64(ts.m.heartbeats.WithLabelValues(r)))
	}
	return n
}

func (ts *testService) results() map[string]int {
	out := map[string]int{}
	for _, r := range []string{"accepted", "duplicate", "out_of_order", "stale", "malformed", "rejected"} {
		if n := int(testutil.ToFloat64(ts.m.heartbeats.WithLabelValues(r))); n > 0 {
			out[r] = n
		}
	}
	return out
}

// waitFor polls cond every 10 ms until it holds, failing the test after timeout.
func waitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// publish encodes and publishes a heartbeat event keyed by its shard.
func publish(t testing.TB, p stream.Publisher, e events.Event) {
	t.Helper()
	b, err := events.Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.Publish(ctx, events.TopicHeartbeats, stream.Message{Key: e.Shard, ID: e.ID, Data: b}); err != nil {
		t.Fatal(err)
	}
}

// alertReader collects the alerts topic through its own consumer group.
type alertReader struct {
	mu     sync.Mutex
	alerts []delivered
	marks  map[string]bool
}

type delivered struct {
	Event     events.Event
	Published time.Time
	Received  time.Time
}

func readAlerts(t *testing.T, srv *memstream.Server) *alertReader {
	t.Helper()
	c := srv.New()
	t.Cleanup(func() { _ = c.Close() })
	return readAlertsFrom(t, c)
}

// readAlertsFrom reads the alerts topic through c.
func readAlertsFrom(t *testing.T, c stream.Consumer) *alertReader {
	t.Helper()
	r := &alertReader{marks: map[string]bool{}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = c.Consume(ctx, stream.Subscription{Topic: events.TopicAlerts, Group: "test-reader", Start: stream.StartOldest},
			func(_ context.Context, d stream.Delivery) error {
				r.mu.Lock()
				defer r.mu.Unlock()
				if bytes.HasPrefix(d.Data, []byte("mark:")) {
					r.marks[string(d.Data)] = true
					return nil
				}
				e, err := events.Decode(d.Data)
				if err != nil {
					t.Errorf("alert topic holds an undecodable event: %v", err)
					return nil
				}
				r.alerts = append(r.alerts, delivered{Event: e, Published: d.Published, Received: time.Now()})
				return nil
			})
	}()
	t.Cleanup(func() { cancel(); <-done })
	return r
}

// sync publishes a marker keyed by shard and waits until the reader got it: every alert
// of that shard published before it has been read then.
func (r *alertReader) sync(t *testing.T, p stream.Publisher, shard string) []events.Event {
	t.Helper()
	mark := fmt.Sprintf("mark:%s:%d", shard, time.Now().UnixNano())
	if err := p.Publish(context.Background(), events.TopicAlerts, stream.Message{Key: shard, ID: mark, Data: []byte(mark)}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "alert reader to catch up", func() bool {
		r.mu.Lock()
		defer r.mu.Unlock()
		return r.marks[mark]
	})
	return r.of(shard)
}

// of returns the alerts read so far for shard.
func (r *alertReader) of(shard string) []events.Event {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []events.Event
	for _, d := range r.alerts {
		if d.Event.Shard == shard {
			out = append(out, d.Event)
		}
	}
	return out
}

func (r *alertReader) all() []delivered {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]delivered(nil), r.alerts...)
}

// summary renders alerts as "kind code #incident" lines for assertions.
func summary(es []events.Event) []string {
	ids := map[string]int{}
	var out []string
	for _, e := range es {
		a := e.Payload.(*events.Alert)
		if _, ok := ids[a.IncidentID]; !ok {
			ids[a.IncidentID] = len(ids) + 1
		}
		out = append(out, fmt.Sprintf("%s %s #%d", e.Kind, a.Code, ids[a.IncidentID]))
	}
	return out
}
