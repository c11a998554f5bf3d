package alerter

import (
	"bufio"
	"context"
	"fmt"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/natsstream"
	"github.com/heartline/heartline/shared/stream/natsstream/natstest"
	"github.com/heartline/heartline/shared/testbin"
)

// scrape reads the alerter's /metrics: plain samples by name{labels}, and histogram
// buckets by name.
type scrape struct {
	samples map[string]float64
}

func scrapeMetrics(addr string) (scrape, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return scrape{}, err
	}
	defer resp.Body.Close()
	s := scrape{samples: map[string]float64{}}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		l := sc.Text()
		if strings.HasPrefix(l, "#") || l == "" {
			continue
		}
		i := strings.LastIndexByte(l, ' ')
		v, err := strconv.ParseFloat(l[i+1:], 64)
		if err == nil {
			s.samples[l[:i]] = v
		}
	}
	return s, sc.Err()
}

// sum adds every sample of the metric name.
func (s scrape) sum(name string) float64 {
	t := 0.0
	for k, v := range s.samples {
		if k == name || strings.HasPrefix(k, name+"{") {
			t += v
		}
	}
	return t
}

// since returns the samples of s minus those of an earlier scrape.
func (s scrape) since(earlier scrape) scrape {
	out := scrape{samples: map[string]float64{}}
	for k, v := range s.samples {
		out.samples[k] = v - earlier.samples[k]
	}
	return out
}

// quantile estimates a histogram's quantile as the upper bound of the bucket holding it.
func (s scrape) quantile(name string, q float64) float64 {
	type bucket struct{ le, n float64 }
	var bs []bucket
	for k, v := range s.samples {
		if !strings.HasPrefix(k, name+"_bucket{") {
			continue
		}
		i := strings.Index(k, `le="`)
		le := k[i+4 : strings.IndexByte(k[i+4:], '"')+i+4]
		f, err := strconv.ParseFloat(le, 64)
		if le == "+Inf" {
			f, err = math.Inf(1), nil
		}
		if err == nil {
			bs = append(bs, bucket{f, v})
		}
	}
	sort.Slice(bs, func(i, j int) bool { return bs[i].le < bs[j].le })
	if len(bs) == 0 || bs[len(bs)-1].n == 0 {
		return 0
	}
	want := q * bs[len(bs)-1].n
	for _, b := range bs {
		if b.n >= want {
			return b.le
		}
	}
	return math.Inf(1)
}

func childStatusMB(pid int, field string) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, field+":") {
			if f := strings.Fields(l); len(f) >= 2 {
				kb, _ := strconv.ParseFloat(f[1], 64)
				return kb / 1024
			}
		}
	}
	return 0
}

// BenchmarkAlerterProcess10kShards is the benchmark: one alerter instance (the
// real binary, cmd/alerter, as its own process) fed by simulated agents for 10,000
// shards at one heartbeat a second each through an embedded NATS server (in the
// benchmark's process, with the agents), incidents in NATS KV. It reports the handled
// rate and consumer delay from the alerter's /metrics, the decision latency from the
// alerts (deciding heartbeat accepted by JetStream to alert accepted by JetStream), and
// the alerter process's resident memory (VmRSS, and VmHWM: its peak).
//
//	ALERTER_BENCH_SECONDS=60 go test -run '^$' -bench AlerterProcess -benchtime 1x ./services/alerter
func BenchmarkAlerterProcess10kShards(b *testing.B) {
	for i := 0; i < b.N; i++ {
		benchAlerterProcess(b, benchShards, benchDuration())
	}
}

func benchAlerterProcess(b *testing.B, shards int, dur time.Duration) {
	bin := testbin.Build(b, "alerter")
	e := natstest.Start(b)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	octx, ocancel := context.WithTimeout(ctx, 30*time.Second)
	nb, err := natsstream.New(octx, natsstream.Options{URL: e.ClientURL(), Name: "bench-agents"})
	ocancel()
	if err != nil {
		b.Fatal(err)
	}
	defer nb.Close()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	addr := ln.Addr().String()
	_ = ln.Close()
	dir := b.TempDir()
	logf, err := os.Create(filepath.Join(dir, "alerter.log"))
	if err != nil {
		b.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "-stream", e.ClientURL(), "-kv", "nats", "-http-listen", addr, "-instance", "bench-alerter",
		"-log-level", "warn", "-log-format", "json", "-data-dir", dir)
	cmd.Stdout, cmd.Stderr = logf, logf
	if g := os.Getenv("ALERTER_BENCH_GOGC"); g != "" {
		cmd.Env = append(os.Environ(), "GOGC="+g) // to weigh GC tuning
	}
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(20 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	}()
	waitFor(b, 60*time.Second, "alerter /readyz", func() bool {
		resp, err := http.Get("http://" + addr + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	handled := func() float64 {
		s, err := scrapeMetrics(addr)
		if err != nil {
			return -1
		}
		return s.sum("alerter_heartbeats_total")
	}
	// Warm-up: one heartbeat per shard until the alerter's consumers are in place (a new
	// group starts at the latest message), then a baseline.
	for round := uint64(1); ; round++ {
		if round > 30 {
			b.Fatalf("the alerter handled no warm-up heartbeats: see %s", logf.Name())
		}
		if ag := simulateAgents(ctx, nb, shards, time.Second, time.Now(), round-1, false); ag.Errors > 0 {
			b.Fatalf("warm-up: %d publish errors", ag.Errors)
		}
		if handled() >= float64(shards) {
			break
		}
	}
	var prev float64 = -1
	waitFor(b, 60*time.Second, "warm-up handled", func() bool {
		h := handled()
		done := h == prev
		prev = h
		time.Sleep(200 * time.Millisecond)
		return done
	})
	base := prev

	var mu sync.Mutex
	var lat []time.Duration
	opened, resolved := 0, 0
	codes := map[string]int{}
	go func() {
		_ = nb.Consume(ctx, stream.Subscription{Topic: events.TopicAlerts, Group: "bench-reader", Start: stream.StartOldest},
			func(_ context.Context, d stream.Delivery) error {
				ev, err := events.Decode(d.Data)
				if err != nil {
					return stream.Permanent(err)
				}
				a := ev.Payload.(*events.Alert)
				mu.Lock()
				defer mu.Unlock()
				codes[string(ev.Kind)+" "+string(a.Code)]++
				switch ev.Kind {
				case events.KindAlertOpened:
					opened++
				case events.KindAlertResolved:
					resolved++
				}
				if a.Code == events.AlertPrimaryDown {
					lat = append(lat, d.Published.Sub(a.LastHeartbeatAt))
				}
				return nil
			})
	}()

	var peakDelay float64
	sampler, stopSampler := context.WithCancel(ctx)
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		t := time.NewTicker(time.Second)
		defer t.Stop()
		for {
			select {
			case <-sampler.Done():
				return
			case <-t.C:
				if s, err := scrapeMetrics(addr); err == nil {
					if l := s.samples["alerter_consumer_lag_seconds"]; l > peakDelay {
						peakDelay = l
					}
				}
			}
		}
	}()
	before, err := scrapeMetrics(addr)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	cpu0 := cpuSeconds(cmd.Process.Pid)
	ag := simulateAgents(ctx, nb, shards, dur, start, 100, true)
	published, pubErrs := ag.Published, ag.Errors
	lastPub := time.Now()
	waitFor(b, 5*time.Minute, "every heartbeat handled", func() bool { return handled()-base >= float64(published) })
	drain := time.Since(lastPub)
	cpu := cpuSeconds(cmd.Process.Pid) - cpu0
	stopSampler()
	<-samplerDone
	elapsed := time.Since(start)
	killed := shards / 100
	for deadline := time.Now().Add(time.Minute); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		mu.Lock()
		done := resolved >= killed
		mu.Unlock()
		if done {
			break
		}
	}
	s, err := scrapeMetrics(addr)
	if err != nil {
		b.Fatal(err)
	}
	s = s.since(before) // the run only, not the warm-up
	rss, hwm := childStatusMB(cmd.Process.Pid, "VmRSS"), childStatusMB(cmd.Process.Pid, "VmHWM")
	mu.Lock()
	defer mu.Unlock()
	// The alerter sees a shard silent for the agents' gap plus the variation of the
	// consumer's delay: AGENT_LOST is a true positive when the two together reach
	// agent-lost-after.
	lostOK := ag.MaxGap+time.Duration(peakDelay*float64(time.Second)) >= DefaultConfig().Detector.AgentLostAfter
	if codes["alert.opened PRIMARY_DOWN"] != killed || codes["alert.resolved PRIMARY_DOWN"] != killed ||
		(codes["alert.opened AGENT_LOST"] > 0 && !lostOK) || opened-codes["alert.opened AGENT_LOST"] != killed {
		log, _ := os.ReadFile(logf.Name())
		b.Errorf("alerts %v for %d dead primaries (agents' longest silence %s); alerter log:\n%s", codes, killed, ag.MaxGap, tail(string(log), 3000))
	} else if codes["alert.opened AGENT_LOST"] > 0 {
		b.Logf("%d AGENT_LOST: the CPU-starved simulator left shards silent for up to %s, and the consumer's delay varied by up to %.3fs",
			codes["alert.opened AGENT_LOST"], ag.MaxGap, peakDelay)
	}
	p50, p99, pmax := pct(lat, .5), pct(lat, .99), pct(lat, 1)
	rate := (handled() - base) / elapsed.Seconds()
	b.ReportMetric(rate, "heartbeats/s")
	b.ReportMetric(float64(p99.Microseconds())/1000, "decision-p99-ms")
	b.ReportMetric(hwm, "alerter-peak-rss-MB")
	b.ReportMetric(cpu/float64(published)*1e6, "alerter-cpu-µs/heartbeat")
	b.Logf("\n| shards | run s | published (errors; agents' longest gap between two heartbeats of a shard) | handled/s | alerter CPU µs/heartbeat (cores at 10k/s) | consumer delay p50 / p99 (histogram bucket upper bound), peak of the lag gauge | drain after last publish | decision latency p50 / p99 / max (%d alerts) | opened / resolved (of %d) | alerter RSS MB (peak) | load avg |\n"+
		"| %d | %.1f | %d (%d; longest gap %s) | %.0f | %.0f (%.2f) | ≤%gs / ≤%gs, %.3fs | %s | %s / %s / %s | %d / %d | %.0f (%.0f) | %s |",
		len(lat), killed, shards, elapsed.Seconds(), published, pubErrs, ag.MaxGap.Round(time.Millisecond), rate, cpu/float64(published)*1e6, cpu/float64(published)*1e4,
		s.quantile("alerter_heartbeat_delay_seconds", .5), s.quantile("alerter_heartbeat_delay_seconds", .99), peakDelay,
		drain.Round(time.Millisecond), p50.Round(100*time.Microsecond), p99.Round(100*time.Microsecond), pmax.Round(time.Millisecond),
		opened, resolved, rss, hwm, loadAvg())
}

// cpuSeconds is the CPU time (user + system) a process used so far.
func cpuSeconds(pid int) float64 {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseFloat(f[11], 64)
	k, _ := strconv.ParseFloat(f[12], 64)
	return (u + k) / 100 // USER_HZ
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "?"
	}
	return strings.Join(f[:3], " ")
}
