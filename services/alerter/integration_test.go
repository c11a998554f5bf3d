package alerter

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/memstream"
	"github.com/heartline/heartline/shared/stream/natsstream"
	"github.com/heartline/heartline/shared/stream/natsstream/natstest"
)

// The integration tests drive real redis-server processes (shared/redistest) with the
// probe driver of probedriver_test.go and run the alerter with its default settings and
// the real clock. The stream and kv are the in-memory ones here; the benchmark runs the
// same path over embedded NATS.

type rig struct {
	svc    *testService
	reader *alertReader
	pub    stream.Publisher
}

func newRig(t *testing.T) *rig {
	t.Helper()
	srv := memstream.NewServer(memstream.Options{Partitions: 8, LeaseTTL: time.Second})
	svc := startService(t, srv, memkv.New(), svcOpts{run: true, tick: 250 * time.Millisecond})
	pub := srv.New()
	t.Cleanup(func() { _ = pub.Close() })
	return &rig{svc: svc, reader: readAlerts(t, srv), pub: pub}
}

// newNATSRig runs the alerter on an embedded NATS server with JetStream, incidents in
// NATS KV: the production profile.
func newNATSRig(t *testing.T) *rig {
	t.Helper()
	e := natstest.Start(t)
	open := func(name string) *natsstream.Backend {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b, err := natsstream.New(ctx, natsstream.Options{URL: e.ClientURL(), Name: name, LeaseTTL: 2 * time.Second})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	}
	b := open("alerter")
	cfg := DefaultConfig()
	cfg.Instance = "alerter-it"
	logs := &logging.Buffer{}
	svc, err := New(Options{Config: cfg, Consumer: b, Publisher: b, KV: b.KV(), Log: logging.Test(logs),
		Registry: prometheus.NewRegistry(), StartOldest: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	ts := &testService{Service: svc, logs: logs, cancel: cancel, done: make(chan error, 1)}
	go func() { ts.done <- svc.Run(ctx); close(ts.done) }()
	t.Cleanup(func() { ts.stop(t) })
	waitFor(t, 30*time.Second, "alerter ready", func() bool { return svc.ready.Load() })
	return &rig{svc: ts, reader: readAlertsFrom(t, open("reader")), pub: open("agents")}
}

// agents starts one probe agent per replica of the shard; via, when set, gives the
// address through which an agent reaches the primary.
func (r *rig) agents(t *testing.T, shard string, sh *redistest.Shard, via map[int]string) []*probeAgent {
	t.Helper()
	var out []*probeAgent
	for i, rep := range sh.Replicas {
		out = append(out, startAgent(t, &probeAgent{Name: fmt.Sprintf("%s-agent%d", shard, i+1), Shard: shard,
			Primary: sh.Primary.Addr(), ProbeVia: via[i], Replica: rep.Addr(), Pub: r.pub}))
	}
	redistest.WaitFor(t, 15*time.Second, "agents reporting a healthy primary", func() bool {
		for _, a := range out {
			if a.published.Load() < 4 {
				return false
			}
		}
		st, ok := r.svc.ShardState(shard)
		return ok && st == events.StateOK
	})
	return out
}

// alerts returns the shard's alerts so far, with their publication times.
func (r *rig) alerts(shard string) []delivered {
	var out []delivered
	for _, d := range r.reader.all() {
		if d.Event.Shard == shard {
			out = append(out, d)
		}
	}
	return out
}

// waitAlert waits for an alert of the shard matching match.
func (r *rig) waitAlert(t *testing.T, shard, what string, timeout time.Duration, match func(events.Event, *events.Alert) bool) delivered {
	t.Helper()
	var found delivered
	redistest.WaitFor(t, timeout, what, func() bool {
		for _, d := range r.alerts(shard) {
			if match(d.Event, d.Event.Payload.(*events.Alert)) {
				found = d
				return true
			}
		}
		return false
	})
	return found
}

// quiet watches the shard for d and fails on any alert accepted by bad.
func (r *rig) quiet(t *testing.T, shard string, d time.Duration, bad func(events.Event, *events.Alert) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		for _, x := range r.alerts(shard) {
			if bad(x.Event, x.Event.Payload.(*events.Alert)) {
				t.Fatalf("unexpected alert: %s %s %s", x.Event.Kind, x.Event.Payload.(*events.Alert).Code, x.Event.Payload.(*events.Alert).Reason)
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func kinds(ds []delivered) string {
	var s []string
	for _, d := range ds {
		s = append(s, string(d.Event.Kind)+" "+string(d.Event.Payload.(*events.Alert).Code))
	}
	return strings.Join(s, ", ")
}

func fill(t *testing.T, n *redistest.Node, keys int) {
	t.Helper()
	c := n.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	p := c.Pipeline()
	for i := 0; i < keys; i++ {
		p.Set(ctx, fmt.Sprintf("k%d", i), i, 0)
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
}

func opened(e events.Event, _ *events.Alert) bool { return e.Kind == events.KindAlertOpened }

// TestIntegrationKill9: kill -9 of the primary of three shards (two replicas each, an
// agent beside each): exactly one opened PRIMARY_DOWN per shard, critical, with both
// agents behind it. The time from the kill to the alert's publication is logged (the
// target is under 1 s with the default settings). On memstream and on embedded NATS.
func TestIntegrationKill9(t *testing.T) {
	t.Run("memstream", func(t *testing.T) { testKill9(t, newRig(t)) })
	t.Run("nats", func(t *testing.T) { testKill9(t, newNATSRig(t)) })
}

func testKill9(t *testing.T, r *rig) {
	var lat []time.Duration
	results := make(chan time.Duration, 3)
	t.Run("shards", func(t *testing.T) {
		for i := 0; i < 3; i++ {
			shard := fmt.Sprintf("kill-%d", i)
			t.Run(shard, func(t *testing.T) {
				t.Parallel()
				sh := redistest.StartShard(t, shard, 2)
				fill(t, sh.Primary, 100)
				r.agents(t, shard, sh, nil)
				killed := time.Now()
				if err := sh.Primary.Kill(); err != nil {
					t.Fatal(err)
				}
				d := r.waitAlert(t, shard, "PRIMARY_DOWN opened", 10*time.Second, opened)
				a := d.Event.Payload.(*events.Alert)
				if a.Code != events.AlertPrimaryDown || a.Severity != events.SeverityCritical || a.AgentsDown != 2 || a.Primary != sh.Primary.Addr() {
					t.Fatalf("opened alert: %+v", a)
				}
				took := d.Published.Sub(killed)
				results <- took
				t.Logf("kill -9 -> alert.opened published: %s (decision latency %s; reason: %s)",
					took.Round(time.Millisecond), d.Published.Sub(a.LastHeartbeatAt).Round(time.Millisecond), a.Reason)
				r.quiet(t, shard, 2*time.Second, func(e events.Event, _ *events.Alert) bool {
					return e.Kind == events.KindAlertOpened && e.ID != d.Event.ID
				})
				if n := len(r.alerts(shard)); n != 1 {
					t.Errorf("alerts after the kill: %s; want exactly the one opened", kinds(r.alerts(shard)))
				}
			})
		}
	})
	close(results)
	for d := range results {
		lat = append(lat, d)
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	t.Logf("kill -9 to alert.opened over %d shards: %v", len(lat), lat)
}

// TestIntegrationPause: SIGSTOP of the primary shorter than the threshold, then SIGCONT:
// no alert. Longer than the threshold: opened, and resolved after SIGCONT.
func TestIntegrationPause(t *testing.T) {
	r := newRig(t)
	shard := "pause"
	sh := redistest.StartShard(t, shard, 1)
	r.agents(t, shard, sh, nil)
	if err := sh.Primary.Pause(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond) // the fault's duration, not a wait for a condition
	if err := sh.Primary.Resume(); err != nil {
		t.Fatal(err)
	}
	r.quiet(t, shard, 2*time.Second, func(events.Event, *events.Alert) bool { return true })

	if err := sh.Primary.Pause(); err != nil {
		t.Fatal(err)
	}
	d := r.waitAlert(t, shard, "PRIMARY_DOWN opened during a long pause", 10*time.Second, opened)
	if err := sh.Primary.Resume(); err != nil {
		t.Fatal(err)
	}
	if a := d.Event.Payload.(*events.Alert); a.Code != events.AlertPrimaryDown {
		t.Fatalf("opened %s: %s", a.Code, a.Reason)
	}
	r.waitAlert(t, shard, "resolved after SIGCONT", 10*time.Second, func(e events.Event, a *events.Alert) bool {
		return e.Kind == events.KindAlertResolved && a.IncidentID == d.Event.Payload.(*events.Alert).IncidentID
	})
	if got := kinds(r.alerts(shard)); got != "alert.opened PRIMARY_DOWN, alert.resolved PRIMARY_DOWN" {
		t.Errorf("alerts: %s", got)
	}
}

// TestIntegrationRestartEmpty: kill -9 of the primary and an immediate restart with no
// data. The agents froze their replicas and flag PRIMARY_DATA_REGRESSED: a critical alert
// at once (or PRIMARY_DOWN escalated to it when the restart was slow), one incident.
func TestIntegrationRestartEmpty(t *testing.T) {
	r := newRig(t)
	shard := "restart-empty"
	sh := redistest.StartShard(t, shard, 2)
	fill(t, sh.Primary, 500)
	redistest.WaitFor(t, 10*time.Second, "replicas caught up", func() bool {
		off := sh.Primary.Info().Offset
		for _, rep := range sh.Replicas {
			if i := rep.Info(); i.Offset < off || i.Keys < 500 {
				return false
			}
		}
		return true
	})
	r.agents(t, shard, sh, nil)
	killed := time.Now()
	if err := sh.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := sh.Primary.Restart(ctx, true); err != nil {
		t.Fatal(err)
	}
	d := r.waitAlert(t, shard, "PRIMARY_DATA_REGRESSED", 10*time.Second, func(e events.Event, a *events.Alert) bool {
		return a.Code == events.AlertPrimaryDataRegressed && a.Severity == events.SeverityCritical
	})
	t.Logf("kill -9 + empty restart -> %s PRIMARY_DATA_REGRESSED published after %s: %s", d.Event.Kind,
		d.Published.Sub(killed).Round(time.Millisecond), d.Event.Payload.(*events.Alert).Reason)
	r.quiet(t, shard, time.Second, func(e events.Event, a *events.Alert) bool {
		return e.Kind == events.KindAlertResolved
	})
	var opens int
	for _, x := range r.alerts(shard) {
		if x.Event.Kind == events.KindAlertOpened {
			opens++
		}
	}
	if opens != 1 {
		t.Errorf("alerts: %s; want one incident", kinds(r.alerts(shard)))
	}
	for _, rep := range sh.Replicas {
		if k := rep.Info().Keys; k != 500 {
			t.Errorf("replica %s holds %d keys, want 500 (the probe driver should have frozen it)", rep.Name(), k)
		}
	}
}

// TestIntegrationReplicaCutOff: one of two replica hosts loses its path to the primary
// (a blackholing proxy between its agent and the primary) while the other sees it
// healthy: REPLICA_PROBLEM, never PRIMARY_DOWN; resolved when the path is back. Then the
// other replica is killed: still no PRIMARY_DOWN.
func TestIntegrationReplicaCutOff(t *testing.T) {
	r := newRig(t)
	shard := "cut-off"
	sh := redistest.StartShard(t, shard, 2)
	proxy := newBlackhole(t, sh.Primary.Addr())
	r.agents(t, shard, sh, map[int]string{0: proxy.Addr()})
	noPrimaryDown := func(_ events.Event, a *events.Alert) bool { return a.Code == events.AlertPrimaryDown }

	proxy.cut.Store(true)
	d := r.waitAlert(t, shard, "REPLICA_PROBLEM", 10*time.Second, opened)
	a := d.Event.Payload.(*events.Alert)
	if a.Code != events.AlertReplicaProblem || a.Severity != events.SeverityWarning || a.AgentsDown != 1 || a.AgentsReporting != 2 {
		t.Fatalf("opened: %+v", a)
	}
	r.quiet(t, shard, time.Second, noPrimaryDown)
	proxy.cut.Store(false)
	r.waitAlert(t, shard, "REPLICA_PROBLEM resolved", 10*time.Second, func(e events.Event, _ *events.Alert) bool {
		return e.Kind == events.KindAlertResolved
	})

	if err := sh.Replicas[1].Kill(); err != nil {
		t.Fatal(err)
	}
	r.quiet(t, shard, 2*time.Second, noPrimaryDown)
	if got := kinds(r.alerts(shard)); got != "alert.opened REPLICA_PROBLEM, alert.resolved REPLICA_PROBLEM" {
		t.Errorf("alerts: %s", got)
	}
}
