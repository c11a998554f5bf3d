package natsstream_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/natsstream"
	"github.com/heartline/heartline/shared/stream/natsstream/natstest"
)

// Benchmarks: 1 KiB events, embedded nats-server with JetStream (file storage in a temp
// dir), raw bytes (no JSON). Each compares with plain core NATS publish/subscribe (no
// persistence, no acknowledgements, at most once) on the same server in the same run.
// Besides rates and latencies they report cpu_us/event: the CPU time (user + system,
// getrusage) of the whole test process, which holds the server, the publishers and the
// consumer, divided by the events. It does not depend on how loaded the machine is;
// 1e6 / cpu_us/event is the rate one fully used core would sustain.
//
//	go test -run '^$' -bench Throughput -benchtime 200000x ./stream/natsstream/
//	go test -run '^$' -bench Latency -benchtime 30000x ./stream/natsstream/

const (
	eventSize = 1024
	benchKeys = 256
	batchSize = 512
	// publishers is how many goroutines call Publish concurrently in the single-publish
	// benchmarks (a service publishing from its request handlers or per-shard loops).
	publishers = 64
)

// cpuTime is the CPU time the process used so far (user + system).
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	faults.Store(ru.Minflt)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

var faults atomic.Int64

// reportCPU reports the process's CPU time per event since start.
func reportCPU(b *testing.B, start time.Duration, events int) {
	f0 := faults.Load()
	defer func() { b.ReportMetric(float64(faults.Load()-f0)/float64(events), "faults/event") }()
	b.ReportMetric(float64(cpuTime()-start)/float64(time.Microsecond)/float64(events), "cpu_us/event")
}

// Results of the core NATS baselines, for the ratios the JetStream runs report.
var (
	coreRate         atomic.Uint64 // events/s
	coreP50, coreP99 atomic.Int64  // ns
)

func benchBackend(b *testing.B, url string) *natsstream.Backend {
	return benchBackendWith(b, natsstream.Options{URL: url})
}

func benchBackendWith(b *testing.B, o natsstream.Options) *natsstream.Backend {
	b.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	o.Log = zerolog.Nop()
	be, err := natsstream.New(ctx, o)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = be.Close() })
	return be
}

// payload is the body of every benchmark event (the first 16 bytes are overwritten
// with a timestamp in the latency benchmarks).
var payload = func() []byte {
	data := make([]byte, eventSize)
	for i := 16; i < len(data); i++ {
		data[i] = byte('a' + i%26)
	}
	return data
}()

func event(key string, seq int) stream.Message {
	return stream.Message{Key: key, ID: key + "-" + strconv.Itoa(seq), Data: append([]byte(nil), payload...)}
}

// consumeCounting starts a group on topic whose handler counts events (and records
// publish-to-handler latencies when lat is not nil); it returns once a probe arrived.
func consumeCounting(b *testing.B, be *natsstream.Backend, topic string, count *atomic.Int64, lat *latencies) {
	b.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	var once sync.Once
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = be.Consume(ctx, stream.Subscription{Topic: topic, Group: "bench"}, func(_ context.Context, d stream.Delivery) error {
			if d.Key == "probe" {
				once.Do(func() { close(ready) })
				return nil
			}
			if lat != nil {
				lat.add(time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(d.Data)))))
			}
			count.Add(1)
			return nil
		})
	}()
	b.Cleanup(func() { cancel(); <-done })
	for i := 0; ; i++ {
		if err := be.Publish(ctx, topic, stream.Message{Key: "probe", ID: fmt.Sprint("probe-", i), Data: []byte("p")}); err != nil {
			b.Fatal(err)
		}
		select {
		case <-ready:
			return
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func waitCount(b *testing.B, count *atomic.Int64, want int64) {
	b.Helper()
	deadline := time.Now().Add(5 * time.Minute)
	for count.Load() < want {
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d events handled after 5 minutes", count.Load(), want)
		}
		time.Sleep(time.Millisecond)
	}
}

// BenchmarkThroughput: sustained publish -> handler rate with batches of 512 events
// over 256 keys, two publishing goroutines.
func BenchmarkThroughput(b *testing.B) {
	srv := natstest.Start(b)
	b.Run("core-nats", func(b *testing.B) {
		nc, _ := nats.Connect(srv.ClientURL())
		defer nc.Close()
		sc, _ := nats.Connect(srv.ClientURL())
		defer sc.Close()
		var count atomic.Int64
		sub, err := sc.Subscribe("hl.bench.*", func(*nats.Msg) { count.Add(1) })
		if err != nil {
			b.Fatal(err)
		}
		_ = sub.SetPendingLimits(-1, -1)
		_ = sc.Flush()
		base := count.Load()
		msgs := make([]stream.Message, benchKeys)
		for i := range msgs {
			msgs[i] = event(fmt.Sprint("shard-", i), 0)
		}
		b.SetBytes(eventSize)
		b.ResetTimer()
		start, cpu := time.Now(), cpuTime()
		for i := 0; i < b.N; i++ {
			m := msgs[i%benchKeys]
			if err := nc.PublishMsg(&nats.Msg{Subject: natsstream.Subject("bench", natsstream.Partition(m.Key, 16)),
				Header: nats.Header{"Hl-Key": []string{m.Key}}, Data: m.Data}); err != nil {
				b.Fatal(err)
			}
		}
		_ = nc.Flush()
		// Core NATS drops messages a slow subscriber cannot take: count what arrived.
		deadline := time.Now().Add(30 * time.Second)
		for count.Load()-base < int64(b.N) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		el := time.Since(start)
		got := count.Load() - base
		rate := float64(got) / el.Seconds()
		coreRate.Store(uint64(rate))
		b.ReportMetric(rate, "events/s")
		b.ReportMetric(float64(int64(b.N)-got), "lost")
		reportCPU(b, cpu, int(got))
	})
	// PublishBatch calls of 512 events from two goroutines; "nopack" sends one
	// JetStream message per event (PackMessages 1), to show what packing saves.
	b.Run("jetstream-batch", func(b *testing.B) { benchBatch(b, natsstream.Options{URL: srv.ClientURL()}) })
	b.Run("jetstream-batch-nopack", func(b *testing.B) {
		benchBatch(b, natsstream.Options{URL: srv.ClientURL(), PackMessages: 1})
	})
	// Single Publish calls from many goroutines at once, as services publish: each
	// goroutine has one message in flight, and a partition's concurrent messages share
	// JetStream messages, so packs hold at most about goroutines/16 events.
	for _, g := range []int{publishers, 8 * publishers} {
		b.Run(fmt.Sprintf("jetstream-publish-%dg", g), func(b *testing.B) { benchPublish(b, srv.ClientURL(), g) })
	}
}

// runs numbers the benchmark runs, for their topic names.
var runs atomic.Int64

func benchBatch(b *testing.B, o natsstream.Options) {
	pub := benchBackendWith(b, o)
	con := benchBackend(b, o.URL)
	topic := fmt.Sprint("tput", b.N, "-", runs.Add(1)) // a fresh topic per run: the event ids repeat
	var count atomic.Int64
	consumeCounting(b, con, topic, &count, nil)
	ctx := context.Background()
	b.SetBytes(eventSize)
	b.ResetTimer()
	start, cpu := time.Now(), cpuTime()
	var wg sync.WaitGroup
	const publishers = 2
	for p := 0; p < publishers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			n := b.N / publishers
			if p == 0 {
				n += b.N % publishers
			}
			batch := make([]stream.Message, 0, batchSize)
			for i := 0; i < n; i++ {
				key := fmt.Sprintf("shard-%d-%d", p, i%(benchKeys/publishers))
				batch = append(batch, event(key, i))
				if len(batch) == batchSize || i == n-1 {
					if err := pub.PublishBatch(ctx, topic, batch); err != nil {
						b.Error(err)
						return
					}
					batch = batch[:0]
				}
			}
		}(p)
	}
	wg.Wait()
	waitCount(b, &count, int64(b.N))
	reportRate(b, start, cpu)
}

func benchPublish(b *testing.B, url string, goroutines int) {
	pub := benchBackend(b, url)
	con := benchBackend(b, url)
	topic := fmt.Sprint("tpub", goroutines, "-", b.N, "-", runs.Add(1))
	var count atomic.Int64
	consumeCounting(b, con, topic, &count, nil)
	ctx := context.Background()
	b.SetBytes(eventSize)
	b.ResetTimer()
	start, cpu := time.Now(), cpuTime()
	var next atomic.Int64
	var wg sync.WaitGroup
	for p := 0; p < goroutines; p++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.N {
					return
				}
				if err := pub.Publish(ctx, topic, event(fmt.Sprint("shard-", i%benchKeys), i)); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	wg.Wait()
	waitCount(b, &count, int64(b.N))
	reportRate(b, start, cpu)
}

// reportRate reports the events/s since start, the ratio to core NATS, and the CPU
// per event.
func reportRate(b *testing.B, start time.Time, cpu time.Duration) {
	rate := float64(b.N) / time.Since(start).Seconds()
	b.ReportMetric(rate, "events/s")
	if c := coreRate.Load(); c > 0 {
		b.ReportMetric(rate/float64(c), "x_core_nats")
	}
	reportCPU(b, cpu, b.N)
}

type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) quantiles() (p50, p99 time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0, 0
	}
	sort.Slice(l.d, func(i, j int) bool { return l.d[i] < l.d[j] })
	return l.d[len(l.d)/2], l.d[len(l.d)*99/100]
}

// offer publishes n events at rate events/s (in ticks of 1 ms), stamping each with its
// publish time.
func offer(b *testing.B, n, rate int, publish func([]stream.Message) error) {
	perTick := rate / 1000
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	start := time.Now()
	sent := 0
	for sent < n {
		<-tick.C
		// Catch up after a late tick, so the offered rate holds on average.
		due := int(time.Since(start).Seconds()*float64(rate)) + perTick
		var batch []stream.Message
		for sent < n && sent < due {
			m := event(fmt.Sprint("shard-", sent%benchKeys), sent)
			binary.BigEndian.PutUint64(m.Data, uint64(time.Now().UnixNano()))
			batch = append(batch, m)
			sent++
		}
		if len(batch) > 0 {
			if err := publish(batch); err != nil {
				b.Fatal(err)
			}
		}
	}
}

// BenchmarkLatency: publish-to-handler latency at offered rates of 10,000 events/s (the
// target) and 2,000 events/s (below saturation on a loaded machine). "jetstream"
// publishes each millisecond's events as one batch; "jetstream-publish" hands each
// event to one of 64 goroutines calling Publish, and measures from the moment the event
// was due (so a publisher falling behind shows as latency, not as a lower rate).
func BenchmarkLatency(b *testing.B) {
	for _, rate := range []int{10000, 2000} {
		b.Run(fmt.Sprint(rate, "eps"), func(b *testing.B) { benchLatency(b, rate) })
	}
}

func benchLatency(b *testing.B, rate int) {
	srv := natstest.Start(b)
	b.Run("core-nats", func(b *testing.B) {
		nc, _ := nats.Connect(srv.ClientURL())
		defer nc.Close()
		sc, _ := nats.Connect(srv.ClientURL())
		defer sc.Close()
		lat := &latencies{}
		var count atomic.Int64
		sub, err := sc.Subscribe("core.lat.*", func(m *nats.Msg) {
			lat.add(time.Since(time.Unix(0, int64(binary.BigEndian.Uint64(m.Data)))))
			count.Add(1)
		})
		if err != nil {
			b.Fatal(err)
		}
		_ = sub.SetPendingLimits(-1, -1)
		_ = sc.Flush()
		b.ResetTimer()
		cpu := cpuTime()
		offer(b, b.N, rate, func(batch []stream.Message) error {
			for _, m := range batch {
				if err := nc.PublishMsg(&nats.Msg{Subject: "core.lat." + fmt.Sprint(natsstream.Partition(m.Key, 16)),
					Header: nats.Header{"Hl-Key": []string{m.Key}}, Data: m.Data}); err != nil {
					return err
				}
			}
			return nc.Flush()
		})
		deadline := time.Now().Add(30 * time.Second)
		for count.Load() < int64(b.N) && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
		p50, p99 := lat.quantiles()
		coreP50.Store(int64(p50))
		coreP99.Store(int64(p99))
		b.ReportMetric(float64(p50)/1e6, "p50_ms")
		b.ReportMetric(float64(p99)/1e6, "p99_ms")
		b.ReportMetric(float64(rate), "events/s")
		reportCPU(b, cpu, int(count.Load()))
	})
	b.Run("jetstream", func(b *testing.B) {
		pub := benchBackend(b, srv.ClientURL())
		con := benchBackend(b, srv.ClientURL())
		topic := fmt.Sprint("lat", b.N, "-", runs.Add(1))
		lat := &latencies{}
		var count atomic.Int64
		consumeCounting(b, con, topic, &count, lat)
		ctx := context.Background()
		b.ResetTimer()
		cpu := cpuTime()
		offer(b, b.N, rate, func(batch []stream.Message) error { return pub.PublishBatch(ctx, topic, batch) })
		waitCount(b, &count, int64(b.N))
		reportLatency(b, lat, rate, cpu)
	})
	b.Run("jetstream-publish", func(b *testing.B) {
		pub := benchBackend(b, srv.ClientURL())
		con := benchBackend(b, srv.ClientURL())
		topic := fmt.Sprint("latpub", b.N, "-", runs.Add(1))
		lat := &latencies{}
		var count atomic.Int64
		consumeCounting(b, con, topic, &count, lat)
		ctx := context.Background()
		work := make(chan stream.Message, b.N)
		var wg sync.WaitGroup
		for p := 0; p < publishers; p++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for m := range work {
					if err := pub.Publish(ctx, topic, m); err != nil {
						b.Error(err)
						return
					}
				}
			}()
		}
		b.ResetTimer()
		cpu := cpuTime()
		offer(b, b.N, rate, func(batch []stream.Message) error {
			for _, m := range batch {
				work <- m
			}
			return nil
		})
		close(work)
		wg.Wait()
		waitCount(b, &count, int64(b.N))
		reportLatency(b, lat, rate, cpu)
	})
}

func reportLatency(b *testing.B, lat *latencies, rate int, cpu time.Duration) {
	p50, p99 := lat.quantiles()
	b.ReportMetric(float64(p50)/1e6, "p50_ms")
	b.ReportMetric(float64(p99)/1e6, "p99_ms")
	b.ReportMetric(float64(rate), "events/s")
	if c := coreP99.Load(); c > 0 {
		b.ReportMetric(float64(p99)/float64(c), "p99_x_core_nats")
	}
	reportCPU(b, cpu, b.N)
}
