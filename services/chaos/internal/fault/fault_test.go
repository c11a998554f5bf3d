package fault_test

import (
	"context"
	"errors"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/driver"
	"github.com/heartline/heartline/services/chaos/internal/driver/local"
	"github.com/heartline/heartline/services/chaos/internal/fault"
	"github.com/heartline/heartline/services/chaos/internal/netfault"
	"github.com/heartline/heartline/services/chaos/internal/target"
	"github.com/heartline/heartline/shared/proc"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/redisproc"
	"github.com/heartline/heartline/shared/redistest"
)

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func newDriver(t *testing.T, delay time.Duration) *local.Driver {
	d := local.New(local.Options{RedisRestartDelay: delay, Poll: 20 * time.Millisecond, Log: zerolog.Nop()})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { d.Supervise(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return d
}

func nodeTarget(n *redistest.Node, role string) target.Target {
	return target.Target{Kind: target.Node, Shard: "s1", Role: role, Addr: n.Addr()}
}

func build(t *testing.T, kind fault.Kind, params map[string]string, dur time.Duration, tg target.Target, deps fault.Deps) fault.Fault {
	t.Helper()
	info, err := fault.Lookup(kind)
	if err != nil {
		t.Fatal(err)
	}
	p, err := info.CheckParams(params)
	if err != nil {
		t.Fatal(err)
	}
	f, err := fault.Build(fault.Spec{Kind: kind, Params: p, Duration: dur, AttackID: "t" + strings.ReplaceAll(t.Name(), "/", "-")}, tg, deps)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func ping(ctx context.Context, addr string, timeout time.Duration) error {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: timeout, ReadTimeout: timeout, ContextTimeoutEnabled: true, PoolSize: 1})
	defer c.Close()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.Ping(ctx).Err()
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	redistest.WaitFor(t, 30*time.Second, what, cond)
}

func TestKillIsRestartedByTheSupervisorEmpty(t *testing.T) {
	ctx := ctxT(t)
	n := redistest.Start(t, redisproc.Config{Name: "kill"})
	d := newDriver(t, 300*time.Millisecond)
	d.AddRedis(n.Addr(), local.NewRedis(n.Process))
	c := n.Client()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	pid := n.PID()
	f := build(t, fault.Kill, nil, 0, nodeTarget(n, "primary"), fault.Deps{Driver: d})
	if err := f.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if n.Running() {
		t.Fatal("the node still runs after kill -9")
	}
	waitFor(t, "the supervisor to start the node again", func() bool { return n.Running() && ping(ctx, n.Addr(), time.Second) == nil })
	if n.PID() == pid {
		t.Fatal("same pid after a restart")
	}
	if got := c.Exists(ctx, "k").Val(); got != 0 {
		t.Fatalf("persistence is off: the restarted node must be empty, has k=%d", got)
	}
	if err := f.Recover(ctx); err != nil {
		t.Fatalf("recover of a running node: %v", err)
	}
}

func TestKillWithoutRestartUntilRecovered(t *testing.T) {
	ctx := ctxT(t)
	n := redistest.Start(t, redisproc.Config{Name: "never"})
	d := newDriver(t, 10*time.Millisecond)
	d.AddRedis(n.Addr(), local.NewRedis(n.Process))
	f := build(t, fault.Kill, map[string]string{"restart_after": "never"}, 0, nodeTarget(n, "primary"), fault.Deps{Driver: d})
	if err := f.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	// Many supervisor polls pass; it must keep off.
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		if n.Running() {
			t.Fatal("restart_after=never: the supervisor started the node")
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err := f.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ping(ctx, n.Addr(), 2*time.Second); err != nil {
		t.Fatalf("after recovery: %v", err)
	}
}

func TestKillImmediateRestartAndTerminate(t *testing.T) {
	ctx := ctxT(t)
	n := redistest.Start(t, redisproc.Config{Name: "imm"})
	d := newDriver(t, time.Hour) // only an explicit immediate restart can bring it back
	d.AddRedis(n.Addr(), local.NewRedis(n.Process))
	f := build(t, fault.Kill, map[string]string{"restart_after": "0s"}, 0, nodeTarget(n, "primary"), fault.Deps{Driver: d})
	if err := f.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "an immediate restart", func() bool { return ping(ctx, n.Addr(), time.Second) == nil })

	f = build(t, fault.Terminate, map[string]string{"restart_after": "never"}, 0, nodeTarget(n, "primary"), fault.Deps{Driver: d})
	if err := f.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if n.Running() {
		t.Fatal("SIGTERM: node still running")
	}
	if err := f.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if !n.Running() {
		t.Fatal("not running after recovery")
	}
}

func TestPauseAndResume(t *testing.T) {
	ctx := ctxT(t)
	n := redistest.Start(t, redisproc.Config{Name: "pause"})
	d := newDriver(t, 100*time.Millisecond)
	d.AddRedis(n.Addr(), local.NewRedis(n.Process))
	f := build(t, fault.Pause, nil, time.Second, nodeTarget(n, "primary"), fault.Deps{Driver: d})
	if err := f.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ping(ctx, n.Addr(), 300*time.Millisecond); err == nil {
		t.Fatal("a paused node answered PING")
	}
	if !n.Running() {
		t.Fatal("a paused node counts as running (the supervisor must not restart it)")
	}
	if err := f.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if err := ping(ctx, n.Addr(), 2*time.Second); err != nil {
		t.Fatalf("after SIGCONT: %v", err)
	}
}

func TestRestartWithDataAndEmpty(t *testing.T) {
	ctx := ctxT(t)
	n := redistest.Start(t, redisproc.Config{Name: "aof", Directives: [][2]string{{"appendonly", "yes"}, {"appendfsync", "always"}}})
	d := newDriver(t, time.Hour)
	d.AddRedis(n.Addr(), local.NewRedis(n.Process))
	c := n.Client()
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	tg := nodeTarget(n, "primary")
	f := build(t, fault.Restart, map[string]string{"delay": "50ms"}, 0, tg, fault.Deps{Driver: d})
	if err := f.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.Get(ctx, "k").Val(); got != "v" {
		t.Fatalf("restart with data: k=%q", got)
	}
	f = build(t, fault.Restart, map[string]string{"wipe": "true"}, 0, tg, fault.Deps{Driver: d})
	if err := f.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.Exists(ctx, "k").Val(); got != 0 {
		t.Fatal("restart with wipe: the node still has its data")
	}
}

func TestRestartWithWrongConfigAndRecovery(t *testing.T) {
	ctx := ctxT(t)
	n := redistest.Start(t, redisproc.Config{Name: "cfg", Directives: [][2]string{{"min-replicas-to-write", "1"}}})
	d := newDriver(t, time.Hour)
	d.AddRedis(n.Addr(), local.NewRedis(n.Process))
	c := n.Client()
	if err := c.Set(ctx, "k", "v", 0).Err(); err == nil || !strings.Contains(err.Error(), "NOREPLICAS") {
		t.Fatalf("declared config: a primary without replicas must refuse writes, got %v", err)
	}
	f := build(t, fault.RestartWrongConfig, map[string]string{"config": "no-min-replicas"}, 0, nodeTarget(n, "primary"), fault.Deps{Driver: d})
	if err := f.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if err := c.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("wrong config (no min-replicas-to-write): the write should pass, got %v", err)
	}
	if err := f.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.ConfigGet(ctx, "min-replicas-to-write").Val()["min-replicas-to-write"]; got != "1" {
		t.Fatalf("after recovery min-replicas-to-write=%q", got)
	}
	conf, err := local.ReadConf(n.ConfigPath())
	if err != nil || conf["min-replicas-to-write"] != "1" {
		t.Fatalf("config file not restored: %v %v", conf["min-replicas-to-write"], err)
	}
	if err := c.Set(ctx, "k", "v", 0).Err(); err == nil {
		t.Fatal("after recovery writes must be refused again")
	}

	f = build(t, fault.RestartWrongConfig, map[string]string{"config": "custom", "directives": "maxmemory-policy allkeys-lru"}, 0, nodeTarget(n, "primary"), fault.Deps{Driver: d})
	if err := f.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if got := c.ConfigGet(ctx, "maxmemory-policy").Val()["maxmemory-policy"]; got != "allkeys-lru" {
		t.Fatalf("custom directive not applied: %q", got)
	}
}

func TestShutdownNoSave(t *testing.T) {
	ctx := ctxT(t)
	n := redistest.Start(t, redisproc.Config{Name: "shut"})
	d := newDriver(t, time.Hour)
	d.AddRedis(n.Addr(), local.NewRedis(n.Process))
	f := build(t, fault.ShutdownNoSave, map[string]string{"restart_after": "200ms"}, 0, nodeTarget(n, "primary"), fault.Deps{Driver: d})
	if err := f.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the node to exit", func() bool { return !n.Running() })
	waitFor(t, "the supervisor to restart it (restart_after 200ms)", func() bool { return ping(ctx, n.Addr(), time.Second) == nil })
	if err := f.Recover(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestClientPause(t *testing.T) {
	ctx := ctxT(t)
	n := redistest.Start(t, redisproc.Config{Name: "cpause"})
	f := build(t, fault.ClientPause, map[string]string{"mode": "write"}, time.Minute, nodeTarget(n, "primary"), fault.Deps{})
	if err := f.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	c := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1, ReadTimeout: 300 * time.Millisecond, ContextTimeoutEnabled: true})
	defer c.Close()
	if err := c.Set(ctx, "k", "v", 0).Err(); err == nil {
		t.Fatal("a write passed during CLIENT PAUSE WRITE")
	}
	if err := c.Get(ctx, "k").Err(); err != nil && !errors.Is(err, redis.Nil) {
		t.Fatalf("reads must pass during CLIENT PAUSE WRITE: %v", err)
	}
	if err := f.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if err := n.Client().Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatalf("after CLIENT UNPAUSE: %v", err)
	}
}

func TestResyncStormForcesFullSyncs(t *testing.T) {
	ctx := ctxT(t)
	sh := redistest.StartShard(t, "storm", 2)
	pc := sh.Primary.Client()
	for i := 0; i < 100; i++ {
		pc.Set(ctx, "k"+string(rune('a'+i%26)), i, 0)
	}
	before := syncFull(t, ctx, pc)
	for i, r := range sh.Replicas {
		f := build(t, fault.ResyncStorm, nil, 0, target.Target{Kind: target.Node, Shard: "s1", Role: "replica", Addr: r.Addr()}, fault.Deps{})
		if err := f.Apply(ctx); err != nil {
			t.Fatalf("replica %d: %v", i, err)
		}
	}
	waitFor(t, "two more full syncs on the primary", func() bool { return syncFull(t, ctx, pc) >= before+2 })
	for _, r := range sh.Replicas {
		waitFor(t, "replica back in sync", func() bool { i := r.Info(); return i.LinkUp && !i.SyncInProgress })
	}
	// Refused on a primary.
	f := build(t, fault.ResyncStorm, nil, 0, target.Target{Kind: target.Node, Shard: "s1", Role: "replica", Addr: sh.Primary.Addr()}, fault.Deps{})
	if err := f.Apply(ctx); !errors.Is(err, fault.ErrBadTarget) {
		t.Fatalf("resync of a node that is a primary: want ErrBadTarget, got %v", err)
	}
	// Refused on a parked replica.
	r := sh.Replicas[0].Client()
	if err := r.SlaveOf(ctx, redisinfo.DefaultPark.Host, "1").Err(); err != nil {
		t.Fatal(err)
	}
	f = build(t, fault.ResyncStorm, nil, 0, target.Target{Kind: target.Node, Shard: "s1", Role: "replica", Addr: sh.Replicas[0].Addr()}, fault.Deps{})
	if err := f.Apply(ctx); err == nil || !strings.Contains(err.Error(), "parked") {
		t.Fatalf("resync of a parked replica: %v", err)
	}
}

func syncFull(t *testing.T, ctx context.Context, c *redis.Client) int64 {
	s, err := c.Info(ctx, "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	n, _ := redisinfo.Parse("role:master\n" + s)
	var v int64
	for k, x := range n.Raw {
		if k == "sync_full" {
			for _, ch := range x {
				v = v*10 + int64(ch-'0')
			}
		}
	}
	return v
}

func TestLoadSpikeIsBoundedAndCleanedUp(t *testing.T) {
	ctx := ctxT(t)
	n := redistest.Start(t, redisproc.Config{Name: "spike"})
	tg := nodeTarget(n, "primary")
	f := build(t, fault.LoadSpike, map[string]string{"rate": "2000", "clients": "4", "value_bytes": "100", "max_items": "50"}, time.Minute, tg, fault.Deps{})
	if err := f.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	c := n.Client()
	key := "heartline:chaos:spike:t" + t.Name()
	waitFor(t, "the spike to fill its list", func() bool { return c.LLen(ctx, key).Val() >= 50 })
	for i := 0; i < 5; i++ {
		if l := c.LLen(ctx, key).Val(); l > 50 {
			t.Fatalf("list grew past max_items: %d", l)
		}
		time.Sleep(20 * time.Millisecond)
	}
	if ttl := c.PTTL(ctx, key).Val(); ttl <= 0 {
		t.Fatalf("the filler key must expire by itself, ttl %v", ttl)
	}
	if err := f.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if c.Exists(ctx, key).Val() != 0 {
		t.Fatal("filler key left behind")
	}
	st := f.(fault.Statser).Stats()
	if st["writes"] == "0" {
		t.Fatalf("no writes counted: %v", st)
	}
}

func TestNetworkFaultsThroughToxiproxy(t *testing.T) {
	ctx := ctxT(t)
	n := redistest.Start(t, redisproc.Config{Name: "net"})
	links := netfault.New(zerolog.Nop())
	t.Cleanup(links.Close)
	addr, err := links.Add("ratequeue", "shard", "s1", "", n.Addr())
	if err != nil {
		t.Fatal(err)
	}
	tg := target.Target{Kind: target.Link, Link: "ratequeue->shard@s1", Shard: "s1"}
	deps := fault.Deps{Links: links}
	if err := ping(ctx, addr, time.Second); err != nil {
		t.Fatalf("through the proxy with no fault: %v", err)
	}

	t.Run("partition blackhole", func(t *testing.T) {
		f := build(t, fault.Partition, nil, 0, tg, deps)
		if err := f.Apply(ctx); err != nil {
			t.Fatal(err)
		}
		if err := ping(ctx, addr, 300*time.Millisecond); err == nil {
			t.Fatal("PING passed a blackholed link")
		}
		if err := f.Recover(ctx); err != nil {
			t.Fatal(err)
		}
		if err := ping(ctx, addr, 2*time.Second); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	})
	t.Run("partition refuse", func(t *testing.T) {
		f := build(t, fault.Partition, map[string]string{"mode": "refuse"}, 0, tg, deps)
		if err := f.Apply(ctx); err != nil {
			t.Fatal(err)
		}
		err := ping(ctx, addr, time.Second)
		if err == nil || !strings.Contains(err.Error(), "refused") {
			t.Fatalf("want connection refused, got %v", err)
		}
		if err := f.Recover(ctx); err != nil {
			t.Fatal(err)
		}
		if err := ping(ctx, addr, 2*time.Second); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	})
	t.Run("latency", func(t *testing.T) {
		f := build(t, fault.Latency, map[string]string{"latency": "150ms", "jitter": "10ms"}, 0, tg, deps)
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, PoolSize: 1, ReadTimeout: 5 * time.Second})
		defer c.Close()
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := f.Apply(ctx); err != nil {
			t.Fatal(err)
		}
		start := time.Now()
		if err := c.Ping(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		// Lower bound only: both directions add 150 ms +/- 10 ms.
		if rtt := time.Since(start); rtt < 250*time.Millisecond {
			t.Fatalf("round trip %v with 150ms latency each way", rtt)
		}
		if err := f.Recover(ctx); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		f := build(t, fault.Reset, nil, 0, tg, deps)
		if err := f.Apply(ctx); err != nil {
			t.Fatal(err)
		}
		if err := ping(ctx, addr, 2*time.Second); err == nil {
			t.Fatal("PING passed a link that resets connections")
		}
		if err := f.Recover(ctx); err != nil {
			t.Fatal(err)
		}
		if err := ping(ctx, addr, 2*time.Second); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	})
	t.Run("bandwidth", func(t *testing.T) {
		if err := n.Client().Set(ctx, "big", strings.Repeat("x", 100<<10), 0).Err(); err != nil {
			t.Fatal(err)
		}
		f := build(t, fault.Bandwidth, map[string]string{"rate_kbps": "100", "direction": "downstream"}, 0, tg, deps)
		if err := f.Apply(ctx); err != nil {
			t.Fatal(err)
		}
		c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, ReadTimeout: 10 * time.Second})
		defer c.Close()
		start := time.Now()
		if err := c.Get(ctx, "big").Err(); err != nil {
			t.Fatal(err)
		}
		if took := time.Since(start); took < 700*time.Millisecond {
			t.Fatalf("100 KiB at 100 KB/s took %v", took)
		}
		if err := f.Recover(ctx); err != nil {
			t.Fatal(err)
		}
	})
}

func TestServiceProcessFaults(t *testing.T) {
	ctx := ctxT(t)
	sleep, err := exec.LookPath("sleep")
	if err != nil {
		t.Fatal(err)
	}
	p := proc.New(proc.Spec{Name: "ratequeue-1", Path: sleep, Args: []string{"300"}})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	d := newDriver(t, time.Hour)
	d.AddService("ratequeue", 1, &local.Service{P: p})
	insts, _ := d.Instances(ctx, "ratequeue")
	if len(insts) != 1 || insts[0].Name() != "ratequeue/1" {
		t.Fatalf("instances: %v", insts)
	}
	tg := insts[0]
	f := build(t, fault.Kill, nil, 0, tg, fault.Deps{Driver: d})
	if err := f.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	if p.Running() {
		t.Fatal("killed service restarted although services are not supervised by default")
	}
	if err := f.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	if !p.Running() {
		t.Fatal("service not running after recovery")
	}
	// A process known only by PID: signals work, a restart is refused.
	cmd := exec.Command(sleep, "300")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go cmd.Wait()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	d.AddService("alerter", 1, &local.PID{Label: "alerter", Pid: cmd.Process.Pid})
	at := target.Target{Kind: target.Service, Service: "alerter", Instance: 1}
	pf := build(t, fault.Pause, nil, time.Second, at, fault.Deps{Driver: d})
	if err := pf.Apply(ctx); err != nil {
		t.Fatal(err)
	}
	if err := pf.Recover(ctx); err != nil {
		t.Fatal(err)
	}
	rf := build(t, fault.Restart, nil, 0, at, fault.Deps{Driver: d})
	if err := rf.Apply(ctx); !errors.Is(err, driver.ErrUnsupported) {
		t.Fatalf("restart of a bare PID: want ErrUnsupported, got %v", err)
	}
}
