package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/experiment"
	"github.com/heartline/heartline/services/chaos/internal/injector"
	"github.com/heartline/heartline/services/chaos/internal/runner"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/topology"
)

// fakeClock fires a waiter only when the test says so.
type fakeClock struct {
	mu      sync.Mutex
	now     time.Time
	waiters []chan time.Time
	waiting chan struct{}
}

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC), waiting: make(chan struct{}, 100)}
}

func (c *fakeClock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.now }

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan time.Time, 1)
	c.waiters = append(c.waiters, ch)
	c.waiting <- struct{}{}
	return ch
}

// tick waits until the scheduler waits, then moves time on by d and wakes it.
func (c *fakeClock) tick(t *testing.T, d time.Duration) {
	t.Helper()
	select {
	case <-c.waiting:
	case <-time.After(10 * time.Second):
		t.Fatal("the scheduler never waited")
	}
	c.mu.Lock()
	c.now = c.now.Add(d)
	w := c.waiters
	c.waiters = nil
	c.mu.Unlock()
	for _, ch := range w {
		ch <- c.now
	}
}

type fakeRunner struct {
	mu     sync.Mutex
	shards []string
	n      int
}

func (f *fakeRunner) Run(_ context.Context, x *experiment.Experiment, o runner.Options) *runner.Report {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.shards = append(f.shards, o.Shard)
	f.n++
	rep := &runner.Report{RunID: o.RunID, Experiment: x.Title, Dir: "/reports/" + o.RunID}
	if f.n == 1 {
		rep.Hypotheses = []events.HypothesisResult{{Name: "acknowledged messages lost", Expected: "zero", Actual: "3", Held: false}}
		return rep
	}
	rep.Passed = true
	return rep
}

type fakeHealth struct {
	mu   sync.Mutex
	open []string
	bad  map[string]bool
}

func (h *fakeHealth) AnyOpenAlert(context.Context) ([]string, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.open...), nil
}

func (h *fakeHealth) Check(_ context.Context, s string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.bad[s] {
		return errors.New(s + ": degraded")
	}
	return nil
}

func TestScheduleSkipsIncidentsPicksHealthyShardsAndKeepsGoing(t *testing.T) {
	kvs := memkv.New()
	m := topology.Map{Shards: []topology.Shard{
		{ID: "s0", Index: 0, Epoch: 1, Primary: "h:1", Replicas: []string{"h:2"}},
		{ID: "s1", Index: 1, Epoch: 1, Primary: "h:3", Replicas: []string{"h:4"}},
		{ID: "s2", Index: 2, Epoch: 1, Primary: "h:5", Replicas: []string{"h:6"}},
	}}
	if _, err := (topology.Store{KV: kvs}).Seed(context.Background(), m); err != nil {
		t.Fatal(err)
	}
	x, err := experiment.Parse("k.yaml", []byte("title: k\nhypothesis: {lost: 0}\nmethod:\n  - {fault: kill, target: 'shard:random/primary', duration: 1s}\n"))
	if err != nil {
		t.Fatal(err)
	}
	clock := newFakeClock()
	health := &fakeHealth{open: []string{"s1"}, bad: map[string]bool{"s0": true}}
	run := &fakeRunner{}
	metrics := injector.NewMetrics(prometheus.NewRegistry())
	logFile := filepath.Join(t.TempDir(), "schedule.jsonl")
	s := &Scheduler{Every: 4 * time.Hour, Experiments: []*experiment.Experiment{x}, Runner: run, Health: health, KV: kvs,
		LogFile: logFile, Clock: clock,
		Intn: func(n int) int { return n - 1 }, Metrics: metrics, Log: zerolog.Nop()}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()

	// Slot 0: an incident is open: skipped, nothing run.
	clock.tick(t, 4*time.Hour)
	waitRecords(t, kvs, 1)
	if run.count() != 0 {
		t.Fatal("ran during an open incident")
	}
	// Slot 1: the incident is over; s0 is degraded, so s1 or s2 (Intn picks the last: s2). The run fails.
	health.mu.Lock()
	health.open = nil
	health.mu.Unlock()
	clock.tick(t, 4*time.Hour)
	waitRecords(t, kvs, 2)
	// Slot 2: the schedule kept going after the failed run.
	clock.tick(t, 4*time.Hour)
	waitRecords(t, kvs, 3)
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if got := run.shardsPicked(); len(got) != 2 || got[0] != "s2" || got[1] != "s2" {
		t.Fatalf("shards picked: %v", got)
	}
	recs := records(t, kvs)
	outcomes := map[string]int{}
	for _, r := range recs {
		outcomes[r.Outcome]++
		if r.Outcome == OutcomeRan && !r.Passed && r.Reason == "" {
			t.Fatal("a failed run is recorded without its reason")
		}
	}
	if outcomes[OutcomeSkippedIncident] != 1 || outcomes[OutcomeRan] != 2 {
		t.Fatalf("outcomes: %v", outcomes)
	}
	b, _ := os.ReadFile(logFile)
	if n := len(splitLines(b)); n != 3 {
		t.Fatalf("schedule log has %d lines", n)
	}
	if testutil.ToFloat64(metrics.Schedule.WithLabelValues(OutcomeRan)) != 2 {
		t.Fatal("metric")
	}

	// Every shard degraded: skipped, no run.
	health.bad = map[string]bool{"s0": true, "s1": true, "s2": true}
	s2 := &Scheduler{Every: time.Hour, Experiments: s.Experiments, Runner: run, Health: health, KV: kvs, Clock: clock,
		StartNow: true, MaxRuns: 1, Log: zerolog.Nop()}
	if err := s2.Run(context.Background()); err != nil {
		t.Fatal(err)
	}
	if run.count() != 2 {
		t.Fatal("ran with no healthy shard")
	}
	if outcomesOf(records(t, kvs))[OutcomeSkippedNoShard] != 1 {
		t.Fatal("no skipped_no_shard record")
	}
}

func (f *fakeRunner) count() int { f.mu.Lock(); defer f.mu.Unlock(); return f.n }
func (f *fakeRunner) shardsPicked() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.shards...)
}

func records(t *testing.T, kvs *memkv.Store) []Record {
	entries, err := kvs.List(context.Background(), RunsPrefix)
	if err != nil {
		t.Fatal(err)
	}
	var out []Record
	for _, e := range entries {
		var r Record
		if err := json.Unmarshal(e.Value, &r); err != nil {
			t.Fatal(err)
		}
		out = append(out, r)
	}
	return out
}

func outcomesOf(rs []Record) map[string]int {
	m := map[string]int{}
	for _, r := range rs {
		m[r.Outcome]++
	}
	return m
}

func waitRecords(t *testing.T, kvs *memkv.Store, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for len(records(t, kvs)) < n {
		if time.Now().After(deadline) {
			t.Fatalf("waiting for %d records, have %d", n, len(records(t, kvs)))
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func splitLines(b []byte) []string {
	var out []string
	start := 0
	for i, c := range b {
		if c == '\n' {
			out = append(out, string(b[start:i]))
			start = i + 1
		}
	}
	return out
}
