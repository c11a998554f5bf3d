package alerter

import (
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/stream"
)

// probeAgent is a minimal stand-in for the heartbeat agent (services/agent, which this
// module cannot import), doing at the event level what the agent does: every interval
// it PINGs the primary with a short timeout, reads INFO of the primary and of its own
// replica, and publishes a Heartbeat. Like the agent it holds a watch connection to the
// primary (a blocking command) and probes at once when it breaks; it freezes its replica
// (REPLICAOF 127.0.0.1 1, the park address) the moment the primary fails, unfreezes it when a partial
// resync is certain, and flags PRIMARY_DATA_REGRESSED when the primary came back with a
// new replication id and less data than the frozen replica.
type probeAgent struct {
	Name     string
	Shard    string
	Primary  string // the primary's address as the topology names it
	ProbeVia string // where to reach it (a proxy in a partition test); default Primary
	Replica  string
	Pub      stream.Publisher
	Interval time.Duration // 250 ms
	Timeout  time.Duration // 150 ms

	start time.Time
	seq   uint64

	mu            sync.Mutex
	primary       *redis.Client
	frozen        bool
	healthySince  time.Time
	lastRunID     string
	published     atomic.Int64
	publishErrors atomic.Int64
}

func (a *probeAgent) defaults() {
	if a.Interval == 0 {
		a.Interval = 250 * time.Millisecond
	}
	if a.Timeout == 0 {
		a.Timeout = 150 * time.Millisecond
	}
	if a.ProbeVia == "" {
		a.ProbeVia = a.Primary
	}
	a.start = time.Now().UTC()
}

// run probes until ctx is done.
func (a *probeAgent) run(ctx context.Context) {
	a.defaults()
	replica := redis.NewClient(&redis.Options{Addr: a.Replica, MaxRetries: -1, DialTimeout: a.Timeout,
		ReadTimeout: a.Timeout, WriteTimeout: a.Timeout, PoolSize: 1, ContextTimeoutEnabled: true, DialerRetries: 1})
	defer replica.Close()
	defer func() {
		a.mu.Lock()
		if a.primary != nil {
			_ = a.primary.Close()
		}
		a.mu.Unlock()
	}()
	wake := make(chan struct{}, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); a.watch(ctx, wake) }()
	defer wg.Wait()
	t := time.NewTicker(a.Interval)
	defer t.Stop()
	for {
		a.probe(ctx, replica)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
		}
	}
}

// watch holds a blocking command on the primary; when its connection breaks, the agent
// freezes its replica and probes at once.
func (a *probeAgent) watch(ctx context.Context, wake chan<- struct{}) {
	for ctx.Err() == nil {
		c := redis.NewClient(&redis.Options{Addr: a.ProbeVia, MaxRetries: -1, DialTimeout: a.Timeout,
			ReadTimeout: -1, PoolSize: 1, DialerRetries: 1})
		stop := context.AfterFunc(ctx, func() { _ = c.Close() }) // unblocks the read
		err := c.BLPop(ctx, 0, "heartline:watch:"+a.Name).Err()
		stop()
		_ = c.Close()
		if ctx.Err() != nil {
			return
		}
		if err != nil {
			a.freeze(ctx, "watch connection broke: "+err.Error())
			select {
			case wake <- struct{}{}:
			default:
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(a.Interval):
		}
	}
}

func (a *probeAgent) freeze(ctx context.Context, _ string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.frozen {
		return
	}
	c := redis.NewClient(&redis.Options{Addr: a.Replica, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: time.Second,
		PoolSize: 1, DialerRetries: 1})
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	if err := c.SlaveOf(cctx, redisinfo.DefaultPark.Host, strconv.Itoa(redisinfo.DefaultPark.Port)).Err(); err == nil {
		a.frozen = true
		a.healthySince = time.Time{}
	}
}

func (a *probeAgent) primaryClient() *redis.Client {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.primary == nil {
		a.primary = redis.NewClient(&redis.Options{Addr: a.ProbeVia, MaxRetries: -1, DialTimeout: a.Timeout,
			ReadTimeout: a.Timeout, WriteTimeout: a.Timeout, PoolSize: 1, ContextTimeoutEnabled: true, DialerRetries: 1})
	}
	return a.primary
}

// dropPrimaryClient discards the connection after a failure, so that the next probe
// dials afresh (go-redis would otherwise throttle re-dialing).
func (a *probeAgent) dropPrimaryClient() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.primary != nil {
		_ = a.primary.Close()
		a.primary = nil
	}
}

func (a *probeAgent) probe(ctx context.Context, replica *redis.Client) {
	probedAt := time.Now().UTC()
	hb := &events.Heartbeat{AgentStart: a.start, Interval: a.Interval,
		Replica: events.ReplicaState{Addr: a.Replica, LastIOSeconds: -1},
		Primary: events.PrimaryProbe{Addr: a.Primary}}
	pctx, cancel := context.WithTimeout(ctx, a.Timeout)
	began := time.Now()
	c := a.primaryClient()
	err := c.Ping(pctx).Err()
	var pinfo redisinfo.Node
	if err == nil {
		pinfo, err = redisinfo.Read(pctx, c)
	}
	cancel()
	if ctx.Err() != nil {
		return
	}
	hb.Primary.Latency = time.Since(began)
	if err != nil {
		hb.Primary.Error = err.Error()
		a.dropPrimaryClient()
		a.freeze(ctx, "primary probe failed")
	} else {
		hb.Primary.OK = !pinfo.Loading
		hb.Primary.RunID, hb.Primary.Role, hb.Primary.Offset, hb.Primary.ReplID = pinfo.RunID, pinfo.Role, pinfo.Offset, pinfo.ReplID
		hb.Primary.Loading, hb.Primary.Keys, hb.Primary.Replicas, hb.Primary.UptimeSec = pinfo.Loading, pinfo.Keys, pinfo.ConnectedReplicas, pinfo.UptimeSec
	}
	rctx, rcancel := context.WithTimeout(ctx, a.Timeout)
	rinfo, rerr := redisinfo.Read(rctx, replica)
	rcancel()
	if rerr != nil {
		hb.Replica.Error = rerr.Error()
	} else {
		hb.Replica.Reachable = true
		hb.Replica.Role, hb.Replica.MasterHost, hb.Replica.MasterPort = rinfo.Role, rinfo.MasterHost, rinfo.MasterPort
		hb.Replica.LinkUp, hb.Replica.LastIOSeconds, hb.Replica.SyncInProgress = rinfo.LinkUp, rinfo.LastIOSeconds, rinfo.SyncInProgress
		hb.Replica.Offset, hb.Replica.ReplID, hb.Replica.ReplID2, hb.Replica.Keys = rinfo.Offset, rinfo.ReplID, rinfo.ReplID2, rinfo.Keys
		if !rinfo.Parked() && rinfo.MasterAddr() == a.Primary && !rinfo.LinkUp && !rinfo.SyncInProgress {
			a.freeze(ctx, "replica link down")
		}
	}
	a.mu.Lock()
	hb.Replica.Frozen = a.frozen
	if hb.Primary.OK {
		if a.lastRunID != "" && hb.Primary.RunID != a.lastRunID {
			hb.Flags = append(hb.Flags, events.FlagPrimaryRestarted)
		}
		a.lastRunID = hb.Primary.RunID
		if hb.Primary.Role == "slave" {
			hb.Flags = append(hb.Flags, events.FlagPrimaryRoleChanged)
		}
	}
	regressed := hb.Primary.OK && rerr == nil && a.frozen && rinfo.Offset > 0 &&
		hb.Primary.ReplID != rinfo.ReplID && hb.Primary.ReplID != rinfo.ReplID2 && hb.Primary.Offset < rinfo.Offset
	if regressed {
		hb.Flags = append(hb.Flags, events.FlagPrimaryDataRegressed)
	}
	// Unfreeze only when a partial resync is certain: same replication id, the primary
	// at or above the replica's offset, for a second.
	canResume := a.frozen && hb.Primary.OK && hb.Primary.Role == "master" && rerr == nil &&
		hb.Primary.ReplID == rinfo.ReplID && hb.Primary.Offset >= rinfo.Offset
	switch {
	case !canResume:
		a.healthySince = time.Time{}
	case a.healthySince.IsZero():
		a.healthySince = time.Now()
	case time.Since(a.healthySince) >= time.Second:
		host, port, _ := net.SplitHostPort(a.Primary)
		uctx, ucancel := context.WithTimeout(ctx, time.Second)
		if replica.SlaveOf(uctx, host, port).Err() == nil {
			a.frozen = false
		}
		ucancel()
	}
	if a.frozen {
		hb.Flags = append(hb.Flags, events.FlagReplicationFrozen)
	}
	a.seq++
	hb.Seq = a.seq
	a.mu.Unlock()

	e := events.New(events.KindHeartbeat, events.Source{Service: "agent", Instance: a.Name}, a.Shard, hb)
	e.Time = probedAt
	b, err := events.Encode(e)
	if err != nil {
		panic(fmt.Sprintf("probe driver built an invalid heartbeat: %v", err))
	}
	if err := a.Pub.Publish(ctx, events.TopicHeartbeats, stream.Message{Key: a.Shard, ID: e.ID, Data: b}); err != nil {
		a.publishErrors.Add(1)
		return
	}
	a.published.Add(1)
}

type quietRedisLog struct{}

func (quietRedisLog) Printf(context.Context, string, ...any) {}

var quietRedis sync.Once

// startAgent runs a probe agent until the test ends.
func startAgent(t *testing.T, a *probeAgent) *probeAgent {
	t.Helper()
	// go-redis logs every failed dial; the probe failures are the point of these tests.
	quietRedis.Do(func() { redis.SetLogger(quietRedisLog{}) })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); a.run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return a
}

// blackhole is a TCP proxy that can drop everything, like a network partition: while
// cut, bytes in either direction are discarded and new connections go nowhere.
type blackhole struct {
	ln       net.Listener
	upstream string
	cut      atomic.Bool
	wg       sync.WaitGroup
	mu       sync.Mutex
	conns    []net.Conn
}

func (b *blackhole) track(c net.Conn) {
	b.mu.Lock()
	b.conns = append(b.conns, c)
	b.mu.Unlock()
}

func (b *blackhole) close() {
	_ = b.ln.Close()
	b.mu.Lock()
	for _, c := range b.conns {
		_ = c.Close()
	}
	b.mu.Unlock()
	b.wg.Wait()
}

func newBlackhole(t *testing.T, upstream string) *blackhole {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &blackhole{ln: ln, upstream: upstream}
	b.wg.Add(1)
	go b.serve()
	t.Cleanup(b.close)
	return b
}

func (b *blackhole) Addr() string { return b.ln.Addr().String() }

func (b *blackhole) serve() {
	defer b.wg.Done()
	for {
		c, err := b.ln.Accept()
		if err != nil {
			return
		}
		b.track(c)
		b.wg.Add(1)
		go func() {
			defer b.wg.Done()
			defer c.Close()
			if b.cut.Load() {
				_, _ = io.Copy(io.Discard, c)
				return
			}
			up, err := net.DialTimeout("tcp", b.upstream, time.Second)
			if err != nil {
				return
			}
			b.track(up)
			defer up.Close()
			done := make(chan struct{}, 2)
			go func() { b.pipe(up, c); done <- struct{}{} }()
			go func() { b.pipe(c, up); done <- struct{}{} }()
			<-done
		}()
	}
}

// pipe copies src to dst, discarding while cut.
func (b *blackhole) pipe(dst, src net.Conn) {
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 && !b.cut.Load() {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}
