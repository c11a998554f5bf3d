package alerter

import (
	"context"
	"os"
	"runtime"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heartline/heartline/services/alerter/detector"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/memstream"
	"github.com/heartline/heartline/shared/stream/natsstream"
	"github.com/heartline/heartline/shared/stream/natsstream/natstest"
)

// The fleet of the benchmarks: 10,000 shards, one agent each, one heartbeat a second.
const benchShards = 10_000

func benchHeartbeat(shard int, seq uint64, ok bool, at time.Time) events.Event {
	s := "shard-" + strconv.Itoa(shard)
	p := &events.Heartbeat{Seq: seq, AgentStart: t0, Interval: time.Second,
		Replica: events.ReplicaState{Addr: "10.1.0." + strconv.Itoa(shard%250) + ":6379", Reachable: true, Role: "slave",
			LinkUp: ok, Offset: int64(seq) * 1000, ReplID: "8c7f0b9e3a1d4c2b9e8f7a6b5c4d3e2f1a0b9c8d", Keys: 1000},
		Primary: events.PrimaryProbe{Addr: "10.0.0." + strconv.Itoa(shard%250) + ":6379", OK: ok, Role: "master",
			Latency: 300 * time.Microsecond, RunID: "1f2e3d4c5b6a79880f1e2d3c4b5a69788f9e0d1c", Offset: int64(seq) * 1000,
			ReplID: "8c7f0b9e3a1d4c2b9e8f7a6b5c4d3e2f1a0b9c8d", Keys: 1000, Replicas: 2, UptimeSec: 86400}}
	if !ok {
		p.Primary = events.PrimaryProbe{Addr: p.Primary.Addr, Error: "dial tcp: connect: connection refused", Latency: 100 * time.Microsecond}
	}
	e := events.New(events.KindHeartbeat, events.Source{Service: "agent", Instance: s + "-agent"}, s, p)
	e.Time = at
	return e
}

// BenchmarkDetectorObserve: one heartbeat through the pure state machine of one of
// 10,000 shards (round robin, one simulated second per 10,000 heartbeats). Reports the
// heap the 10,000 shards hold.
func BenchmarkDetectorObserve(b *testing.B) {
	cfg := detector.DefaultConfig()
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	shards := make([]*detector.Shard, benchShards)
	hbs := make([]detector.Heartbeat, benchShards)
	for i := range shards {
		shards[i] = detector.NewShard("shard-"+strconv.Itoa(i), cfg, nil)
		e := benchHeartbeat(i, 1, true, t0)
		hbs[i], _ = detector.FromEvent(e, t0)
		shards[i].Observe(t0, hbs[i])
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	heap := float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
	b.ReportAllocs()
	b.ResetTimer()
	now := t0
	for i := 0; i < b.N; i++ {
		s := i % benchShards
		if s == 0 {
			now = now.Add(time.Second)
		}
		h := hbs[s]
		p := *h.Payload
		p.Seq = uint64(i/benchShards) + 2
		h.Payload, h.Time = &p, now
		shards[s].Observe(now, h)
	}
	b.ReportMetric(heap, "heapMB/10k-shards")
	runtime.KeepAlive(shards)
}

// BenchmarkHandle: one heartbeat through the service's handler (strict decoding, the
// state machine, the kv and stream bookkeeping) for 10,000 shards on memkv, without a
// stream: the per-heartbeat cost that the state machine alone is compared to.
func BenchmarkHandle(b *testing.B) {
	srv := memstream.NewServer(memstream.Options{})
	cfg := DefaultConfig()
	cfg.Instance = "bench"
	svc, err := New(Options{Config: cfg, Consumer: srv.New(), Publisher: srv.New(), KV: memkv.New(),
		Log: logging.Test(nopWriter{}).Level(100), Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	ds := make([]stream.Delivery, benchShards)
	now := time.Now()
	for i := range ds {
		ds[i] = delivery(b, benchHeartbeat(i, 1, true, now))
		if err := svc.Handle(context.Background(), ds[i]); err != nil {
			b.Fatal(err)
		}
	}
	// Heartbeats 2..k, encoded ahead (the agents' cost is not the alerter's).
	rounds := b.N/benchShards + 1
	if rounds > 20 {
		rounds = 20
	}
	pre := make([][]stream.Delivery, rounds)
	for r := range pre {
		pre[r] = make([]stream.Delivery, benchShards)
		for i := range pre[r] {
			pre[r][i] = delivery(b, benchHeartbeat(i, uint64(r+2), true, now))
		}
	}
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r := (i / benchShards) % rounds
		if r == 0 && i >= benchShards {
			b.StopTimer() // the pre-encoded rounds are used up: the next ones are duplicates
			for j := range pre {
				for k := range pre[j] {
					pre[j][k] = delivery(b, benchHeartbeat(k, uint64((i/benchShards)+j+2), true, now))
				}
			}
			b.StartTimer()
		}
		if err := svc.Handle(context.Background(), pre[r][i%benchShards]); err != nil {
			b.Fatal(err)
		}
	}
}

type nopWriter struct{}

func (nopWriter) Write(p []byte) (int, error) { return len(p), nil }

// loadResult is what one sustained run measured.
type loadResult struct {
	Backend          string
	Seconds          float64
	Published        int64
	Handled          int64
	PublishErrors    int64
	DelayP50         time.Duration // heartbeat accepted by the stream -> handled
	DelayP99         time.Duration
	DelayMax         time.Duration
	Drain            time.Duration // last heartbeat published -> every heartbeat handled
	LatencyP50       time.Duration // deciding heartbeat accepted -> alert accepted
	LatencyP99       time.Duration
	LatencyMax       time.Duration
	Opened, Resolved int
	Killed           int
	AgentMaxGap      time.Duration
	HeapMB           float64 // live heap after the run (alerter, stream clients, simulated agents)
	RSSMB, PeakRSSMB float64 // the whole test process (with the embedded NATS server)
}

func pct(ds []time.Duration, p float64) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	sort.Slice(ds, func(i, j int) bool { return ds[i] < ds[j] })
	i := int(float64(len(ds)-1) * p)
	return ds[i]
}

func procStatusMB(field string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field+":") {
			f := strings.Fields(l)
			if len(f) >= 2 {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

// runLoad runs one alerter on backend and store, fed by simulated agents for shards
// shards at one heartbeat a second each for dur. At 30% of the run 1% of the shards'
// primaries die (their heartbeats fail) and at 65% they come back: each must open and
// resolve exactly one PRIMARY_DOWN.
func runLoad(tb testing.TB, name string, backend stream.Backend, store kv.Store, shards int, dur time.Duration) loadResult {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cfg := DefaultConfig()
	cfg.Instance = "bench-" + name
	svc, err := New(Options{Config: cfg, Consumer: backend, Publisher: backend, KV: store,
		Log: logging.Test(nopWriter{}).Level(100), Registry: prometheus.NewRegistry(), StartOldest: true})
	if err != nil {
		tb.Fatal(err)
	}
	var delayMu sync.Mutex
	delays := make([]time.Duration, 0, shards*int(dur/time.Second+2))
	var handled atomic.Int64
	consumeDone := make(chan error, 1)
	go func() {
		consumeDone <- backend.Consume(ctx, stream.Subscription{Topic: events.TopicHeartbeats, Group: "alerter", Instance: cfg.Instance, Start: stream.StartOldest},
			func(ctx context.Context, d stream.Delivery) error {
				err := svc.Handle(ctx, d)
				if err == nil {
					age := time.Since(d.Published)
					delayMu.Lock()
					delays = append(delays, age)
					delayMu.Unlock()
					handled.Add(1)
				}
				return err
			})
	}()
	go func() {
		t := time.NewTicker(cfg.Tick)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				svc.Tick(ctx)
			}
		}
	}()
	// The alerts, as lazarus would read them.
	var alertMu sync.Mutex
	var lat []time.Duration
	opened, resolved, codes := map[string]int{}, map[string]int{}, map[string]int{}
	go func() {
		_ = backend.Consume(ctx, stream.Subscription{Topic: events.TopicAlerts, Group: "bench-reader", Start: stream.StartOldest},
			func(_ context.Context, d stream.Delivery) error {
				e, err := events.Decode(d.Data)
				if err != nil {
					return stream.Permanent(err)
				}
				a := e.Payload.(*events.Alert)
				alertMu.Lock()
				defer alertMu.Unlock()
				codes[string(e.Kind)+" "+string(a.Code)]++
				switch e.Kind {
				case events.KindAlertOpened:
					opened[e.Shard]++
					lat = append(lat, d.Published.Sub(a.LastHeartbeatAt))
				case events.KindAlertResolved:
					resolved[e.Shard]++
					lat = append(lat, d.Published.Sub(a.LastHeartbeatAt))
				}
				return nil
			})
	}()

	killed := shards / 100
	start := time.Now()
	ag := simulateAgents(ctx, backend, shards, dur, start, 0, true)
	published, pubErrs := ag.Published, ag.Errors
	lastPub := time.Now()
	deadline := time.Now().Add(2 * time.Minute)
	for handled.Load() < published && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	drain := time.Since(lastPub)
	deadline = time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		alertMu.Lock()
		n := len(resolved)
		alertMu.Unlock()
		if n >= killed {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	elapsed := time.Since(start)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	r := loadResult{Backend: name, Seconds: elapsed.Seconds(), Published: published, Handled: handled.Load(),
		PublishErrors: pubErrs, AgentMaxGap: ag.MaxGap, Drain: drain, Killed: killed, HeapMB: float64(ms.HeapAlloc) / (1 << 20),
		RSSMB: procStatusMB("VmRSS"), PeakRSSMB: procStatusMB("VmHWM")}
	delayMu.Lock()
	r.DelayP50, r.DelayP99, r.DelayMax = pct(delays, .5), pct(delays, .99), pct(delays, 1)
	delayMu.Unlock()
	alertMu.Lock()
	r.LatencyP50, r.LatencyP99, r.LatencyMax = pct(lat, .5), pct(lat, .99), pct(lat, 1)
	for _, n := range opened {
		r.Opened += n
	}
	for _, n := range resolved {
		r.Resolved += n
	}
	alertMu.Unlock()
	cancel()
	<-consumeDone
	alertMu.Lock()
	lostOK := ag.MaxGap >= cfg.Detector.AgentLostAfter
	if codes["alert.opened PRIMARY_DOWN"] != killed || codes["alert.resolved PRIMARY_DOWN"] != killed ||
		(codes["alert.opened AGENT_LOST"] > 0 && !lostOK) {
		tb.Errorf("%s: alerts %v for %d dead primaries (agents' longest silence %s)", name, codes, killed, ag.MaxGap)
	}
	alertMu.Unlock()
	return r
}

// simulateAgents publishes one heartbeat a second for each of shards shards during dur
// from start (sequence numbers after seqBase). With failures, the primaries of 1% of the
// shards (those numbered 7 mod 100) are down from 30% to 65% of the run.
// agentStats is what the simulated agents did.
type agentStats struct {
	Published, Errors int64
	// MaxGap is the longest time between two heartbeats of one shard: above
	// agent-lost-after, the simulator itself (starved of CPU) made agents silent.
	MaxGap time.Duration
}

func simulateAgents(ctx context.Context, backend stream.Publisher, shards int, dur time.Duration, start time.Time, seqBase uint64, failures bool) agentStats {
	// Simulated agents: a few workers own a slice of the shards each, spread their
	// shards' heartbeats evenly over every second and publish what is due every 10 ms
	// as one batch (agents are separate processes; one batch per wake-up keeps the
	// simulation from being the bottleneck on two cores).
	dead := func(shard int, since time.Duration) bool {
		return failures && shard%100 == 7 && since >= dur*30/100 && since < dur*65/100
	}
	const workers = 8
	var published, pubErrs, maxGap atomic.Int64
	last := make([]time.Time, shards) // each worker writes only its own shards
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var mine []int
			for s := w; s < shards; s += workers {
				mine = append(mine, s)
			}
			n := len(mine)
			next, round := 0, 0
			due := func() time.Duration {
				return time.Duration(round)*time.Second + time.Duration(next)*time.Second/time.Duration(n)
			}
			for due() < dur && ctx.Err() == nil {
				elapsed := time.Since(start)
				var batch []stream.Message
				for due() <= elapsed && due() < dur {
					s := mine[next]
					e := benchHeartbeat(s, seqBase+uint64(round+1), !dead(s, elapsed), time.Now().UTC())
					b, err := events.Encode(e)
					if err != nil {
						panic(err)
					}
					batch = append(batch, stream.Message{Key: e.Shard, ID: e.ID, Data: b})
					if next++; next == n {
						next, round = 0, round+1
					}
				}
				for len(batch) > 0 {
					chunk := batch[:min(len(batch), 200)]
					batch = batch[len(chunk):]
					// Bounded: a publication that hangs must not stall the run.
					pctx, pcancel := context.WithTimeout(ctx, 10*time.Second)
					if err := backend.PublishBatch(pctx, events.TopicHeartbeats, chunk); err != nil {
						pubErrs.Add(int64(len(chunk)))
					} else {
						published.Add(int64(len(chunk)))
						now := time.Now()
						for _, m := range chunk {
							i, _ := strconv.Atoi(strings.TrimPrefix(m.Key, "shard-"))
							if !last[i].IsZero() {
								if g := int64(now.Sub(last[i])); g > maxGap.Load() {
									maxGap.Store(g) // racy max across workers: good enough for a report
								}
							}
							last[i] = now
						}
					}
					pcancel()
				}
				time.Sleep(10 * time.Millisecond)
			}
		}()
	}
	wg.Wait()
	return agentStats{Published: published.Load(), Errors: pubErrs.Load(), MaxGap: time.Duration(maxGap.Load())}
}

func benchDuration() time.Duration {
	if s := os.Getenv("ALERTER_BENCH_SECONDS"); s != "" {
		if n, err := strconv.Atoi(s); err == nil && n > 0 {
			return time.Duration(n) * time.Second
		}
	}
	return 20 * time.Second
}

func report(b *testing.B, r loadResult) {
	b.ReportMetric(float64(r.Handled)/r.Seconds, "heartbeats/s")
	b.ReportMetric(float64(r.DelayP99.Microseconds())/1000, "delay-p99-ms")
	b.ReportMetric(float64(r.LatencyP99.Microseconds())/1000, "decision-p99-ms")
	b.ReportMetric(r.HeapMB, "heap-MB")
	b.ReportMetric(r.PeakRSSMB, "peak-rss-MB")
	b.Logf("\n| backend | shards | run s | heartbeats handled | publish errors (agents' longest gap) | delay p50 / p99 / max | drain after last publish | decision latency p50 / p99 / max | opened / resolved (of %d) | heap MB | RSS MB (peak) |\n"+
		"| %s | %d | %.1f | %d (%.0f/s) | %d (%s) | %s / %s / %s | %s | %s / %s / %s | %d / %d | %.1f | %.0f (%.0f) |",
		r.Killed, r.Backend, benchShards, r.Seconds, r.Handled, float64(r.Handled)/r.Seconds, r.PublishErrors, r.AgentMaxGap.Round(time.Millisecond),
		r.DelayP50.Round(time.Microsecond*100), r.DelayP99.Round(time.Microsecond*100), r.DelayMax.Round(time.Millisecond),
		r.Drain.Round(time.Millisecond), r.LatencyP50.Round(time.Microsecond*100), r.LatencyP99.Round(time.Microsecond*100),
		r.LatencyMax.Round(time.Millisecond), r.Opened, r.Resolved, r.HeapMB, r.RSSMB, r.PeakRSSMB)
}

// BenchmarkSustained10kShards runs one alerter fed by simulated agents for 10,000
// shards at one heartbeat a second each (ALERTER_BENCH_SECONDS, default 20), through
// the in-memory stream and through an embedded NATS server with JetStream (memkv, and
// NATS KV for the incidents). Run it once per backend:
//
//	go test -run '^$' -bench Sustained -benchtime 1x ./services/alerter
func BenchmarkSustained10kShards(b *testing.B) {
	dur := benchDuration()
	b.Run("memstream", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			srv := memstream.NewServer(memstream.Options{Partitions: 16})
			c := srv.New()
			report(b, runLoad(b, "memstream", c, memkv.New(), benchShards, dur))
			_ = c.Close()
		}
	})
	b.Run("nats", func(b *testing.B) {
		for i := 0; i < b.N; i++ {
			e := natstest.Start(b)
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			nb, err := natsstream.New(ctx, natsstream.Options{URL: e.ClientURL(), Name: "alerter-bench"})
			cancel()
			if err != nil {
				b.Fatal(err)
			}
			report(b, runLoad(b, "embedded NATS", nb, nb.KV(), benchShards, dur))
			_ = nb.Close()
		}
	})
}

// BenchmarkDecodeHeartbeat: events.Decode of one heartbeat, the part of the handler's
// cost that is not the alerter's own (compare with BenchmarkHandle and
// BenchmarkDetectorObserve).
func BenchmarkDecodeHeartbeat(b *testing.B) {
	data, err := events.Encode(benchHeartbeat(42, 7, true, time.Now()))
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for i := 0; i < b.N; i++ {
		if _, err := events.Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}
