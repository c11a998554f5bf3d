package agent

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/redis/go-redis/v9"

	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/stream/memstream"
)

// harness is one agent under test beside a real replica, publishing to an in-memory
// stream through a recorder that can simulate an outage.
type harness struct {
	t     *testing.T
	a     *Agent
	pub   *flakyPublisher
	reg   *prometheus.Registry
	logs  *logging.Buffer
	stop  context.CancelFunc
	done  chan struct{}
	start time.Time
}

// testConfig is a configuration with short intervals for tests.
func testConfig(shard, replica, primary string) Config {
	c := DefaultConfig()
	c.Shard, c.Replica, c.Primary = shard, replica, primary
	c.Interval, c.ProbeTimeout, c.UnfreezeAfter = 100*time.Millisecond, 80*time.Millisecond, 500*time.Millisecond
	c.HTTPListen = ""
	c.ShutdownTimeout = 2 * time.Second
	return c
}

func startAgent(t *testing.T, cfg Config, topo Topology) *harness {
	t.Helper()
	h := &harness{t: t, pub: &flakyPublisher{next: memstream.New()}, reg: prometheus.NewRegistry(),
		logs: &logging.Buffer{}, done: make(chan struct{}), start: time.Now()}
	a, err := New(Options{Config: cfg, Publisher: h.pub, Topology: topo, Log: logging.Test(h.logs), Registry: h.reg,
		PublishRetry: backoff.Policy{Initial: 10 * time.Millisecond, Max: 50 * time.Millisecond}})
	if err != nil {
		t.Fatal(err)
	}
	a.out.timeout = 500 * time.Millisecond
	h.a = a
	ctx, cancel := context.WithCancel(context.Background())
	h.stop = cancel
	go func() { defer close(h.done); _ = a.Run(ctx) }()
	t.Cleanup(func() {
		h.Stop()
		if t.Failed() {
			t.Logf("agent log:\n%s", tail(h.logs.String(), 12000))
		}
	})
	return h
}

// Stop stops the agent and waits for it.
func (h *harness) Stop() {
	h.stop()
	select {
	case <-h.done:
	case <-time.After(15 * time.Second):
		h.t.Errorf("agent did not stop")
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// beat is a published heartbeat with its envelope.
type beat struct {
	e  events.Event
	hb *events.Heartbeat
}

// beats decodes every heartbeat published so far, checking the stream message.
func (h *harness) beats() []beat {
	h.t.Helper()
	var out []beat
	for _, m := range h.pub.published() {
		e, err := events.Decode(m.Data)
		if err != nil {
			h.t.Fatalf("published heartbeat does not decode: %v", err)
		}
		if m.Key != e.Shard || m.ID != e.ID || e.Kind != events.KindHeartbeat {
			h.t.Fatalf("message key %q id %q for event shard %q id %q kind %s", m.Key, m.ID, e.Shard, e.ID, e.Kind)
		}
		out = append(out, beat{e, e.Payload.(*events.Heartbeat)})
	}
	return out
}

// waitBeat waits for a heartbeat published after index from that satisfies cond, and
// returns it with its index.
func (h *harness) waitBeat(timeout time.Duration, from int, what string, cond func(b beat) bool) (beat, int) {
	h.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		bs := h.beats()
		for i := from; i < len(bs); i++ {
			if cond(bs[i]) {
				return bs[i], i
			}
		}
		if time.Now().After(deadline) {
			last := "none"
			if len(bs) > 0 {
				last = fmt.Sprintf("%+v", *bs[len(bs)-1].hb)
			}
			h.t.Fatalf("timed out after %s waiting for a heartbeat: %s (%d heartbeats; last: %s)", timeout, what, len(bs), last)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// waitHealthy waits for a heartbeat with both nodes fine and the watch connected.
func (h *harness) waitHealthy() int {
	h.t.Helper()
	_, i := h.waitBeat(20*time.Second, 0, "healthy heartbeat", func(b beat) bool {
		return b.hb.Primary.OK && b.hb.Replica.Reachable && b.hb.Replica.LinkUp && len(b.hb.Flags) == 0
	})
	redistest.WaitFor(h.t, 10*time.Second, "watch connection up", func() bool { return testutil.ToFloat64(h.a.m.watchUp) == 1 })
	return i
}

func (h *harness) counter(c prometheus.Collector) float64 { return testutil.ToFloat64(c) }

func (h *harness) freezes() float64 {
	var n float64
	for _, r := range []string{reasonPrimaryGone, reasonPrimaryRestarted, reasonLinkDown, reasonRegressed} {
		n += testutil.ToFloat64(h.a.m.freezes.WithLabelValues(r))
	}
	return n
}

// fill writes n keys on the primary and waits until the replicas have them.
func fill(t *testing.T, s *redistest.Shard, n int) {
	t.Helper()
	c := s.Primary.Client()
	ctx := context.Background()
	p := c.Pipeline()
	for i := 0; i < n; i++ {
		p.Set(ctx, fmt.Sprintf("key:%d", i), strings.Repeat("v", 32), 0)
	}
	if _, err := p.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	want := s.Primary.Info().Offset
	for _, r := range s.Replicas {
		redistest.WaitFor(t, 10*time.Second, r.Name()+" caught up", func() bool {
			i := r.Info()
			return i.Offset >= want && i.Keys == int64(n)
		})
	}
}

// infoOK reads INFO without failing the test (the node may be down).
func infoOK(n *redistest.Node) (redisinfo.Node, error) {
	c := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1, DialTimeout: time.Second, ContextTimeoutEnabled: true})
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	return redisinfo.Read(ctx, c)
}

// parkedAt is when the agent last parked its replica.
func (h *harness) parkedAt() time.Time {
	h.a.mu.Lock()
	defer h.a.mu.Unlock()
	return h.a.st.park.at
}
