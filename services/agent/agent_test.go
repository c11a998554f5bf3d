package agent

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/redisproc"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/topology"
)

func TestHeartbeatContentAgainstLivePair(t *testing.T) {
	s := redistest.StartShard(t, "hb", 1)
	rep := s.Replicas[0]
	fill(t, s, 50)
	m := topology.Map{Shards: []topology.Shard{{ID: "shard-7", Index: 0, Epoch: 3, Primary: s.Primary.Addr(), Replicas: []string{rep.Addr()}}}}

	cases := []struct {
		name    string
		primary string
		topo    Topology
		epoch   uint64
		source  string
	}{
		{"primary flag", s.Primary.Addr(), nil, 0, "flag"},
		{"topology", "", topology.Static(m), 3, "topology"},
		{"replica INFO", "", nil, 0, "replica"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			h := startAgent(t, testConfig("shard-7", rep.Addr(), c.primary), c.topo)
			i := h.waitHealthy()
			b, _ := h.waitBeat(10*time.Second, i, "heartbeat after the watch is up", func(beat) bool { return true })
			pi, ri := s.Primary.Info(), rep.Info()
			hb := b.hb
			if b.e.Shard != "shard-7" || b.e.Epoch != c.epoch || b.e.CorrelationID != b.e.ID || b.e.Source.Service != "agent" ||
				b.e.Source.Instance != "agent-"+rep.Addr() {
				t.Fatalf("envelope %+v", b.e)
			}
			r := hb.Replica
			if r.Addr != rep.Addr() || !r.Reachable || r.Role != "slave" || !r.LinkUp || r.Frozen || r.SyncInProgress ||
				r.MasterPort == 0 || r.Keys != 50 || r.Offset <= 0 || r.ReplID != pi.ReplID || r.LastIOSeconds < 0 {
				t.Fatalf("replica state %+v", r)
			}
			p := hb.Primary
			if p.Addr != s.Primary.Addr() || !p.OK || p.RunID != pi.RunID || p.Role != "master" || p.ReplID != pi.ReplID ||
				p.Offset < r.Offset || p.Keys != 50 || p.Replicas != 1 || p.Loading || p.Latency <= 0 || p.Error != "" {
				t.Fatalf("primary probe %+v (primary INFO run id %s repl id %s)", p, pi.RunID, pi.ReplID)
			}
			if ri.RunID == pi.RunID {
				t.Fatal("replica and primary share a run id")
			}
			if hb.Interval != 100*time.Millisecond || hb.AgentStart.IsZero() || len(hb.Flags) != 0 || len(hb.Drift) != 0 {
				t.Fatalf("heartbeat %+v", hb)
			}
			bs := h.beats()
			for j := 1; j < len(bs); j++ {
				if bs[j].hb.Seq != bs[j-1].hb.Seq+1 || bs[j].hb.AgentStart != bs[0].hb.AgentStart {
					t.Fatalf("seq %d after %d", bs[j].hb.Seq, bs[j-1].hb.Seq)
				}
			}
			if bs[0].hb.Seq != 1 {
				t.Fatalf("first seq %d", bs[0].hb.Seq)
			}
			h.a.mu.Lock()
			src := h.a.st.source
			h.a.mu.Unlock()
			if src != c.source {
				t.Fatalf("primary source %q, want %q", src, c.source)
			}
			if ok, why := h.a.Ready(); !ok {
				t.Fatalf("not ready: %s", why)
			}
		})
	}
}

func TestKillPrimaryParksReplicaAtOnce(t *testing.T) {
	s := redistest.StartShard(t, "kill", 1)
	rep := s.Replicas[0]
	fill(t, s, 100)
	h := startAgent(t, testConfig("shard-1", rep.Addr(), s.Primary.Addr()), nil)
	i := h.waitHealthy()

	t0 := time.Now()
	if err := s.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	fail, fi := h.waitBeat(10*time.Second, i, "failed heartbeat", func(b beat) bool { return !b.hb.Primary.OK })
	frozen, _ := h.waitBeat(10*time.Second, fi, "frozen heartbeat", func(b beat) bool {
		return b.hb.Has(events.FlagReplicationFrozen) && b.hb.Replica.Frozen
	})
	t.Logf("kill -9 took %s; replica parked %s after it returned; first failed heartbeat probed %s after (seq %d, error %q); first frozen heartbeat %s after",
		killed.Sub(t0).Round(time.Microsecond), h.parkedAt().Sub(killed).Round(time.Microsecond),
		fail.e.Time.Sub(killed).Round(time.Microsecond), fail.hb.Seq, fail.hb.Primary.Error, frozen.e.Time.Sub(killed).Round(time.Microsecond))
	ri := rep.Info()
	if !ri.Parked() || ri.MasterHost != "127.0.0.1" || ri.MasterPort != 1 {
		t.Fatalf("replica not parked: master %s:%d", ri.MasterHost, ri.MasterPort)
	}
	if ri.Keys != 100 {
		t.Fatalf("replica has %d keys, want 100", ri.Keys)
	}
	if n := h.counter(h.a.m.freezes.WithLabelValues(reasonPrimaryGone)); n != 1 {
		t.Fatalf("freezes{primary_gone} = %v (all: %v)", n, h.freezes())
	}
	if n := h.counter(h.a.m.watchBreaks.WithLabelValues(verdictGone)); n != 1 {
		t.Fatalf("watch breaks{gone} = %v", n)
	}
	// Heartbeats keep coming, frozen, while the primary is gone; never unparked.
	last, _ := h.waitBeat(10*time.Second, fi+10, "ten more heartbeats", func(beat) bool { return true })
	if !last.hb.Replica.Frozen || last.hb.Primary.OK || h.counter(h.a.m.unfreezes) != 0 {
		t.Fatalf("later heartbeat %+v", last.hb)
	}
}

// restartWipe kills the primary with -9 and restarts it empty at once: the restart-wipe
// case. It returns whether the replica still had every key after window.
func restartWipe(t *testing.T, s *redistest.Shard, keys int, window time.Duration) (kept bool, minKeys int64, killed time.Time) {
	t.Helper()
	rep := s.Replicas[0]
	if err := s.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	killed = time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := s.Primary.Restart(ctx, true); err != nil {
		t.Fatal(err)
	}
	minKeys = int64(keys)
	deadline := time.Now().Add(window)
	for time.Now().Before(deadline) {
		if ri, err := infoOK(rep); err == nil && ri.Keys < minKeys {
			minKeys = ri.Keys
		}
		time.Sleep(50 * time.Millisecond)
	}
	return minKeys == int64(keys), minKeys, killed
}

func TestRestartWipeGuard(t *testing.T) {
	const keys, iterations = 200, 5
	for it := 1; it <= iterations; it++ {
		t.Run(fmt.Sprint("iteration-", it), func(t *testing.T) {
			s := redistest.StartShard(t, fmt.Sprint("wipe", it), 1, [2]string{"repl-diskless-sync-delay", "0"})
			rep := s.Replicas[0]
			fill(t, s, keys)
			h := startAgent(t, testConfig("shard-1", rep.Addr(), s.Primary.Addr()), nil)
			i := h.waitHealthy()
			oldRun := s.Primary.Info().RunID

			kept, minKeys, killed := restartWipe(t, s, keys, 3*time.Second)
			if !kept {
				t.Fatalf("the replica lost data: %d of %d keys at the worst moment", minKeys, keys)
			}
			ri := rep.Info()
			if !ri.Parked() || ri.Keys != keys {
				t.Fatalf("replica parked=%v with %d keys", ri.Parked(), ri.Keys)
			}
			b, _ := h.waitBeat(10*time.Second, i, "PRIMARY_RESTARTED", func(b beat) bool { return b.hb.Has(events.FlagPrimaryRestarted) })
			if b.hb.Primary.RunID == oldRun || b.hb.Primary.RunID != s.Primary.Info().RunID {
				t.Fatalf("restarted flag with run id %s (old %s)", b.hb.Primary.RunID, oldRun)
			}
			r, _ := h.waitBeat(10*time.Second, i, "PRIMARY_DATA_REGRESSED", func(b beat) bool { return b.hb.Has(events.FlagPrimaryDataRegressed) })
			if r.hb.Primary.Keys != 0 || r.hb.Replica.Keys != keys || !r.hb.Replica.Frozen || !r.hb.Has(events.FlagReplicationFrozen) {
				t.Fatalf("regressed heartbeat %+v", r.hb)
			}
			// The flag stays while the condition holds, and the replica stays parked.
			last, _ := h.waitBeat(10*time.Second, len(h.beats()), "a later heartbeat", func(beat) bool { return true })
			if !last.hb.Has(events.FlagPrimaryDataRegressed) || !last.hb.Replica.Frozen || last.hb.Has(events.FlagPrimaryRestarted) {
				t.Fatalf("later heartbeat flags %v frozen %v", last.hb.Flags, last.hb.Replica.Frozen)
			}
			if h.counter(h.a.m.unfreezes) != 0 {
				t.Fatal("unparked towards an empty primary")
			}
			t.Logf("iteration %d: replica kept %d/%d keys; parked by %v %s after kill -9 returned", it, minKeys, keys,
				parkReasons(h), h.parkedAt().Sub(killed).Round(time.Microsecond))
		})
	}
}

func parkReasons(h *harness) map[string]float64 {
	out := map[string]float64{}
	for _, r := range []string{reasonPrimaryGone, reasonPrimaryRestarted, reasonLinkDown, reasonRegressed} {
		if n := h.counter(h.a.m.freezes.WithLabelValues(r)); n > 0 {
			out[r] = n
		}
	}
	return out
}

// TestRestartWipeWithoutAgent is the control: the same kill -9 and empty restart with
// no agent. Redis's replica reconnects and full-resyncs from the empty primary.
func TestRestartWipeWithoutAgent(t *testing.T) {
	const keys, iterations = 200, 3
	wiped := 0
	for it := 1; it <= iterations; it++ {
		s := redistest.StartShard(t, fmt.Sprint("ctl", it), 1, [2]string{"repl-diskless-sync-delay", "0"})
		fill(t, s, keys)
		kept, minKeys, _ := restartWipe(t, s, keys, 3*time.Second)
		if !kept {
			wiped++
		}
		t.Logf("without agent, iteration %d: replica down to %d/%d keys", it, minKeys, keys)
	}
	t.Logf("without the agent the replica was wiped in %d of %d runs", wiped, iterations)
	if wiped == 0 {
		t.Fatalf("the control never wiped the replica: the guard test proves nothing on this setup")
	}
}

func TestPauseShorterThanReplTimeoutDoesNotFreeze(t *testing.T) {
	s := redistest.StartShard(t, "pause", 1)
	rep := s.Replicas[0]
	fill(t, s, 20)
	h := startAgent(t, testConfig("shard-1", rep.Addr(), s.Primary.Addr()), nil)
	i := h.waitHealthy()
	if err := s.Primary.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = s.Primary.Resume()
		}
	}()
	b, fi := h.waitBeat(10*time.Second, i, "failed probe while paused", func(b beat) bool { return !b.hb.Primary.OK })
	// Probe failures for two seconds (repl-timeout is 5 s): the replica's link stays up.
	redistest.WaitFor(t, 20*time.Second, "two seconds of failed probes", func() bool {
		bs := h.beats()
		return len(bs) > 0 && bs[len(bs)-1].e.Time.Sub(b.e.Time) >= 2*time.Second
	})
	if err := s.Primary.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	ok, _ := h.waitBeat(10*time.Second, fi, "healthy again", func(b beat) bool { return b.hb.Primary.OK && b.hb.Replica.LinkUp })
	failed := 0
	for _, x := range h.beats()[fi:] {
		if x.hb.Replica.Frozen || x.hb.Has(events.FlagReplicationFrozen) {
			t.Fatalf("frozen during a short pause: %+v", x.hb)
		}
		if !x.hb.Primary.OK {
			failed++
			if x.hb.Primary.Error == "" {
				t.Fatalf("failed probe without error: %+v", x.hb.Primary)
			}
		}
	}
	if h.freezes() != 0 || h.a.Frozen() || rep.Info().Parked() {
		t.Fatal("the replica was parked for a pause shorter than repl-timeout")
	}
	if h.counter(h.a.m.probes.WithLabelValues(targetPrimary, resultTimeout)) == 0 {
		t.Fatal("no probe timeouts counted")
	}
	t.Logf("%d failed heartbeats while paused; first %q; healthy again at seq %d", failed, b.hb.Primary.Error, ok.hb.Seq)
}

func TestPauseLongerThanReplTimeoutFreezesThenUnfreezesWithPartialResync(t *testing.T) {
	s := redistest.StartShard(t, "longpause", 1)
	rep := s.Replicas[0]
	fill(t, s, 100)
	h := startAgent(t, testConfig("shard-1", rep.Addr(), s.Primary.Addr()), nil)
	i := h.waitHealthy()
	before := syncStats(t, s.Primary)
	if err := s.Primary.Pause(); err != nil {
		t.Fatal(err)
	}
	resumed := false
	defer func() {
		if !resumed {
			_ = s.Primary.Resume()
		}
	}()
	// repl-timeout is 5 s: the replica drops its link, the agent parks it.
	f, fi := h.waitBeat(30*time.Second, i, "frozen after the replica's link timed out", func(b beat) bool { return b.hb.Replica.Frozen })
	if f.hb.Primary.OK || !f.hb.Has(events.FlagReplicationFrozen) {
		t.Fatalf("frozen heartbeat %+v", f.hb)
	}
	if n := h.counter(h.a.m.freezes.WithLabelValues(reasonLinkDown)); n != 1 {
		t.Fatalf("freezes{link_down} = %v, all %v", n, parkReasons(h))
	}
	if !rep.Info().Parked() {
		t.Fatal("replica INFO does not show the park address")
	}
	if err := s.Primary.Resume(); err != nil {
		t.Fatal(err)
	}
	resumed = true
	u, _ := h.waitBeat(30*time.Second, fi, "unfrozen and linked", func(b beat) bool {
		return !b.hb.Replica.Frozen && b.hb.Replica.LinkUp && b.hb.Primary.OK
	})
	redistest.WaitFor(t, 20*time.Second, "resync verified", func() bool {
		return h.counter(h.a.m.resyncs.WithLabelValues("partial"))+h.counter(h.a.m.resyncs.WithLabelValues("full")) > 0
	})
	after := syncStats(t, s.Primary)
	if h.counter(h.a.m.resyncs.WithLabelValues("partial")) != 1 || after.full != before.full || after.partial <= before.partial {
		t.Fatalf("not a partial resync: sync_full %d -> %d, sync_partial_ok %d -> %d, agent resyncs partial=%v full=%v",
			before.full, after.full, before.partial, after.partial,
			h.counter(h.a.m.resyncs.WithLabelValues("partial")), h.counter(h.a.m.resyncs.WithLabelValues("full")))
	}
	if h.counter(h.a.m.unfreezes) != 1 {
		t.Fatalf("unfreezes = %v", h.counter(h.a.m.unfreezes))
	}
	ri := rep.Info()
	if ri.Parked() || ri.MasterAddr() != s.Primary.Addr() || ri.Keys != 100 {
		t.Fatalf("replica after unpark: follows %s, %d keys", ri.MasterAddr(), ri.Keys)
	}
	// Replication works again.
	if err := s.Primary.Client().Set(context.Background(), "after", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 10*time.Second, "write replicated after the unpark", func() bool { return rep.Info().Keys == 101 })
	t.Logf("parked %s after the pause began; unparked at seq %d; primary sync_partial_ok %d -> %d, sync_full %d",
		f.e.Time.Sub(h.beats()[i].e.Time).Round(time.Millisecond), u.hb.Seq, before.partial, after.partial, after.full)
}

type syncCount struct{ full, partial int64 }

func syncStats(t *testing.T, n *redistest.Node) syncCount {
	t.Helper()
	nc := newNodeClient(n.Addr(), 1, 2*time.Second)
	defer nc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	full, partial, ok := syncCounters(ctx, nc)
	if !ok {
		t.Fatal("cannot read sync counters")
	}
	return syncCount{full, partial}
}

func TestPrimaryReportingReplicaRole(t *testing.T) {
	s := redistest.StartShard(t, "role", 1)
	rep := s.Replicas[0]
	h := startAgent(t, testConfig("shard-1", rep.Addr(), s.Primary.Addr()), nil)
	i := h.waitHealthy()
	port, err := redisproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	pc := s.Primary.Client()
	if err := pc.SlaveOf(context.Background(), "127.0.0.1", fmt.Sprint(port)).Err(); err != nil {
		t.Fatal(err)
	}
	b, _ := h.waitBeat(10*time.Second, i, "PRIMARY_ROLE_CHANGED", func(b beat) bool { return b.hb.Has(events.FlagPrimaryRoleChanged) })
	if b.hb.Primary.Role != "slave" {
		t.Fatalf("role %q", b.hb.Primary.Role)
	}
	if err := pc.SlaveOf(context.Background(), "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	h.waitBeat(10*time.Second, len(h.beats()), "flag cleared", func(b beat) bool {
		return b.hb.Primary.OK && !b.hb.Has(events.FlagPrimaryRoleChanged)
	})
	if h.counter(h.a.m.flagsRaised.WithLabelValues(string(events.FlagPrimaryRoleChanged))) != 1 {
		t.Fatal("flag raise not counted once")
	}
}

func TestConfigDrift(t *testing.T) {
	s := redistest.StartShard(t, "drift", 1, [2]string{"min-replicas-to-write", "1"})
	rep := s.Replicas[0]
	cfg := testConfig("shard-1", rep.Addr(), s.Primary.Addr())
	cfg.Desired = "min-replicas-to-write=1,appendonly=no,maxmemory=0"
	cfg.DriftEvery = 3
	h := startAgent(t, cfg, nil)
	i := h.waitHealthy() // healthy means no flags: no drift at start
	if err := s.Primary.Client().ConfigSet(context.Background(), "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}
	b, di := h.waitBeat(10*time.Second, i, "CONFIG_DRIFT", func(b beat) bool { return b.hb.Has(events.FlagConfigDrift) })
	want := events.ConfigDrift{Node: s.Primary.Addr(), Param: "min-replicas-to-write", Want: "1", Got: "0"}
	if len(b.hb.Drift) != 1 || b.hb.Drift[0] != want {
		t.Fatalf("drift %+v, want [%+v]", b.hb.Drift, want)
	}
	// Reported in every heartbeat until fixed, and checked again every 3 probes.
	if err := s.Primary.Client().ConfigSet(context.Background(), "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	c, _ := h.waitBeat(10*time.Second, di, "drift cleared", func(b beat) bool { return !b.hb.Has(events.FlagConfigDrift) })
	if c.hb.Seq-b.hb.Seq > 8 {
		t.Fatalf("drift cleared %d probes later; checks run every 3", c.hb.Seq-b.hb.Seq)
	}
	// The replica is checked too.
	if err := rep.Client().ConfigSet(context.Background(), "maxmemory", "100mb").Err(); err != nil {
		t.Fatal(err)
	}
	r, _ := h.waitBeat(10*time.Second, len(h.beats()), "replica drift", func(b beat) bool { return b.hb.Has(events.FlagConfigDrift) })
	if len(r.hb.Drift) != 1 || r.hb.Drift[0].Node != rep.Addr() || r.hb.Drift[0].Got != "104857600" {
		t.Fatalf("replica drift %+v", r.hb.Drift)
	}
}

func TestStreamOutageBuffersAndPublishesInOrder(t *testing.T) {
	s := redistest.StartShard(t, "outage", 1)
	rep := s.Replicas[0]
	cfg := testConfig("shard-1", rep.Addr(), s.Primary.Addr())
	cfg.Interval, cfg.ProbeTimeout = 40*time.Millisecond, 35*time.Millisecond
	cfg.BufferSize = 10
	h := startAgent(t, cfg, nil)
	h.waitBeat(10*time.Second, 0, "first heartbeat", func(beat) bool { return true })
	h.pub.down.Store(true)
	redistest.WaitFor(t, 20*time.Second, "heartbeats dropped", func() bool { return h.counter(h.a.m.dropped) >= 10 })
	if n := h.a.Buffered(); n > 10 {
		t.Fatalf("%d buffered, bound 10", n)
	}
	during := len(h.beats())
	h.pub.down.Store(false)
	h.waitBeat(10*time.Second, during+15, "publishing resumed", func(beat) bool { return true })
	bs := h.beats()
	missing := 0
	for j := 1; j < len(bs); j++ {
		d := bs[j].hb.Seq - bs[j-1].hb.Seq
		if d < 1 {
			t.Fatalf("out of order: seq %d after %d", bs[j].hb.Seq, bs[j-1].hb.Seq)
		}
		missing += int(d - 1)
	}
	dropped := int(h.counter(h.a.m.dropped))
	if missing != dropped {
		t.Fatalf("%d seqs missing from the stream, %d counted as dropped", missing, dropped)
	}
	if h.counter(h.a.m.streamErrors) == 0 {
		t.Fatal("stream errors not counted")
	}
	t.Logf("outage: %d dropped (oldest first), the rest published in order; %d stream errors", dropped, int(h.counter(h.a.m.streamErrors)))
}

func TestNeverFreezesWhenNotAllowed(t *testing.T) {
	cases := []struct {
		name   string
		freeze bool
		topo   func(s *redistest.Shard) Topology
	}{
		{"freeze disabled", false, func(*redistest.Shard) Topology { return nil }},
		{"topology names the replica as primary", true, func(s *redistest.Shard) Topology {
			return topology.Static(topology.Map{Shards: []topology.Shard{{ID: "shard-1", Epoch: 2,
				Primary: s.Replicas[0].Addr(), Replicas: []string{s.Primary.Addr()}}}})
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := redistest.StartShard(t, "nofreeze", 1)
			rep := s.Replicas[0]
			fill(t, s, 10)
			cfg := testConfig("shard-1", rep.Addr(), "")
			if c.topo(s) == nil {
				cfg.Primary = s.Primary.Addr()
			}
			cfg.Freeze = c.freeze
			h := startAgent(t, cfg, c.topo(s))
			i := 0
			if c.freeze {
				h.waitBeat(10*time.Second, 0, "heartbeat", func(b beat) bool { return b.hb.Replica.Reachable })
			} else {
				i = h.waitHealthy()
			}
			if err := s.Primary.Kill(); err != nil {
				t.Fatal(err)
			}
			// The replica's link drops; over a second of heartbeats, nothing parks it.
			b, bi := h.waitBeat(20*time.Second, i, "replica link down", func(b beat) bool { return b.hb.Replica.Reachable && !b.hb.Replica.LinkUp })
			h.waitBeat(20*time.Second, bi, "a second later", func(x beat) bool { return x.e.Time.Sub(b.e.Time) > time.Second })
			for _, x := range h.beats() {
				if x.hb.Replica.Frozen {
					t.Fatalf("frozen: %+v", x.hb)
				}
			}
			if rep.Info().Parked() || h.freezes() != 0 {
				t.Fatal("the replica was parked")
			}
		})
	}
}

// A replica that drops its link on its own while the primary stays healthy (here the
// chaos "resync" fault: REPLICAOF NO ONE then back, a full resync from a healthy
// primary) is not parked: the primary is verifiably the same incarnation and a resync
// from it loses nothing.
func TestReplicaSideResyncIsNotFrozen(t *testing.T) {
	s := redistest.StartShard(t, "resync", 1)
	rep := s.Replicas[0]
	fill(t, s, 50)
	h := startAgent(t, testConfig("shard-1", rep.Addr(), s.Primary.Addr()), nil)
	i := h.waitHealthy()
	ri := rep.Info()
	rc := rep.Client()
	ctx := context.Background()
	// Hold the full sync for two seconds so that the agent sees the link down.
	if err := s.Primary.Client().ConfigSet(ctx, "repl-diskless-sync-delay", "2").Err(); err != nil {
		t.Fatal(err)
	}
	pipe := rc.TxPipeline()
	pipe.SlaveOf(ctx, "NO", "ONE")
	pipe.SlaveOf(ctx, ri.MasterHost, fmt.Sprint(ri.MasterPort))
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	_, di := h.waitBeat(20*time.Second, i, "link down during the resync", func(b beat) bool {
		return b.hb.Replica.Reachable && !b.hb.Replica.LinkUp
	})
	h.waitBeat(20*time.Second, di, "link back up after the resync", func(b beat) bool {
		return b.hb.Replica.LinkUp && b.hb.Primary.OK
	})
	if h.freezes() != 0 {
		t.Fatalf("parked a replica resyncing from a healthy primary: %v", parkReasons(h))
	}
	for _, x := range h.beats()[i:] {
		if x.hb.Has(events.FlagPrimaryDataRegressed) {
			t.Fatalf("regressed flagged for a replica-side resync: %+v", x.hb)
		}
	}
	if rep.Info().Keys != 50 {
		t.Fatal("keys lost")
	}
}

// An agent that starts beside a replica parked earlier (by a previous run, or by hand)
// adopts the park and unparks it once a partial resync is certain.
func TestAdoptsParkedReplicaAndUnparks(t *testing.T) {
	s := redistest.StartShard(t, "adopt", 1)
	rep := s.Replicas[0]
	fill(t, s, 30)
	before := syncStats(t, s.Primary)
	if err := rep.Client().SlaveOf(context.Background(), redisinfo.DefaultPark.Host, fmt.Sprint(redisinfo.DefaultPark.Port)).Err(); err != nil {
		t.Fatal(err)
	}
	h := startAgent(t, testConfig("shard-1", rep.Addr(), s.Primary.Addr()), nil)
	f, fi := h.waitBeat(10*time.Second, 0, "frozen", func(b beat) bool { return b.hb.Replica.Frozen })
	if !f.hb.Has(events.FlagReplicationFrozen) {
		t.Fatalf("flags %v", f.hb.Flags)
	}
	h.waitBeat(20*time.Second, fi, "unparked and linked", func(b beat) bool { return !b.hb.Replica.Frozen && b.hb.Replica.LinkUp })
	redistest.WaitFor(t, 10*time.Second, "resync verified", func() bool { return h.counter(h.a.m.resyncs.WithLabelValues("partial")) == 1 })
	after := syncStats(t, s.Primary)
	if after.full != before.full || rep.Info().Keys != 30 {
		t.Fatalf("sync_full %d -> %d, keys %d", before.full, after.full, rep.Info().Keys)
	}
}

// A replica that restarts empty and full-syncs from its healthy primary is not parked:
// it has nothing to protect, and parking it would keep it from syncing for good.
func TestReplicaRestartIsNotFrozen(t *testing.T) {
	s := redistest.StartShard(t, "represtart", 1, [2]string{"repl-diskless-sync-delay", "1"})
	rep := s.Replicas[0]
	fill(t, s, 40)
	h := startAgent(t, testConfig("shard-1", rep.Addr(), s.Primary.Addr()), nil)
	i := h.waitHealthy()
	if err := rep.Kill(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := rep.Restart(ctx, true); err != nil {
		t.Fatal(err)
	}
	h.waitBeat(20*time.Second, i, "replica back and synced", func(b beat) bool {
		return b.hb.Replica.Reachable && b.hb.Replica.LinkUp && b.hb.Replica.Keys == 40
	})
	if h.freezes() != 0 || rep.Info().Parked() {
		t.Fatalf("a restarted replica was parked: %v", parkReasons(h))
	}
}

// When something accepts connections at the park address, the agent does not park
// (a replica parked there could resync from whatever listens): it says so in its
// heartbeats (PARK_GUARD_OFF), its log and its metrics, and the guard comes back once
// the address refuses connections again.
func TestParkGuardOffWhenParkAddressAnswers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() { // accept and hold, as a stray service on that port would
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			t.Cleanup(func() { c.Close() })
		}
	}()
	s := redistest.StartShard(t, "parkguard", 1)
	rep := s.Replicas[0]
	fill(t, s, 20)
	cfg := testConfig("shard-1", rep.Addr(), s.Primary.Addr())
	cfg.ParkAddr, cfg.DriftEvery = ln.Addr().String(), 5
	h := startAgent(t, cfg, nil)
	_, i := h.waitBeat(10*time.Second, 0, "PARK_GUARD_OFF", func(b beat) bool { return b.hb.Has(events.FlagParkGuardOff) && b.hb.Primary.OK })
	if err := s.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	h.waitBeat(10*time.Second, i, "failed heartbeat with the guard off", func(b beat) bool {
		return !b.hb.Primary.OK && b.hb.Has(events.FlagParkGuardOff) && !b.hb.Replica.Frozen
	})
	redistest.WaitFor(t, 5*time.Second, "skipped park logged", func() bool {
		return strings.Contains(h.logs.String(), "not parking") && strings.Contains(h.logs.String(), "park address is not safe")
	})
	if ri := rep.Info(); ri.Parked() || ri.MasterAddr() != s.Primary.Addr() || h.freezes() != 0 {
		t.Fatalf("replica parked with the park address answering: follows %s, freezes %v", ri.MasterAddr(), h.freezes())
	}
	if h.counter(h.a.m.parkAnswers) < 1 || h.counter(h.a.m.parkGuardOff) != 1 {
		t.Fatalf("agent_park_addr_answers_total %v, agent_park_guard_off %v", h.counter(h.a.m.parkAnswers), h.counter(h.a.m.parkGuardOff))
	}
	if !strings.Contains(h.logs.String(), `"level":"error"`) {
		t.Fatal("no error logged for the unsafe park address")
	}

	// The port is freed: the next check restores the guard and the agent parks.
	ln.Close()
	n := len(h.beats())
	h.waitBeat(10*time.Second, n, "guard back and replica parked", func(b beat) bool {
		return !b.hb.Has(events.FlagParkGuardOff) && b.hb.Replica.Frozen
	})
	if ri := rep.Info(); !ri.Parked() && !h.a.cfg.park.Holds(ri) {
		t.Fatalf("replica not parked after the guard came back: follows %s", ri.MasterAddr())
	}
}

// Without -shard the agent follows its node through the topology: heartbeats go to
// the shard that lists the node, stop while it is a spare (in no shard), and follow
// it to another shard.
func TestAgentWithoutShardFollowsMembership(t *testing.T) {
	s := redistest.StartShard(t, "member", 1)
	rep := s.Replicas[0]
	fill(t, s, 10)
	f := topology.Static(topology.Map{Shards: []topology.Shard{{ID: "shard-1", Epoch: 1, Primary: s.Primary.Addr(), Replicas: []string{rep.Addr()}}}})
	h := startAgent(t, testConfig("", rep.Addr(), ""), f)
	_, i := h.waitBeat(10*time.Second, 0, "heartbeat for shard-1", func(b beat) bool { return b.e.Shard == "shard-1" && b.hb.Primary.OK })

	// Replaced by a spare: the node leaves the shard.
	f.Apply(topology.Shard{ID: "shard-1", Epoch: 2, Primary: s.Primary.Addr()})
	redistest.WaitFor(t, 5*time.Second, "agent sees itself a spare", func() bool {
		ok, why := h.a.Ready()
		return ok && strings.Contains(why, "spare")
	})
	// Wait for several more probe cycles (not a fixed sleep), then count heartbeats.
	n, cycle := len(h.beats()), h.a.lastCycle.Load()
	seen := 0
	redistest.WaitFor(t, 5*time.Second, "five more probe cycles as a spare", func() bool {
		if c := h.a.lastCycle.Load(); c != cycle {
			cycle, seen = c, seen+1
		}
		return seen >= 5
	})
	if got := len(h.beats()); got > n+1 { // one may have been in flight
		t.Fatalf("a spare's agent published %d heartbeats", got-n)
	}
	// Attached to another shard.
	f.Apply(topology.Shard{ID: "shard-2", Epoch: 5, Primary: s.Primary.Addr(), Replicas: []string{rep.Addr()}})
	b, _ := h.waitBeat(10*time.Second, i, "heartbeat for shard-2", func(b beat) bool { return b.e.Shard == "shard-2" })
	if b.e.Epoch != 5 || !b.hb.Primary.OK {
		t.Fatalf("heartbeat after the move: epoch %d, %+v", b.e.Epoch, b.hb.Primary)
	}
	if !strings.Contains(h.logs.String(), "node membership changed") {
		t.Fatal("membership changes not logged")
	}
}
