package queue_test

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/ratequeue/internal/rqtest"
	"github.com/heartline/heartline/services/ratequeue/queue"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/topology"
)

func newClient(t *testing.T, topo queue.Topology, mod func(*queue.Config)) (*queue.Client, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	cfg := queue.Config{Topology: topo, Metrics: queue.NewMetrics(reg), Log: zerolog.Nop(), DefaultRate: 0, Rates: map[string]float64{},
		OpTimeout: 5 * time.Second}
	if mod != nil {
		mod(&cfg)
	}
	c, err := queue.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c, reg
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// drain dequeues and acks every message of a shard, returning them in delivery order.
func drain(t *testing.T, c *queue.Client, shard string) []*queue.Message {
	t.Helper()
	ctx := ctxT(t, 30*time.Second)
	var got []*queue.Message
	for {
		res, err := c.Dequeue(ctx, queue.DequeueRequest{Shard: shard})
		if err != nil {
			t.Fatal(err)
		}
		if res.Message == nil {
			if res.Ready == 0 && res.InFlight == 0 {
				return got
			}
			time.Sleep(min(res.NextIn, 20*time.Millisecond) + time.Millisecond)
			continue
		}
		got = append(got, res.Message)
		if err := c.Ack(ctx, res.Message.Queue, res.Message.ID); err != nil {
			t.Fatal(err)
		}
	}
}

func TestFIFOPerQueueAndCleanup(t *testing.T) {
	cl := rqtest.Start(t, 1)
	c, _ := newClient(t, cl.Follower, nil)
	ctx := ctxT(t, 30*time.Second)
	want := map[string][]string{}
	for i := 0; i < 40; i++ {
		q := fmt.Sprintf("+1555000%d", i%3)
		res, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: q, Body: []byte(fmt.Sprint("m", i))})
		if err != nil {
			t.Fatal(err)
		}
		if res.Shard != "shard-0" || res.Epoch != 1 || res.Node != cl.Shards[0].Primary.Addr() || false {
			t.Fatalf("enqueue result %+v", res)
		}
		want[q] = append(want[q], res.ID)
	}
	if n, _, err := c.Depth(ctx, "+15550000"); err != nil || n != 14 {
		t.Fatalf("depth %d %v", n, err)
	}
	got := map[string][]string{}
	for _, m := range drain(t, c, "shard-0") {
		if m.Deliveries != 1 {
			t.Fatalf("message %s delivered %d times", m.ID, m.Deliveries)
		}
		got[m.Queue] = append(got[m.Queue], m.ID)
	}
	for q := range want {
		if fmt.Sprint(got[q]) != fmt.Sprint(want[q]) {
			t.Fatalf("queue %s: delivered %v, enqueued %v", q, got[q], want[q])
		}
	}
	st, err := c.Stats(ctx, "shard-0")
	if err != nil || st.ReadyQueues != 0 || st.InFlight != 0 || st.Stored != 0 {
		t.Fatalf("stats after drain: %+v %v", st, err)
	}
	// Drained queues and acked messages leave no keys behind (epoch and counter stay).
	keys, err := cl.Shards[0].Primary.Client().Keys(ctx, "rq:[qm]:*").Result()
	if err != nil || len(keys) != 0 {
		t.Fatalf("left-over keys %v %v", keys, err)
	}
}

func TestRateLimitHeldUnderEightConsumers(t *testing.T) {
	cl := rqtest.Start(t, 1)
	const rate, fast = 25.0, 50.0
	c, _ := newClient(t, cl.Follower, func(cfg *queue.Config) {
		cfg.DefaultRate = rate
		cfg.Rates = map[string]float64{"fast": fast}
	})
	ctx := ctxT(t, 60*time.Second)
	const per = 25
	for i := 0; i < per; i++ {
		for _, q := range []string{"slow", "fast"} {
			if _, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: q, Body: []byte("x")}); err != nil {
				t.Fatal(err)
			}
		}
	}
	var mu sync.Mutex
	ts := map[string][]int64{}
	iv := map[string]int64{}
	var wg sync.WaitGroup
	done := make(chan struct{})
	var once sync.Once
	for w := 0; w < 8; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-done:
					return
				case <-ctx.Done():
					return
				default:
				}
				res, err := c.Dequeue(ctx, queue.DequeueRequest{Shard: "shard-0"})
				if err != nil {
					t.Error(err)
					return
				}
				if res.Message == nil {
					time.Sleep(time.Millisecond) // hammer on purpose: the server must hold the rate
					continue
				}
				m := res.Message
				mu.Lock()
				ts[m.Queue] = append(ts[m.Queue], m.ServerUS)
				iv[m.Queue] = m.IntervalUS
				if len(ts["slow"])+len(ts["fast"]) == 2*per {
					once.Do(func() { close(done) })
				}
				mu.Unlock()
				if err := c.Ack(ctx, m.Queue, m.ID); err != nil {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	if t.Failed() {
		return
	}
	for q, r := range map[string]float64{"slow": rate, "fast": fast} {
		want := int64(1e6 / r)
		if iv[q] != want {
			t.Fatalf("queue %s interval %d µs, want %d", q, iv[q], want)
		}
		s := ts[q]
		if len(s) != per {
			t.Fatalf("queue %s: %d deliveries", q, len(s))
		}
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		for i := 1; i < len(s); i++ {
			if gap := s[i] - s[i-1]; gap < want {
				t.Fatalf("queue %s: deliveries %d and %d only %d µs apart (rate %.0f/s needs %d)", q, i-1, i, gap, r, want)
			}
		}
		t.Logf("queue %s: %d deliveries over %.3f s (rate %.0f/s)", q, len(s), float64(s[len(s)-1]-s[0])/1e6, r)
	}
}

func TestRedeliveryAfterVisibilityTimeout(t *testing.T) {
	cl := rqtest.Start(t, 1)
	c, _ := newClient(t, cl.Follower, func(cfg *queue.Config) {
		cfg.Rates = map[string]float64{"slowq": 0.5} // 2 s between dequeues: room for a loaded machine
	})
	ctx := ctxT(t, 30*time.Second)
	enq, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: "slowq", Body: []byte("hello")})
	if err != nil {
		t.Fatal(err)
	}
	vis := 100 * time.Millisecond
	res, err := c.Dequeue(ctx, queue.DequeueRequest{Shard: "shard-0", Visibility: vis})
	if err != nil || res.Message == nil || res.Message.ID != enq.ID || string(res.Message.Body) != "hello" {
		t.Fatalf("first dequeue %+v %v", res, err)
	}
	first := res.Message
	// Wait until the visibility timeout returned it to its queue while the rate
	// still holds it back: then an ack of the first delivery is refused.
	redistest.WaitFor(t, 10*time.Second, "message back in its queue", func() bool {
		r, err := c.Dequeue(ctx, queue.DequeueRequest{Shard: "shard-0", Visibility: vis})
		if err != nil {
			t.Fatal(err)
		}
		if r.Message != nil {
			t.Fatalf("redelivered before the queue's rate allowed it: %+v (first at %d)", r.Message, first.ServerUS)
		}
		n, _, _ := c.Depth(ctx, "slowq")
		return n == 1
	})
	if err := c.Ack(ctx, "slowq", first.ID); !errors.Is(err, queue.ErrNotInFlight) || queue.CategoryOf(err) != queue.CategoryNotFound {
		t.Fatalf("ack of an expired delivery: %v", err)
	}
	var again *queue.Message
	redistest.WaitFor(t, 10*time.Second, "redelivery", func() bool {
		r, err := c.Dequeue(ctx, queue.DequeueRequest{Shard: "shard-0"})
		if err != nil {
			t.Fatal(err)
		}
		again = r.Message
		return again != nil
	})
	if again.ID != first.ID || again.Deliveries != 2 || again.ServerUS-first.ServerUS < 2000000 {
		t.Fatalf("redelivery %+v after %+v", again, first)
	}
	if err := c.Ack(ctx, "slowq", again.ID); err != nil {
		t.Fatal(err)
	}
	if err := c.Ack(ctx, "slowq", again.ID); err != nil {
		t.Fatalf("a repeated ack must succeed: %v", err)
	}
}

func TestIdempotentEnqueue(t *testing.T) {
	cl := rqtest.Start(t, 1)
	c, _ := newClient(t, cl.Follower, nil)
	ctx := ctxT(t, 30*time.Second)
	a, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: "q", Body: []byte("one"), IdempotencyKey: "req-1"})
	if err != nil || a.Duplicate {
		t.Fatalf("%+v %v", a, err)
	}
	b, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: "q", Body: []byte("two"), IdempotencyKey: "req-1"})
	if err != nil || !b.Duplicate || b.ID != a.ID {
		t.Fatalf("retry with the same key: %+v %v (first %s)", b, err, a.ID)
	}
	// The same explicit id is not stored twice either.
	d1, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: "q", Body: []byte("three"), ID: "fixed-id-1"})
	if err != nil || d1.Duplicate {
		t.Fatal(d1, err)
	}
	d2, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: "q", Body: []byte("three"), ID: "fixed-id-1"})
	if err != nil || !d2.Duplicate {
		t.Fatal(d2, err)
	}
	if n, _, _ := c.Depth(ctx, "q"); n != 2 {
		t.Fatalf("depth %d, want 2", n)
	}
	msgs := drain(t, c, "shard-0")
	if len(msgs) != 2 || string(msgs[0].Body) != "one" || msgs[1].ID != "fixed-id-1" {
		t.Fatalf("delivered %+v", msgs)
	}
	// Bad input is refused at once, categorised.
	for _, req := range []queue.EnqueueRequest{
		{Queue: ""}, {Queue: "has space"}, {Queue: string(make([]byte, 200))},
		{Queue: "q", IdempotencyKey: "bad key"}, {Queue: "q", ID: "bad/id"},
		{Queue: "q", Body: make([]byte, 70<<10)},
	} {
		_, err := c.Enqueue(ctx, req)
		var qe *queue.Error
		if !errors.As(err, &qe) || qe.Category != queue.CategoryInvalid || qe.Attempts != 0 {
			t.Fatalf("%+.40v: want an invalid error, got %v", req, err)
		}
	}
	if _, err := c.Dequeue(ctx, queue.DequeueRequest{Shard: "nope"}); !errors.Is(err, queue.ErrUnknownShard) || queue.CategoryOf(err) != queue.CategoryNotFound {
		t.Fatalf("unknown shard: %v", err)
	}
}

func TestAckReplicaWaitsForReplica(t *testing.T) {
	cl := rqtest.Start(t, 1)
	c, reg := newClient(t, cl.Follower, func(cfg *queue.Config) {
		cfg.WaitTimeout = 200 * time.Millisecond
		cfg.OpTimeout = 1500 * time.Millisecond
	})
	cp, _ := newClient(t, cl.Follower, func(cfg *queue.Config) { cfg.Ack = queue.AckPrimary })
	ctx := ctxT(t, 30*time.Second)
	rep := cl.Shards[0].Replicas[0]
	if err := rep.Pause(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = rep.Resume() })
	_, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: "q", Body: []byte("x"), IdempotencyKey: "k1"})
	var qe *queue.Error
	if !errors.As(err, &qe) || qe.Category != queue.CategoryUnknown || !errors.Is(err, queue.ErrUnknownOutcome) {
		t.Fatalf("enqueue with the replica paused: want unknown outcome, got %v", err)
	}
	if qe.Reason != "not_replicated" && qe.Reason != "timeout" {
		t.Fatalf("reason %q", qe.Reason)
	}
	if v := testutil.ToFloat64(retries(t, reg, "enqueue", "not_replicated")); v < 1 {
		t.Fatalf("not_replicated retries %v", v)
	}
	// ack=primary does not wait.
	if _, err := cp.Enqueue(ctx, queue.EnqueueRequest{Queue: "q", Body: []byte("y")}); err != nil {
		t.Fatalf("ack=primary with the replica paused: %v", err)
	}
	// A pending enqueue completes once the replica is back, and the retry of the
	// first one finds its id: stored once.
	type result struct {
		res queue.EnqueueResult
		err error
	}
	pending := make(chan result, 1)
	go func() {
		c2, _ := newClient(t, cl.Follower, func(cfg *queue.Config) { cfg.WaitTimeout = 200 * time.Millisecond; cfg.OpTimeout = 20 * time.Second })
		r, err := c2.Enqueue(ctx, queue.EnqueueRequest{Queue: "q", Body: []byte("x"), IdempotencyKey: "k1"})
		pending <- result{r, err}
	}()
	select {
	case r := <-pending:
		t.Fatalf("enqueue acknowledged while the replica is paused: %+v %v", r.res, r.err)
	case <-time.After(500 * time.Millisecond):
	}
	if err := rep.Resume(); err != nil {
		t.Fatal(err)
	}
	r := <-pending
	if r.err != nil {
		t.Fatalf("after resume: %v", r.err)
	}
	if n, _, _ := c.Depth(ctx, "q"); n != 2 {
		t.Fatalf("depth %d, want 2 (k1 once, y once)", n)
	}
	// The replica has what was acknowledged.
	if got, _ := rep.Client().Exists(ctx, "rq:m:"+r.res.ID).Result(); got != 1 {
		t.Fatal("acknowledged message is not on the replica")
	}
}

func retries(t *testing.T, reg *prometheus.Registry, op, reason string) prometheus.Collector {
	t.Helper()
	return metricSum(t, reg, "ratequeue_retries_total", map[string]string{"op": op, "reason": reason})
}

// counterSum is the sum of the counter's series whose labels include want, as a
// collector for testutil.ToFloat64.
func metricSum(t *testing.T, reg *prometheus.Registry, name string, want map[string]string) prometheus.Collector {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	v := 0.0
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			l := map[string]string{}
			for _, lp := range m.GetLabel() {
				l[lp.GetName()] = lp.GetValue()
			}
			for k, x := range want {
				if l[k] != x {
					continue series
				}
			}
			v += m.GetCounter().GetValue() + m.GetGauge().GetValue()
		}
	}
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "x"})
	g.Set(v)
	return g
}

func TestIsolatedPrimaryRefusesWrites(t *testing.T) {
	cl := rqtest.Start(t, 1)
	c, _ := newClient(t, cl.Follower, func(cfg *queue.Config) {
		cfg.OpTimeout = 1500 * time.Millisecond
		cfg.WaitTimeout = 200 * time.Millisecond
	})
	ctx := ctxT(t, 30*time.Second)
	if _, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: "q", Body: []byte("x")}); err != nil {
		t.Fatal(err)
	}
	if errs := c.Check(ctx); len(errs) != 0 {
		t.Fatalf("check: %v", errs)
	}
	if err := cl.Shards[0].Replicas[0].Kill(); err != nil {
		t.Fatal(err)
	}
	var last error
	redistest.WaitFor(t, 15*time.Second, "NOREPLICAS", func() bool {
		_, last = c.Enqueue(ctx, queue.EnqueueRequest{Queue: "q", Body: []byte("y")})
		var qe *queue.Error
		return errors.As(last, &qe) && qe.Reason == "noreplicas"
	})
	if !errors.Is(last, queue.ErrUnavailable) || queue.CategoryOf(last) != queue.CategoryUnavailable {
		t.Fatalf("isolated primary: want unavailable, got %v", last)
	}
	if errs := c.Check(ctx); errs["shard-0"] == nil {
		t.Fatal("readiness check passed on an isolated primary")
	}
	// Dequeue is a write too: refused as well, and nothing is lost.
	// (unavailable, or unknown when the deadline cut an attempt short: a dequeue in
	// progress may have taken a message in flight)
	if _, err := c.Dequeue(ctx, queue.DequeueRequest{Shard: "shard-0"}); queue.CategoryOf(err) != queue.CategoryUnavailable && queue.CategoryOf(err) != queue.CategoryUnknown {
		t.Fatalf("dequeue on an isolated primary: %v", err)
	}
	if n, _, err := c.Depth(ctx, "q"); err != nil || n != 1 {
		t.Fatalf("depth %d %v", n, err)
	}
}

// staleTopo serves a fixed map (a client that missed the failover) and reloads from
// the store on Refresh.
type staleTopo struct {
	mu     sync.Mutex
	m      topology.Map
	ch     chan struct{}
	src    topology.Store
	frozen bool
}

func (s *staleTopo) Map() topology.Map {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.m
}
func (s *staleTopo) Changed() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.ch
}
func (s *staleTopo) Refresh(ctx context.Context) error {
	s.mu.Lock()
	frozen := s.frozen
	s.mu.Unlock()
	if frozen {
		return errors.New("store unreachable")
	}
	m, err := s.src.Load(ctx)
	if err != nil {
		return err
	}
	s.set(m)
	return nil
}
func (s *staleTopo) set(m topology.Map) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.m = m
	close(s.ch)
	s.ch = make(chan struct{})
}

func TestRoutingFollowsFailoverAndFences(t *testing.T) {
	cl := rqtest.Start(t, 2)
	c, _ := newClient(t, cl.Follower, nil)
	ctx := ctxT(t, 60*time.Second)
	old := cl.Map()
	// A queue on shard-1.
	q := ""
	for i := 0; q == ""; i++ {
		if sh, _ := old.ShardFor(fmt.Sprint("k", i)); sh.ID == "shard-1" {
			q = fmt.Sprint("k", i)
		}
	}
	before, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: q, Body: []byte("before")})
	if err != nil {
		t.Fatal(err)
	}
	stale := &staleTopo{m: old, ch: make(chan struct{}), src: cl.Topo}
	cs, reg := newClient(t, stale, nil)

	oldP := cl.Shards[1].Primary
	next := cl.Promote(t, 1)
	// The following client switches without a restart.
	redistest.WaitFor(t, 10*time.Second, "follower sees epoch 2", func() bool {
		sh, _ := cl.Follower.Shard("shard-1")
		return sh.Epoch == 2
	})
	after, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: q, Body: []byte("after")})
	if err != nil {
		t.Fatal(err)
	}
	if after.Node != next.Primary || after.Epoch != 2 {
		t.Fatalf("after failover the enqueue went to %s epoch %d, want %s epoch 2", after.Node, after.Epoch, next.Primary)
	}
	// The old primary is now a replica of the new one; the epoch replicated to it.
	orc := oldP.Client()
	redistest.WaitFor(t, 15*time.Second, "old primary replicates epoch 2", func() bool {
		v, _ := orc.Get(ctx, queue.EpochKey).Result()
		return v == "2"
	})
	// A client that missed the change routes to the old node with epoch 1, is
	// refused with STALEEPOCH, refreshes and lands on the new primary.
	res, err := cs.Enqueue(ctx, queue.EnqueueRequest{Queue: q, Body: []byte("stale client")})
	if err != nil {
		t.Fatal(err)
	}
	if res.Node != next.Primary || res.Epoch != 2 {
		t.Fatalf("stale client wrote to %s epoch %d", res.Node, res.Epoch)
	}
	if v := testutil.ToFloat64(retries(t, reg, "enqueue", "staleepoch_newer")); v < 1 {
		t.Fatalf("no STALEEPOCH retry recorded")
	}
	// Having seen epoch 2, it never routes with epoch 1 again, even if its
	// topology goes back (and the store is unreachable).
	stale.mu.Lock()
	stale.frozen = true
	stale.mu.Unlock()
	stale.set(old)
	c2 := func() error {
		cctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
		defer cancel()
		_, err := cs.Enqueue(cctx, queue.EnqueueRequest{Queue: q, Body: []byte("must not be written")})
		return err
	}()
	var qe *queue.Error
	if !errors.As(c2, &qe) || qe.Reason != "stale_topology" || qe.Category != queue.CategoryUnavailable {
		t.Fatalf("write with an older topology than seen: %v", c2)
	}
	// Everything acknowledged is on the new primary, in order.
	msgs := drain(t, c, "shard-1")
	var bodies []string
	for _, m := range msgs {
		bodies = append(bodies, string(m.Body))
	}
	if fmt.Sprint(bodies) != "[before after stale client]" {
		t.Fatalf("delivered %v (first id %s)", bodies, before.ID)
	}
	// An unstamped node refuses every write (a missing epoch counts as 0).
	if err := cl.Shards[0].Primary.Client().Del(ctx, queue.EpochKey).Err(); err != nil {
		t.Fatal(err)
	}
	// The op timeout leaves room for the first attempt's dial and script load on a
	// loaded machine (300 ms timed out under -race in CI); the answer is the same.
	short, _ := newClient(t, cl.Follower, func(cfg *queue.Config) { cfg.OpTimeout = 2 * time.Second })
	_, err = short.Dequeue(ctx, queue.DequeueRequest{Shard: "shard-0"})
	if !errors.As(err, &qe) || qe.Reason != "staleepoch_older" {
		t.Fatalf("unstamped node: %v", err)
	}
}

// A shard lazarus marked degraded (durability degrade: no replica in sync, primary at
// min-replicas-to-write 0) takes writes without waiting for a replica and says so
// (Replicated false, ratequeue_unreplicated_writes_total); once the topology clears
// degraded, writes wait for the replica again.
func TestDegradedShardAcknowledgesOnThePrimaryAndSaysSo(t *testing.T) {
	cl := rqtest.Start(t, 1)
	c, reg := newClient(t, cl.Follower, func(cfg *queue.Config) {
		cfg.WaitTimeout = 200 * time.Millisecond
		cfg.OpTimeout = 1500 * time.Millisecond
	})
	ctx := ctxT(t, 30*time.Second)
	res, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: "q", Body: []byte("a")})
	if err != nil || !res.Replicated {
		t.Fatalf("healthy shard: %+v %v, want replicated", res, err)
	}
	// The replica dies; lazarus (here: the test) degrades the shard.
	prim, rep := cl.Shards[0].Primary, cl.Shards[0].Replicas[0]
	if err := rep.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := prim.Client().ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}
	setDegraded(t, cl, true)
	redistest.WaitFor(t, 5*time.Second, "client sees the shard degraded", func() bool { return cl.Map().Shards[0].Degraded })
	for i := 0; i < 20; i++ {
		res, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: "q", Body: []byte(fmt.Sprint(i))})
		if err != nil || res.Replicated {
			t.Fatalf("degraded shard, enqueue %d: %+v %v; want acknowledged, not replicated", i, res, err)
		}
	}
	d, err := c.Dequeue(ctx, queue.DequeueRequest{Shard: "shard-0"})
	if err != nil || d.Message == nil || d.Message.Replicated {
		t.Fatalf("degraded shard, dequeue: %+v %v", d, err)
	}
	if v := testutil.ToFloat64(unreplicated(t, reg, "enqueue", "shard-0")); v != 20 {
		t.Fatalf("ratequeue_unreplicated_writes_total{enqueue} = %v, want 20", v)
	}
	if v := testutil.ToFloat64(retries(t, reg, "enqueue", "not_replicated")); v != 0 {
		t.Fatalf("a degraded shard's writes waited for a replica: %v not_replicated retries", v)
	}
	// Back to normal: min-replicas-to-write restored, degraded cleared; with the replica
	// still gone, writes are refused again (strict), never acknowledged unreplicated.
	if err := prim.Client().ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	setDegraded(t, cl, false)
	redistest.WaitFor(t, 5*time.Second, "client sees the shard replicated", func() bool { return !cl.Map().Shards[0].Degraded })
	if res, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: "q", Body: []byte("z")}); err == nil {
		t.Fatalf("strict again, no replica: acknowledged %+v", res)
	}
}

func setDegraded(t *testing.T, cl *rqtest.Cluster, on bool) {
	t.Helper()
	ctx := context.Background()
	cur, rev, err := cl.Topo.Get(ctx, "shard-0")
	if err != nil {
		t.Fatal(err)
	}
	next := cur
	next.Degraded = on
	if _, err := cl.Topo.Annotate(ctx, cur, rev, next); err != nil {
		t.Fatal(err)
	}
}

func unreplicated(t *testing.T, reg *prometheus.Registry, op, shard string) prometheus.Collector {
	t.Helper()
	return metricSum(t, reg, "ratequeue_unreplicated_writes_total", map[string]string{"op": op, "shard": shard})
}

// One shard's primary dies and nothing fails it over: after BreakerAfter its calls
// fail at once (ErrShardDown) instead of holding the caller for the op timeout, the
// other shard's calls never notice, and once the node is back a probe closes the
// circuit.
func TestDeadShardFailsFastAndRecovers(t *testing.T) {
	cl := rqtest.Start(t, 2)
	c, reg := newClient(t, cl.Follower, func(cfg *queue.Config) {
		cfg.OpTimeout, cfg.BreakerAfter, cfg.BreakerProbe = 10*time.Second, 500*time.Millisecond, 200*time.Millisecond
	})
	ctx := ctxT(t, 60*time.Second)
	m := cl.Map()
	queueOn := func(shard string) string {
		for i := 0; ; i++ {
			q := fmt.Sprintf("q%d", i)
			if sh, _ := m.ShardFor(q); sh.ID == shard {
				return q
			}
		}
	}
	dead, alive := queueOn("shard-1"), queueOn("shard-0")
	if err := cl.Shards[1].Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	t0 := time.Now()
	_, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: dead, Body: []byte("x")})
	first := time.Since(t0)
	if !errors.Is(err, queue.ErrShardDown) || queue.CategoryOf(err) != queue.CategoryUnavailable {
		t.Fatalf("first call to the dead shard: %v", err)
	}
	var slowest time.Duration
	for i := 0; i < 50; i++ {
		s := time.Now()
		if _, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: dead, Body: []byte("x")}); !errors.Is(err, queue.ErrShardDown) {
			t.Fatalf("call %d to the dead shard: %v", i, err)
		}
		slowest = max(slowest, time.Since(s))
		if _, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: alive, Body: []byte("y")}); err != nil {
			t.Fatalf("the healthy shard failed while the other is down: %v", err)
		}
	}
	t.Logf("first call to the dead shard returned after %s (op timeout 10 s); slowest of the next 50: %s", first.Round(time.Millisecond), slowest.Round(time.Millisecond))
	if _, ok := c.DownShards()["shard-1"]; !ok {
		t.Fatal("DownShards lacks shard-1")
	}
	if v := testutil.ToFloat64(metricSum(t, reg, "ratequeue_shard_circuit_open", map[string]string{"shard": "shard-1"})); v != 1 {
		t.Fatalf("ratequeue_shard_circuit_open{shard-1} = %v", v)
	}
	if err := cl.Shards[1].Primary.Restart(ctx, false); err != nil {
		t.Fatal(err)
	}
	rqtest.Stamp(t, cl.Shards[1].Primary, 1)
	redistest.WaitFor(t, 20*time.Second, "the dead shard takes writes again", func() bool {
		_, err := c.Enqueue(ctx, queue.EnqueueRequest{Queue: dead, Body: []byte("z")})
		return err == nil
	})
	if len(c.DownShards()) != 0 || testutil.ToFloat64(metricSum(t, reg, "ratequeue_shard_circuit_open", map[string]string{"shard": "shard-1"})) != 0 {
		t.Fatal("circuit still open after a success")
	}
}
