package main

import (
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/ratequeue/queue"
	"github.com/heartline/heartline/shared/config"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/redisproc"
	"github.com/heartline/heartline/shared/topology"
)

type benchConfig struct {
	Addr      string
	Clients   int
	Requests  int
	Queues    int
	BodySize  int
	Benchmark string
	JSON      string
	Dir       string
	CPUProf   string
}

func benchLoader() (*config.Loader, *benchConfig) {
	c := &benchConfig{}
	l := config.NewLoader("ratequeue bench", "RATEQUEUE_BENCH")
	l.String(&c.Addr, "addr", "", "primary to benchmark (host:port, with a replica attached); empty: start a local primary and replica")
	l.Int(&c.Clients, "clients", 50, "concurrent clients (both redis-benchmark -c and ratequeue goroutines)")
	l.Int(&c.Requests, "requests", 100000, "operations per measured phase")
	l.Int(&c.Queues, "queues", 1000, "queues the enqueues are spread over")
	l.Int(&c.BodySize, "body-size", 64, "message body size (redis-benchmark -d)")
	l.String(&c.Benchmark, "redis-benchmark", "/usr/bin/redis-benchmark", "redis-benchmark binary")
	l.String(&c.JSON, "json", "", "also write the results as JSON to this file")
	l.String(&c.Dir, "dir", "", "working directory for the local nodes (default: a temporary directory)")
	l.String(&c.CPUProf, "cpuprofile", "", "write a CPU profile of the ratequeue phases to this file")
	return l, c
}

// Validate reports every problem with the configuration.
func (c *benchConfig) Validate() error {
	var p config.Problems
	p.Check(c.Clients <= 0, "-clients must be positive")
	p.Check(c.Requests <= 0, "-requests must be positive")
	p.Check(c.Queues <= 0, "-queues must be positive")
	p.Check(c.BodySize <= 0, "-body-size must be positive")
	return p.Err()
}

type benchRow struct {
	Op      string  `json:"op"`
	Mode    string  `json:"mode"`
	OpsPerS float64 `json:"ops_per_s"`
	P50MS   float64 `json:"p50_ms"`
	P99MS   float64 `json:"p99_ms"`
	Errors  int64   `json:"errors,omitempty"`
	Versus  string  `json:"versus,omitempty"`
	Ratio   float64 `json:"ratio,omitempty"`
}

func bench(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	l, cfg := benchLoader()
	if err := parse(l, args, getenv, stderr); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return usageErr(err)
	}
	addr := cfg.Addr
	if addr == "" {
		dir := cfg.Dir
		if dir == "" {
			d, err := os.MkdirTemp("", "ratequeue-bench-")
			if err != nil {
				return err
			}
			defer os.RemoveAll(d)
			dir = d
		}
		p, r, err := startBenchShard(ctx, dir)
		if err != nil {
			return err
		}
		defer func() { _ = r.Kill(); _ = p.Kill() }()
		addr = p.Addr()
	}
	host, port, ok := strings.Cut(addr, ":")
	if !ok {
		return usageErr(fmt.Errorf("-addr %q: want host:port", addr))
	}
	rdb := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1})
	defer rdb.Close()
	epoch, err := benchEpoch(ctx, rdb)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "benchmarking %s (epoch %d) with %d clients, %d requests per phase\n", addr, epoch, cfg.Clients, cfg.Requests)

	var rows []benchRow
	rb, err := redisBenchmark(ctx, cfg, host, port)
	if err != nil {
		return err
	}
	rows = append(rows, rb...)
	base := map[string]benchRow{}
	for _, r := range rb {
		base[r.Op] = r
	}
	if cfg.CPUProf != "" {
		f, err := os.Create(cfg.CPUProf)
		if err != nil {
			return err
		}
		defer f.Close()
		if err := pprof.StartCPUProfile(f); err != nil {
			return err
		}
		defer pprof.StopCPUProfile()
	}
	topo := topology.Static(topology.Map{Shards: []topology.Shard{{ID: "bench", Index: 0, Epoch: epoch, Primary: addr}}})
	type variant struct {
		ack     queue.AckMode
		noBatch bool
	}
	for _, v := range []variant{{queue.AckPrimary, false}, {queue.AckReplica, false}, {queue.AckPrimary, true}, {queue.AckReplica, true}} {
		mode := v.ack
		qc, err := queue.New(queue.Config{Topology: topo, Ack: mode, DefaultRate: 0, Rates: map[string]float64{},
			PoolSize: cfg.Clients + 8, Log: zerolog.Nop(), Visibility: time.Hour, NoBatch: v.noBatch})
		if err != nil {
			return err
		}
		res, err := benchQueue(ctx, cfg, qc)
		qc.Close()
		if err != nil {
			return err
		}
		for _, r := range res {
			r.Mode = "ack=" + string(mode)
			if v.noBatch {
				r.Mode += ",nobatch"
			}
			vs := map[string]string{"enqueue": "RPUSH", "dequeue": "LPOP", "ack": "RPUSH"}[r.Op]
			if b, ok := base[vs]; ok && b.OpsPerS > 0 {
				r.Versus, r.Ratio = vs, r.OpsPerS/b.OpsPerS
			}
			rows = append(rows, r)
		}
	}
	if cs, err := rdb.Info(ctx, "commandstats").Result(); err == nil {
		for _, line := range strings.Split(cs, "\n") {
			for _, c := range []string{"cmdstat_evalsha:", "cmdstat_rpush:", "cmdstat_lpop:", "cmdstat_wait:"} {
				if strings.HasPrefix(line, c) {
					fmt.Fprintln(stderr, "server:", strings.TrimSpace(line))
				}
			}
		}
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "op\tmode\tops/s\tp50 ms\tp99 ms\terrors\tratio\t")
	for _, r := range rows {
		ratio := ""
		if r.Versus != "" {
			ratio = fmt.Sprintf("%.2fx %s", r.Ratio, r.Versus)
		}
		fmt.Fprintf(tw, "%s\t%s\t%.0f\t%.3f\t%.3f\t%d\t%s\t\n", r.Op, r.Mode, r.OpsPerS, r.P50MS, r.P99MS, r.Errors, ratio)
	}
	_ = tw.Flush()
	if cfg.JSON != "" {
		b, _ := json.MarshalIndent(rows, "", "  ")
		if err := os.WriteFile(cfg.JSON, append(b, '\n'), 0o644); err != nil {
			return err
		}
	}
	return nil
}

func startBenchShard(ctx context.Context, dir string) (*redisproc.Process, *redisproc.Process, error) {
	dirs := [][2]string{{"min-replicas-to-write", "1"}, {"min-replicas-max-lag", "10"}}
	p, err := redisproc.Start(ctx, redisproc.Config{Name: "bench-primary", Dir: filepath.Join(dir, "p"), Directives: dirs})
	if err != nil {
		return nil, nil, err
	}
	r, err := redisproc.Start(ctx, redisproc.Config{Name: "bench-replica", Dir: filepath.Join(dir, "r"), ReplicaOf: p.Addr(), Directives: dirs})
	if err != nil {
		_ = p.Kill()
		return nil, nil, err
	}
	rc := redis.NewClient(&redis.Options{Addr: r.Addr(), MaxRetries: -1})
	defer rc.Close()
	deadline := time.Now().Add(20 * time.Second)
	for {
		info, err := redisinfo.Read(ctx, rc)
		if err == nil && info.LinkUp && !info.SyncInProgress {
			break
		}
		if time.Now().After(deadline) {
			_ = r.Kill()
			_ = p.Kill()
			return nil, nil, errors.New("bench: the replica did not sync within 20 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	return p, r, nil
}

// benchEpoch returns the node's epoch, stamping 1 on an unstamped node.
func benchEpoch(ctx context.Context, rdb *redis.Client) (uint64, error) {
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, err := rdb.Get(ctx, queue.EpochKey).Result()
		if err == nil {
			return strconv.ParseUint(v, 10, 64)
		}
		if errors.Is(err, redis.Nil) {
			err = queue.StampEpoch(ctx, rdb, 1)
			if err == nil {
				return 1, nil
			}
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("bench: reading the node's epoch: %w", err)
		}
		time.Sleep(100 * time.Millisecond) // a fresh replica counts as good after its first ack
	}
}

func redisBenchmark(ctx context.Context, cfg *benchConfig, host, port string) ([]benchRow, error) {
	cmd := exec.CommandContext(ctx, cfg.Benchmark, "-h", host, "-p", port, "-c", strconv.Itoa(cfg.Clients), "-n", strconv.Itoa(cfg.Requests),
		"-d", strconv.Itoa(cfg.BodySize), "-t", "rpush,lpop", "--csv")
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("running %s (install it: apt-get install redis-tools): %w", cfg.Benchmark, err)
	}
	recs, err := csv.NewReader(strings.NewReader(string(out))).ReadAll()
	if err != nil || len(recs) < 2 {
		return nil, fmt.Errorf("redis-benchmark output %q: %v", out, err)
	}
	col := map[string]int{}
	for i, h := range recs[0] {
		col[h] = i
	}
	var rows []benchRow
	for _, rec := range recs[1:] {
		f := func(name string) float64 {
			i, ok := col[name]
			if !ok || i >= len(rec) {
				return 0
			}
			v, _ := strconv.ParseFloat(rec[i], 64)
			return v
		}
		rows = append(rows, benchRow{Op: rec[col["test"]], Mode: "redis-benchmark", OpsPerS: f("rps"), P50MS: f("p50_latency_ms"), P99MS: f("p99_latency_ms")})
	}
	return rows, nil
}

var errPhaseOver = errors.New("phase over")

// benchQueue measures enqueue, dequeue (without ack) and ack of cfg.Requests messages.
func benchQueue(ctx context.Context, cfg *benchConfig, qc *queue.Client) ([]benchRow, error) {
	body := make([]byte, cfg.BodySize)
	for i := range body {
		body[i] = 'x'
	}
	type msg struct{ q, id string }
	got := make([]msg, 0, cfg.Requests)
	var gotMu sync.Mutex
	phase := func(name string, op func(i int, rng *rand.Rand) (bool, error)) (benchRow, error) {
		var next atomic.Int64
		lat := make([][]time.Duration, cfg.Clients)
		var wg sync.WaitGroup
		var firstErr atomic.Pointer[error]
		var errs atomic.Int64
		var over atomic.Bool
		start := time.Now()
		for c := 0; c < cfg.Clients; c++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				rng := rand.New(rand.NewPCG(uint64(c), 7))
				for {
					i := int(next.Add(1)) - 1
					if i >= cfg.Requests || firstErr.Load() != nil || over.Load() {
						return
					}
					t0 := time.Now()
					done, err := op(i, rng)
					if errors.Is(err, errPhaseOver) {
						over.Store(true)
						return
					}
					if err != nil {
						// A failed call (for example WAIT timing out on a starved
						// replica) is counted, not measured; too many abort the run.
						if errs.Add(1) > int64(cfg.Requests/10)+10 {
							firstErr.CompareAndSwap(nil, &err)
							return
						}
						next.Add(-1)
						continue
					}
					if !done {
						next.Add(-1) // nothing ready: not an operation of the measured kind
						continue
					}
					lat[c] = append(lat[c], time.Since(t0))
				}
			}()
		}
		wg.Wait()
		el := time.Since(start)
		if p := firstErr.Load(); p != nil {
			return benchRow{}, fmt.Errorf("bench %s: %w", name, *p)
		}
		var all []time.Duration
		for _, l := range lat {
			all = append(all, l...)
		}
		sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
		q := func(p float64) float64 {
			if len(all) == 0 {
				return 0
			}
			return float64(all[min(len(all)-1, int(p*float64(len(all))))].Microseconds()) / 1000
		}
		return benchRow{Op: name, OpsPerS: float64(len(all)) / el.Seconds(), P50MS: q(.5), P99MS: q(.99), Errors: errs.Load()}, nil
	}
	enq, err := phase("enqueue", func(i int, rng *rand.Rand) (bool, error) {
		_, err := qc.Enqueue(ctx, queue.EnqueueRequest{Queue: "bench-" + strconv.Itoa(rng.IntN(cfg.Queues)), Body: body})
		return err == nil, err
	})
	if err != nil {
		return nil, err
	}
	deq, err := phase("dequeue", func(i int, rng *rand.Rand) (bool, error) {
		res, err := qc.Dequeue(ctx, queue.DequeueRequest{Shard: "bench"})
		if err != nil || res.Message == nil {
			if err == nil && res.Ready == 0 {
				return false, errPhaseOver // the rest went in flight unconfirmed (counted as errors)
			}
			return false, err
		}
		gotMu.Lock()
		got = append(got, msg{res.Message.Queue, res.Message.ID})
		gotMu.Unlock()
		return true, nil
	})
	if err != nil {
		return nil, err
	}
	ack, err := phase("ack", func(i int, rng *rand.Rand) (bool, error) {
		if i >= len(got) {
			return false, errPhaseOver
		}
		m := got[i]
		return true, qc.Ack(ctx, m.q, m.id)
	})
	if err != nil {
		return nil, err
	}
	return []benchRow{enq, deq, ack}, nil
}
