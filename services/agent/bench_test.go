package agent

import (
	"context"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/stream"
)

// discard is a publisher that accepts everything.
type discard struct{}

func (discard) Publish(context.Context, string, stream.Message) error        { return nil }
func (discard) PublishBatch(context.Context, string, []stream.Message) error { return nil }

// cpuTime is this process's user+system CPU time.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// procCPU is a child process's user+system CPU time, from /proc/<pid>/stat.
func procCPU(pid int) time.Duration {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	s := string(b)
	f := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100 // USER_HZ
}

func benchAgent(b *testing.B, s *redistest.Shard) *Agent {
	cfg := testConfig("shard-1", s.Replicas[0].Addr(), s.Primary.Addr())
	cfg.Interval, cfg.ProbeTimeout = 250*time.Millisecond, 150*time.Millisecond
	cfg.Desired = "min-replicas-to-write=0,appendonly=no"
	if err := cfg.Validate(); err != nil {
		b.Fatal(err)
	}
	a, err := New(Options{Config: cfg, Publisher: discard{}, Log: zerolog.Nop(), Registry: prometheus.NewRegistry()})
	if err != nil {
		b.Fatal(err)
	}
	return a
}

// BenchmarkProbeCycle measures one probe cycle of the agent (replica INFO and primary
// PING+INFO in parallel, one pipelined round trip each; decisions; heartbeat encoded
// and queued; a drift check every 40 cycles) against a real primary/replica pair, and
// the same probe done naively (a new connection per probe, one round trip per command)
// for comparison. cpu-ns/op is this process's CPU per cycle; redis-cpu-ns/op is the
// two redis-server processes' CPU per cycle; agents/core is how many agents probing
// every 250 ms one core sustains at that CPU cost.
func BenchmarkProbeCycle(b *testing.B) {
	s := redistest.StartShard(b, "bench", 1)
	report := func(b *testing.B, cpu, rcpu time.Duration) {
		per := float64(cpu.Nanoseconds()) / float64(b.N)
		b.ReportMetric(per, "cpu-ns/op")
		b.ReportMetric(float64(rcpu.Nanoseconds())/float64(b.N), "redis-cpu-ns/op")
		b.ReportMetric(float64(250*time.Millisecond)/per, "agents/core")
	}
	b.Run("agent", func(b *testing.B) {
		a := benchAgent(b, s)
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		go a.out.Run(ctx, time.Second)
		a.cycle(ctx) // connections up
		b.ResetTimer()
		c0, r0 := cpuTime(), procCPU(s.Primary.PID())+procCPU(s.Replicas[0].PID())
		for i := 0; i < b.N; i++ {
			a.cycle(ctx)
		}
		b.StopTimer()
		report(b, cpuTime()-c0, procCPU(s.Primary.PID())+procCPU(s.Replicas[0].PID())-r0)
		if a.seq < uint64(b.N) {
			b.Fatalf("only %d heartbeats for %d cycles", a.seq, b.N)
		}
	})
	b.Run("naive", func(b *testing.B) {
		ctx := context.Background()
		probe := func(addr string, cmds ...string) {
			c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second})
			defer c.Close()
			if err := c.Ping(ctx).Err(); err != nil {
				b.Fatal(err)
			}
			for _, sec := range cmds {
				s, err := c.Info(ctx, sec).Result()
				if err != nil {
					b.Fatal(err)
				}
				if sec == "replication" {
					if _, err := redisinfo.Parse(s); err != nil {
						b.Fatal(err)
					}
				}
			}
		}
		b.ResetTimer()
		c0, r0 := cpuTime(), procCPU(s.Primary.PID())+procCPU(s.Replicas[0].PID())
		for i := 0; i < b.N; i++ {
			probe(s.Replicas[0].Addr(), "replication", "keyspace")
			probe(s.Primary.Addr(), "server", "replication", "keyspace")
		}
		b.StopTimer()
		report(b, cpuTime()-c0, procCPU(s.Primary.PID())+procCPU(s.Replicas[0].PID())-r0)
	})
}

// BenchmarkSustained runs N whole agents (probe loop, watch connection, publisher) at
// the default 250 ms interval against one real pair for b.N seconds and reports the
// CPU they use: cpu-cores is the fraction of one core, agents/core the sustainable
// number. Run with -benchtime=5x.
func BenchmarkSustained(b *testing.B) {
	s := redistest.StartShard(b, "sustain", 1)
	for _, n := range []int{50, 200} {
		b.Run(fmt.Sprint("agents-", n), func(b *testing.B) {
			ctx, cancel := context.WithCancel(context.Background())
			var wg sync.WaitGroup
			var agents []*Agent
			for i := 0; i < n; i++ {
				a := benchAgent(b, s)
				agents = append(agents, a)
				wg.Add(1)
				go func() { defer wg.Done(); _ = a.Run(ctx) }()
			}
			time.Sleep(time.Second) // warm up: connections, first drift checks
			b.ResetTimer()
			var beats0 uint64
			for _, a := range agents {
				beats0 += a.beats.Load()
			}
			c0, t0 := cpuTime(), time.Now()
			time.Sleep(time.Duration(b.N) * time.Second)
			cpu, wall := cpuTime()-c0, time.Since(t0)
			b.StopTimer()
			var beats uint64
			for _, a := range agents {
				beats += a.beats.Load()
			}
			cancel()
			wg.Wait()
			cores := cpu.Seconds() / wall.Seconds()
			b.ReportMetric(cores, "cpu-cores")
			b.ReportMetric(float64(n)/cores, "agents/core")
			b.ReportMetric(float64(beats-beats0)/wall.Seconds()/float64(n), "heartbeats/s/agent")
		})
	}
}
