package worker

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/lazarus/internal/redisops"
	"github.com/heartline/heartline/shared/connect"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/memstream"
	"github.com/heartline/heartline/shared/stream/natsstream"
	"github.com/heartline/heartline/shared/topology"
)

const shardID = "shard-1"

// recPub records every published event and forwards it to memstream.
type recPub struct {
	mu   sync.Mutex
	evs  []events.Event
	next stream.Publisher
}

func (p *recPub) Publish(ctx context.Context, topic string, m stream.Message) error {
	return p.PublishBatch(ctx, topic, []stream.Message{m})
}

func (p *recPub) PublishBatch(ctx context.Context, topic string, msgs []stream.Message) error {
	for _, m := range msgs {
		ev, err := events.Decode(m.Data)
		if err != nil {
			return fmt.Errorf("published an undecodable event: %w", err)
		}
		p.mu.Lock()
		p.evs = append(p.evs, ev)
		p.mu.Unlock()
	}
	if p.next == nil {
		return nil
	}
	return p.next.PublishBatch(ctx, topic, msgs)
}

func (p *recPub) all() []events.Event {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]events.Event(nil), p.evs...)
}

// decisions returns the failover payloads of the given kind.
func (p *recPub) of(kind events.Kind) []*events.Failover {
	var out []*events.Failover
	for _, e := range p.all() {
		if e.Kind == kind {
			if f, ok := e.Payload.(*events.Failover); ok {
				out = append(out, f)
			}
		}
	}
	return out
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type env struct {
	t  testing.TB
	kv kv.Store
	// client returns a new connection to the stream (one per simulated process).
	client func() stream.Backend
	pub    *recPub
	shard  *redistest.Shard
	logs   *syncBuf
}

// newEnv starts a shard of a primary and n replicas (min-replicas-to-write 1, as the
// design requires), seeds it at epoch 1 and stamps the primary.
func newEnv(t testing.TB, replicas int) *env {
	t.Helper()
	srv := memstream.NewServer(memstream.Options{})
	return newEnvOn(t, replicas, memkv.New(), func() stream.Backend { return srv.New() })
}

// newEnvOnNATS is newEnv with an embedded NATS server as stream and kv store; every
// client is a separate connection, as separate processes would have.
func newEnvOnNATS(t testing.TB, replicas int) *env {
	t.Helper()
	emb, err := natsstream.StartEmbedded(natsstream.EmbeddedOptions{StoreDir: t.TempDir(), Port: -1, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(emb.Shutdown)
	open := func() *connect.Platform {
		p, err := connect.Open(context.Background(), connect.Config{Stream: emb.ClientURL(), Instance: "test"}, zerolog.Nop())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = p.Close() })
		return p
	}
	first := open()
	return newEnvOn(t, replicas, first.KV, func() stream.Backend { return open().Stream })
}

func newEnvOn(t testing.TB, replicas int, store kv.Store, client func() stream.Backend) *env {
	t.Helper()
	sh := redistest.StartShard(t, "s", replicas, [2]string{"min-replicas-to-write", "1"})
	e := &env{t: t, kv: store, client: client, shard: sh, logs: &syncBuf{}}
	e.pub = &recPub{next: e.client()}
	ts := topology.Shard{ID: shardID, Index: 0, Epoch: 1, Primary: sh.Primary.Addr()}
	for _, r := range sh.Replicas {
		ts.Replicas = append(ts.Replicas, r.Addr())
	}
	if _, err := (topology.Store{KV: e.kv}).Seed(context.Background(), topology.Map{Shards: []topology.Shard{ts}}); err != nil {
		t.Fatal(err)
	}
	if replicas > 0 {
		// min-replicas-to-write counts a replica once the primary's cron saw its ack.
		redistest.WaitFor(t, 15*time.Second, "primary counts its replicas as good", func() bool {
			return info(t, sh.Primary.Addr()).MinReplicasGood >= replicas
		})
	}
	if err := sh.Primary.Client().Set(context.Background(), redisops.EpochKey, 1, 0).Err(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("lazarus logs:\n%s", tail(e.logs.String(), 12000))
		}
	})
	return e
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func testSettings(instance string) Settings {
	return Settings{Instance: instance, LeaseTTL: 2 * time.Second, LeaseWait: 5 * time.Second, CheckTimeout: 200 * time.Millisecond,
		ReconcileInterval: 100 * time.Millisecond, VerifyTimeout: 5 * time.Second, Cooldown: 30 * time.Second, ParkGrace: 10 * time.Second}
}

func (e *env) worker(set Settings, hooks Hooks) *Worker {
	e.t.Helper()
	w, err := New(set, Deps{KV: e.kv, Publisher: e.pub, Consumer: e.client(), Log: logging.Test(e.logs).With().Str("instance", set.Instance).Logger(), Hooks: hooks})
	if err != nil {
		e.t.Fatal(err)
	}
	return w
}

func (e *env) topo() topology.Shard {
	e.t.Helper()
	sh, _, err := (topology.Store{KV: e.kv}).Get(context.Background(), shardID)
	if err != nil {
		e.t.Fatal(err)
	}
	return sh
}

func (e *env) records() []*Record {
	e.t.Helper()
	recs, err := (Records{KV: e.kv}).List(context.Background(), shardID)
	if err != nil {
		e.t.Fatal(err)
	}
	return recs
}

func (e *env) node(addr string) *redistest.Node {
	for _, n := range e.shard.Nodes() {
		if n.Addr() == addr {
			return n
		}
	}
	e.t.Fatalf("no node %s", addr)
	return nil
}

func alertEvent(code events.AlertCode, primary string, epoch uint64) events.Event {
	first := time.Now().Add(-600 * time.Millisecond).UTC()
	hb := events.New(events.KindHeartbeat, events.Source{Service: "agent"}, shardID, &events.Heartbeat{Seq: 1,
		Replica: events.ReplicaState{Addr: "r"}, Primary: events.PrimaryProbe{Addr: primary}})
	sev := events.SeverityCritical
	if !strings.HasPrefix(string(code), "PRIMARY") {
		sev = events.SeverityWarning
	}
	ev := events.Continue(events.KindAlertOpened, events.Source{Service: "alerter", Instance: "test"}, hb, &events.Alert{
		IncidentID: "inc-" + events.NewID(), Code: code, Severity: sev, State: events.StateHard, Primary: primary,
		Reason: "test", FailedProbes: 3, AgentsReporting: 2, AgentsDown: 2, FirstFailure: first})
	ev.Epoch = epoch
	return ev
}

func client(addr string) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 3 * time.Second,
		ContextTimeoutEnabled: true, PoolSize: 2})
}

// writeAcked writes n keys, each acknowledged by a replica (WAIT 1), and returns them.
func writeAcked(t testing.TB, addr, prefix string, n int) []string {
	t.Helper()
	c := client(addr)
	defer c.Close()
	ctx := context.Background()
	keys := make([]string, 0, n)
	for i := 0; i < n; i++ {
		k := fmt.Sprintf("%s:%d", prefix, i)
		if err := c.Set(ctx, k, i, 0).Err(); err != nil {
			t.Fatalf("SET %s: %v", k, err)
		}
		acked, err := c.Wait(ctx, 1, 2*time.Second).Result()
		if err != nil || acked < 1 {
			t.Fatalf("WAIT after %s: %d %v", k, acked, err)
		}
		keys = append(keys, k)
	}
	return keys
}

func missing(t testing.TB, addr string, keys []string) []string {
	t.Helper()
	c := client(addr)
	defer c.Close()
	var out []string
	for _, k := range keys {
		n, err := c.Exists(context.Background(), k).Result()
		if err != nil {
			t.Fatalf("EXISTS %s on %s: %v", k, addr, err)
		}
		if n == 0 {
			out = append(out, k)
		}
	}
	return out
}

func info(t testing.TB, addr string) redisinfo.Node {
	t.Helper()
	c := client(addr)
	defer c.Close()
	i, err := redisinfo.Read(context.Background(), c)
	if err != nil {
		t.Fatalf("INFO %s: %v", addr, err)
	}
	return i
}

func park(t testing.TB, addr string) {
	t.Helper()
	c := client(addr)
	defer c.Close()
	if err := c.SlaveOf(context.Background(), redisinfo.DefaultPark.Host, fmt.Sprint(redisinfo.DefaultPark.Port)).Err(); err != nil {
		t.Fatalf("park %s: %v", addr, err)
	}
}

func epochOf(t testing.TB, addr string) string {
	t.Helper()
	c := client(addr)
	defer c.Close()
	v, err := c.Get(context.Background(), redisops.EpochKey).Result()
	if err != nil {
		t.Fatalf("GET epoch on %s: %v", addr, err)
	}
	return v
}

// reconcileUntil runs reconcile passes until cond holds.
func reconcileUntil(t testing.TB, w *Worker, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	redistest.WaitFor(t, timeout, what, func() bool {
		w.ReconcileOnce(context.Background())
		return cond()
	})
}

func masters(t testing.TB, e *env) []string {
	t.Helper()
	var out []string
	for _, n := range e.shard.Nodes() {
		if !n.Running() {
			continue
		}
		if info(t, n.Addr()).Role == "master" {
			out = append(out, n.Addr())
		}
	}
	return out
}

func newMemKV() *memkv.Store { return memkv.New() }
