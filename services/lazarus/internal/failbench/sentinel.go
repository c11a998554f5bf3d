package failbench

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heartline/heartline/shared/proc"
	"github.com/heartline/heartline/shared/redisproc"
)

// SentinelOptions configure the comparison run against Redis Sentinel.
type SentinelOptions struct {
	Runs     int
	Replicas int
	// DownAfter is Sentinel's down-after-milliseconds (default 1 s, as measured in
	// NOTES: Sentinel's own default is 30 s).
	DownAfter time.Duration
	Period    time.Duration
	WorkDir   string
	// HostGone: the killed primary stays down for Window (default 10 s) before it is
	// started again (empty); with one replica Sentinel then has no replica to WAIT for.
	HostGone bool
	Window   time.Duration
}

// SentinelRun is one measured Sentinel failover.
type SentinelRun struct {
	N        int
	Kill     time.Time
	FirstAck time.Time
	// FirstWrite is the first SET the new primary accepted after the kill, whether or
	// not a replica acknowledged it (WAIT 0): an acknowledgement on one node only.
	FirstWrite time.Time
	Err        string
}

// Total is kill -9 to the first acknowledged write after it.
func (r SentinelRun) Total() time.Duration {
	if r.FirstAck.IsZero() {
		return 0
	}
	return r.FirstAck.Sub(r.Kill)
}

// SentinelResult is the comparison's outcome.
type SentinelResult struct {
	Runs  []SentinelRun
	Acked int64
}

// Median is the median kill-to-first-ack over the complete runs.
func (s SentinelResult) Median() (time.Duration, int) {
	var ds []time.Duration
	for _, r := range s.Runs {
		if r.Err == "" && !r.FirstAck.IsZero() {
			ds = append(ds, r.Total())
		}
	}
	if len(ds) == 0 {
		return 0, 0
	}
	return median(ds), len(ds)
}

// Sentinel measures the same failover with Redis Sentinel (three sentinels, quorum 2)
// and a go-redis failover client writing SET + WAIT 1: the time from kill -9 of the
// primary to the first write acknowledged after it (the old primary is dead, so that
// write is on the new primary).
func Sentinel(ctx context.Context, o SentinelOptions) (SentinelResult, error) {
	if o.Runs <= 0 {
		o.Runs = 5
	}
	if o.Replicas <= 0 {
		o.Replicas = 2
	}
	if o.DownAfter <= 0 {
		o.DownAfter = time.Second
	}
	if o.Period <= 0 {
		o.Period = 8 * time.Second
	}
	if o.Window <= 0 {
		o.Window = 10 * time.Second
	}
	var res SentinelResult
	dir := filepath.Join(o.WorkDir, "sentinel-shard")
	nodes := map[string]*redisproc.Process{}
	defer func() {
		for _, n := range nodes {
			_ = n.Kill()
		}
	}()
	p, err := redisproc.Start(ctx, redisproc.Config{Name: "s-primary", Dir: dir})
	if err != nil {
		return res, err
	}
	nodes[p.Addr()] = p
	for i := 0; i < o.Replicas; i++ {
		r, err := redisproc.Start(ctx, redisproc.Config{Name: fmt.Sprintf("s-replica%d", i+1), Dir: dir, ReplicaOf: p.Addr()})
		if err != nil {
			return res, err
		}
		nodes[r.Addr()] = r
	}
	bin, err := redisproc.Binary()
	if err != nil {
		return res, err
	}
	host, port, _ := net.SplitHostPort(p.Addr())
	var sentinels []string
	var sprocs []*proc.Process
	defer func() {
		for _, s := range sprocs {
			_ = s.Kill()
		}
	}()
	for i := 0; i < 3; i++ {
		sp, err := redisproc.FreePort()
		if err != nil {
			return res, err
		}
		conf := filepath.Join(dir, fmt.Sprintf("sentinel%d.conf", i))
		body := fmt.Sprintf("port %d\nbind 127.0.0.1\ndir %s\nsentinel monitor bench %s %s 2\nsentinel down-after-milliseconds bench %d\n"+
			"sentinel failover-timeout bench 10000\nsentinel parallel-syncs bench 1\n", sp, dir, host, port, o.DownAfter.Milliseconds())
		if err := os.WriteFile(conf, []byte(body), 0o644); err != nil {
			return res, err
		}
		s := proc.New(proc.Spec{Name: fmt.Sprintf("sentinel%d", i), Path: bin, Args: []string{conf, "--sentinel"}, Dir: dir,
			Log: filepath.Join(dir, fmt.Sprintf("sentinel%d.log", i))})
		if err := s.Start(); err != nil {
			return res, err
		}
		sprocs = append(sprocs, s)
		addr := "127.0.0.1:" + strconv.Itoa(sp)
		if err := redisproc.WaitReady(ctx, addr, s.Exited(), 10*time.Second); err != nil {
			return res, fmt.Errorf("sentinel %d: %w", i, err)
		}
		sentinels = append(sentinels, addr)
	}
	fc := redis.NewFailoverClient(&redis.FailoverOptions{MasterName: "bench", SentinelAddrs: sentinels, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond, WriteTimeout: 500 * time.Millisecond, ContextTimeoutEnabled: true, MaxRetries: -1, PoolSize: 32})
	defer fc.Close()
	var mu sync.Mutex
	var acks, writes []time.Time
	var n atomic.Int64
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; wctx.Err() == nil; i++ {
				k := fmt.Sprintf("s:%d:%d", g, i)
				err := fc.Set(wctx, k, i, 0).Err()
				var got int64
				if err == nil {
					mu.Lock()
					writes = append(writes, time.Now())
					mu.Unlock()
					got, err = fc.Wait(wctx, 1, 500*time.Millisecond).Result()
				}
				if err == nil && got >= 1 {
					now := time.Now()
					mu.Lock()
					acks = append(acks, now)
					mu.Unlock()
					n.Add(1)
				} else {
					time.Sleep(10 * time.Millisecond)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}()
	}
	defer func() { stop(); wg.Wait() }()
	current := func() (string, error) {
		c := redis.NewSentinelClient(&redis.Options{Addr: sentinels[0], DialTimeout: time.Second, ReadTimeout: time.Second})
		defer c.Close()
		a, err := c.GetMasterAddrByName(ctx, "bench").Result()
		if err != nil {
			return "", err
		}
		return net.JoinHostPort(a[0], a[1]), nil
	}
	time.Sleep(3 * time.Second) // sentinels discover the replicas and each other
	for i := 0; i < o.Runs; i++ {
		r := SentinelRun{N: i + 1}
		addr, err := current()
		node := nodes[addr]
		if err != nil || node == nil {
			r.Err = fmt.Sprintf("current primary %q unknown: %v", addr, err)
			res.Runs = append(res.Runs, r)
			continue
		}
		r.Kill = time.Now()
		if err := node.Kill(); err != nil {
			r.Err = err.Error()
			res.Runs = append(res.Runs, r)
			continue
		}
		deadline := time.Now().Add(o.Period + 20*time.Second)
		if o.HostGone {
			deadline = time.Now().Add(o.Window)
		}
		for (r.FirstAck.IsZero() || (o.HostGone && time.Now().Before(deadline))) && time.Now().Before(deadline) {
			mu.Lock()
			for _, a := range acks {
				if a.After(r.Kill) && (r.FirstAck.IsZero() || a.Before(r.FirstAck)) {
					r.FirstAck = a
				}
			}
			for _, a := range writes {
				if a.After(r.Kill) && (r.FirstWrite.IsZero() || a.Before(r.FirstWrite)) {
					r.FirstWrite = a
				}
			}
			acks, writes = acks[:0], writes[:0]
			mu.Unlock()
			time.Sleep(20 * time.Millisecond)
		}
		if r.FirstAck.IsZero() {
			r.Err = "no acknowledged write after the kill"
			if o.HostGone {
				r.Err = fmt.Sprintf("no write acknowledged by a replica within %s of the kill (the host is gone: no replica left)", o.Window)
			}
		}
		// The old primary comes back (empty): Sentinel turns it into a replica.
		if err := node.Restart(ctx, true); err != nil {
			r.Err = strings.TrimSpace(r.Err + " restart: " + err.Error())
		}
		res.Runs = append(res.Runs, r)
		time.Sleep(o.Period)
	}
	res.Acked = n.Load()
	return res, nil
}

// Compare renders Heartline's median against Sentinel's, measured in the same run.
func Compare(h Result, s SentinelResult, downAfter time.Duration) string {
	var b strings.Builder
	ht, _, hn := h.Median()
	st, sn := s.Median()
	fmt.Fprintf(&b, "| system | median kill -9 → first acknowledged write on the new primary | runs |\n| --- | --- | --- |\n")
	fmt.Fprintf(&b, "| Heartline (lazarus, %s) | %s | %d |\n", h.Detection, fmtDur(ht), hn)
	sentinel := fmtDur(st)
	if sn == 0 {
		sentinel = "never (no write acknowledged by a replica)"
	}
	fmt.Fprintf(&b, "| Redis Sentinel (3 sentinels, quorum 2, down-after %s, go-redis failover client) | %s | %d |\n", downAfter, sentinel, sn)
	var one []time.Duration
	for _, r := range s.Runs {
		if !r.FirstWrite.IsZero() {
			one = append(one, r.FirstWrite.Sub(r.Kill))
		}
	}
	if len(one) > 0 && sn < len(s.Runs) {
		fmt.Fprintf(&b, "| Redis Sentinel, first SET accepted on one node only (WAIT 1 saw no replica; lost if that node fails next) | %s | %d |\n", fmtDur(median(one)), len(one))
	}
	if ht > 0 && st > 0 {
		fmt.Fprintf(&b, "\nSentinel / Heartline: %.1fx\n", float64(st)/float64(ht))
	}
	for _, r := range s.Runs {
		if r.Err != "" {
			fmt.Fprintf(&b, "sentinel run %d: %s\n", r.N, r.Err)
		}
	}
	return b.String()
}
