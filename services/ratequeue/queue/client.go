// Package queue is Ratequeue's core: sharded, rate-limited FIFO queues in Redis, one
// queue per key (for example a phone number), and the Go client that routes every call
// to the primary of the key's shard through the topology that lazarus maintains.
//
// Data model, on each shard's primary (see scripts.go): a LIST per queue, deleted when
// drained; a per-shard ZSET "rq:ready" of non-empty queues scored by the server time
// (µs) of their next allowed dequeue, so "the next allowed message of the shard" is one
// ZRANGEBYSCORE ... LIMIT 0 1; a per-queue rate key (next allowed time, expiring after
// it) that survives a drained queue being refilled; message bodies stored once, in a
// HASH per message; a ZSET of in-flight message ids scored by visibility deadline.
//
// Every write is a Lua script that first compares the epoch the client routed with to
// the node's "heartline:epoch" and refuses with "STALEEPOCH <node> <routed>" when they
// differ. With AckReplica the script is pipelined with "WAIT 1 <timeout>" on the same
// connection and the call succeeds only if WAIT saw a replica.
//
// The client retries connection errors, timeouts, READONLY, MASTERDOWN, NOREPLICAS,
// LOADING, BUSY and STALEEPOCH with exponential backoff and jitter, and every wait also
// ends the moment the topology changes, which is what makes a failover fast. Errors
// retrying cannot fix return at once. Every error is an *Error with a Category.
package queue

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/google/uuid"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/topology"
)

// Topology is what the client needs of a *topology.Follower.
type Topology interface {
	Map() topology.Map
	Changed() <-chan struct{}
	Refresh(ctx context.Context) error
}

// AckMode says when a write is acknowledged.
type AckMode string

// Ack modes.
const (
	// AckReplica: acknowledged only after WAIT 1 saw at least one replica (default).
	AckReplica AckMode = "replica"
	// AckPrimary: acknowledged when the primary applied it.
	AckPrimary AckMode = "primary"
)

// ParseAckMode parses "replica" or "primary".
func ParseAckMode(s string) (AckMode, error) {
	switch AckMode(s) {
	case AckReplica, AckPrimary:
		return AckMode(s), nil
	}
	return "", fmt.Errorf("ack mode %q: want replica or primary", s)
}

// Limits on names and sizes.
const (
	MaxQueueLen = 128
	MaxIDLen    = 64
	MaxIdemLen  = 128
)

// Config configures a Client. Zero values take the defaults noted.
type Config struct {
	Topology Topology
	// Ack is the durability mode (default AckReplica).
	Ack AckMode
	// WaitTimeout is WAIT's timeout with AckReplica (default 1 s).
	WaitTimeout time.Duration
	// AttemptTimeout bounds one attempt (default WaitTimeout + 1 s). No new attempt
	// starts in the last quarter of it before a call's deadline.
	AttemptTimeout time.Duration
	// OpTimeout bounds a call with its retries when ctx has no earlier deadline
	// (default 10 s).
	OpTimeout time.Duration
	// Backoff between retries (default 5 ms doubling to 250 ms, with jitter).
	Backoff backoff.Policy
	// DefaultRate is each queue's dequeue rate in messages per second (default 10;
	// 0 means unlimited). Rates overrides it per queue key.
	DefaultRate float64
	Rates       map[string]float64
	// Visibility is how long a delivered message stays invisible before it is
	// delivered again unless acked (default 30 s).
	Visibility time.Duration
	// MaxBody is the largest body accepted (default 64 KiB).
	MaxBody int
	// IdempotencyTTL is how long an idempotency key is remembered (default 24 h).
	IdempotencyTTL time.Duration
	// PoolSize is the connection pool size per node (default 128).
	PoolSize int
	// DialTimeout per connection attempt (default 250 ms).
	DialTimeout time.Duration
	// NoBatch turns off coalescing: by default concurrent write scripts to one node
	// are sent as pipelines by Batchers goroutines per node (with AckReplica a single
	// WAIT ends each pipeline and covers all of its writes), which saves a round trip
	// and two system calls per call on both sides.
	NoBatch bool
	// Batchers per node (default 4) and the largest batch (default 128).
	Batchers, MaxBatch int
	// BreakerAfter: a shard whose calls fail for this long without a success is
	// treated as down, and calls to it fail at once with ErrShardDown instead of
	// waiting for the op timeout (default 3 s, above a failover's duration; negative:
	// never). BreakerProbe: while down, one call per this interval goes through to
	// find out whether it is back (default 500 ms). A route change in the topology
	// (failover, spare, degraded) closes the circuit at once.
	BreakerAfter, BreakerProbe time.Duration
	Metrics                    *Metrics
	Log                        zerolog.Logger
}

func (c *Config) defaults() {
	if c.Ack == "" {
		c.Ack = AckReplica
	}
	if c.WaitTimeout <= 0 {
		c.WaitTimeout = time.Second
	}
	if c.AttemptTimeout <= 0 {
		c.AttemptTimeout = c.WaitTimeout + time.Second
	}
	if c.OpTimeout <= 0 {
		c.OpTimeout = 10 * time.Second
	}
	if c.Backoff.Initial <= 0 {
		c.Backoff = backoff.Policy{Initial: 5 * time.Millisecond, Max: 250 * time.Millisecond}
	}
	if c.DefaultRate == 0 && c.Rates == nil {
		c.DefaultRate = 10
	}
	if c.Visibility <= 0 {
		c.Visibility = 30 * time.Second
	}
	if c.MaxBody <= 0 {
		c.MaxBody = 64 << 10
	}
	if c.IdempotencyTTL <= 0 {
		c.IdempotencyTTL = 24 * time.Hour
	}
	if c.PoolSize <= 0 {
		c.PoolSize = 128
	}
	if c.DialTimeout <= 0 {
		c.DialTimeout = 250 * time.Millisecond
	}
	if c.Batchers <= 0 {
		c.Batchers = 4
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = 128
	}
	if c.BreakerAfter == 0 {
		c.BreakerAfter = 3 * time.Second
	}
	if c.BreakerProbe <= 0 {
		c.BreakerProbe = 500 * time.Millisecond
	}
}

// Validate reports every problem with the configuration.
func (c Config) Validate() error {
	var p []string
	if c.Topology == nil {
		p = append(p, "no topology")
	}
	if _, err := ParseAckMode(string(c.Ack)); err != nil {
		p = append(p, err.Error())
	}
	if c.DefaultRate < 0 || math.IsNaN(c.DefaultRate) || math.IsInf(c.DefaultRate, 0) {
		p = append(p, fmt.Sprintf("default rate %v: want >= 0 messages per second", c.DefaultRate))
	}
	for q, r := range c.Rates {
		if err := ValidQueue(q); err != nil {
			p = append(p, fmt.Sprintf("rate override: %v", err))
		}
		if r < 0 || math.IsNaN(r) || math.IsInf(r, 0) {
			p = append(p, fmt.Sprintf("rate override %s=%v: want >= 0", q, r))
		}
	}
	if c.AttemptTimeout <= c.WaitTimeout && c.Ack == AckReplica {
		p = append(p, fmt.Sprintf("attempt timeout %s must exceed the WAIT timeout %s", c.AttemptTimeout, c.WaitTimeout))
	}
	if len(p) > 0 {
		return fmt.Errorf("queue config: %s", strings.Join(p, "; "))
	}
	return nil
}

// Client routes queue operations to shard primaries. It is safe for concurrent use.
type Client struct {
	cfg     Config
	topo    Topology
	log     zerolog.Logger
	metrics *Metrics

	mu     sync.Mutex
	nodes  map[string]*node
	seen   map[string]uint64 // shard -> newest epoch any node reported
	closed bool
	done   chan struct{}

	refreshing atomic.Bool
	rr         atomic.Uint64
	br         *breakers
}

// node is one Redis node's client. It is replaced (never reused) when dials to it
// fail, so that go-redis's per-pool dial backoff never delays a recovered node.
type node struct {
	addr string
	rdb  *redis.Client
	born time.Time
	// Batching (see batch.go): calls queue here for the node's batchers.
	calls     chan *call
	stop      chan struct{} // closed by close
	dead      chan struct{} // closed when every batcher has exited
	closeOnce sync.Once
}

// New returns a client. Close it when done.
func New(cfg Config) (*Client, error) {
	cfg.defaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, topo: cfg.Topology, log: cfg.Log, metrics: cfg.Metrics,
		nodes: map[string]*node{}, seen: map[string]uint64{}, done: make(chan struct{}),
		br: newBreakers(cfg.BreakerAfter, cfg.BreakerProbe)}
	go c.prune()
	return c, nil
}

// Close closes every node connection.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil
	}
	c.closed = true
	close(c.done)
	for _, n := range c.nodes {
		n.close()
	}
	c.nodes = nil
	return nil
}

// Config returns the effective configuration.
func (c *Client) Config() Config { return c.cfg }

// Shards returns the ids of the current shards in index order.
func (c *Client) Shards() []string {
	var ids []string
	for _, s := range c.topo.Map().Shards {
		ids = append(ids, s.ID)
	}
	return ids
}

// RateFor returns the dequeue rate of a queue in messages per second (0: unlimited).
func (c *Client) RateFor(queue string) float64 {
	if r, ok := c.cfg.Rates[queue]; ok {
		return r
	}
	return c.cfg.DefaultRate
}

// IntervalUS is the minimum spacing of a queue's dequeues in microseconds.
func (c *Client) IntervalUS(queue string) int64 {
	r := c.RateFor(queue)
	if r <= 0 {
		return 0
	}
	return int64(math.Round(1e6 / r))
}

func (c *Client) newNode(addr string) *node {
	rdb := redis.NewClient(&redis.Options{
		Addr:                  addr,
		Protocol:              2,
		DisableIdentity:       true,
		MaxRetries:            -1, // the client retries, with routing, itself
		DialTimeout:           c.cfg.DialTimeout,
		DialerRetries:         1,
		ReadTimeout:           c.cfg.WaitTimeout + time.Second,
		WriteTimeout:          time.Second,
		ContextTimeoutEnabled: true,
		PoolSize:              c.cfg.PoolSize,
		PoolTimeout:           min(c.cfg.AttemptTimeout, 500*time.Millisecond),
		PipelinePoolSize:      -1,
	})
	n := &node{addr: addr, rdb: rdb, born: time.Now(), stop: make(chan struct{}), dead: make(chan struct{})}
	c.startBatchers(n)
	return n
}

func (c *Client) node(addr string) (*node, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrClosed
	}
	n, ok := c.nodes[addr]
	if !ok {
		n = c.newNode(addr)
		c.nodes[addr] = n
	}
	return n, nil
}

// replace drops a node client whose dials failed; the next call dials afresh. The
// old client is closed a little later so that calls still using it finish.
func (c *Client) replace(n *node) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed || c.nodes[n.addr] != n || time.Since(n.born) < 200*time.Millisecond {
		return
	}
	c.nodes[n.addr] = c.newNode(n.addr)
	time.AfterFunc(2*c.cfg.AttemptTimeout, n.close)
}

// prune closes the clients of nodes that are no longer a primary after each
// topology change.
func (c *Client) prune() {
	for {
		ch := c.topo.Changed()
		select {
		case <-c.done:
			return
		case <-ch:
		}
		keep := map[string]bool{}
		for _, s := range c.topo.Map().Shards {
			keep[s.Primary] = true
		}
		c.mu.Lock()
		for addr, n := range c.nodes {
			if !keep[addr] {
				delete(c.nodes, addr)
				time.AfterFunc(2*c.cfg.AttemptTimeout, n.close)
			}
		}
		c.mu.Unlock()
	}
}

func (c *Client) seenEpoch(shard string) uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.seen[shard]
}

func (c *Client) noteEpoch(shard string, e uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e > c.seen[shard] {
		c.seen[shard] = e
	}
}

// refresh reloads the topology in the background, one refresh at a time.
func (c *Client) refresh() {
	if !c.refreshing.CompareAndSwap(false, true) {
		return
	}
	go func() {
		defer c.refreshing.Store(false)
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := c.topo.Refresh(ctx); err != nil {
			c.log.Debug().Err(err).Msg("topology refresh after a stale epoch failed")
		}
	}()
}

// ValidQueue checks a queue key: 1-128 bytes of A-Z a-z 0-9 and _ . : + @ = -.
func ValidQueue(q string) error {
	if err := validToken(q, MaxQueueLen, "_.:+@=-"); err != nil {
		return fmt.Errorf("%w %q: %v", ErrInvalidQueue, clip(q), err)
	}
	return nil
}

// ValidID checks a message id: 1-64 bytes of A-Z a-z 0-9 _ -.
func ValidID(id string) error {
	if err := validToken(id, MaxIDLen, "_-"); err != nil {
		return fmt.Errorf("%w %q: %v", ErrInvalidID, clip(id), err)
	}
	return nil
}

// ValidIdempotencyKey checks an idempotency key: like a queue key.
func ValidIdempotencyKey(k string) error {
	if err := validToken(k, MaxIdemLen, "_.:+@=-"); err != nil {
		return fmt.Errorf("%w %q: %v", ErrInvalidIdempotencyKey, clip(k), err)
	}
	return nil
}

func validToken(s string, max int, extra string) error {
	if s == "" || len(s) > max {
		return fmt.Errorf("want 1-%d bytes, got %d", max, len(s))
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		if b >= 'a' && b <= 'z' || b >= 'A' && b <= 'Z' || b >= '0' && b <= '9' || strings.IndexByte(extra, b) >= 0 {
			continue
		}
		return fmt.Errorf("byte %q at %d not allowed (want A-Z a-z 0-9 and %s)", b, i, extra)
	}
	return nil
}

func clip(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}

// StampEpoch sets a node's fencing epoch (heartline:epoch). Lazarus does this on a
// new primary before publishing the topology; seeding and tests use it too.
func StampEpoch(ctx context.Context, rdb redis.Cmdable, epoch uint64) error {
	if err := rdb.Set(ctx, EpochKey, strconv.FormatUint(epoch, 10), 0).Err(); err != nil {
		return fmt.Errorf("stamping epoch %d: %w", epoch, err)
	}
	return nil
}

// errNotReplicated: WAIT returned 0 replicas within its timeout.
var errNotReplicated = errors.New("not acknowledged by a replica within the WAIT timeout")

// staleEpoch is a parsed STALEEPOCH reply.
type staleEpoch struct{ node, routed uint64 }

func (e *staleEpoch) Error() string {
	return fmt.Sprintf("node is at epoch %d, request was routed with epoch %d", e.node, e.routed)
}

// verdict is what the retry loop makes of one attempt's error.
type verdict struct {
	reason       string
	retry        bool
	maybeApplied bool
	stale        *staleEpoch
	dial         bool
}

func classify(err error) verdict {
	switch {
	case errors.Is(err, errNotReplicated):
		return verdict{reason: "not_replicated", retry: true, maybeApplied: true}
	case errors.Is(err, redis.ErrClosed):
		return verdict{reason: "closed", retry: true}
	case errors.Is(err, redis.ErrPoolTimeout), errors.Is(err, redis.ErrPoolExhausted):
		return verdict{reason: "pool", retry: true}
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		msg := rerr.Error()
		word, rest, _ := strings.Cut(msg, " ")
		switch word {
		case "STALEEPOCH":
			f := strings.Fields(rest)
			if len(f) == 2 {
				ne, err1 := strconv.ParseUint(f[0], 10, 64)
				re, err2 := strconv.ParseUint(f[1], 10, 64)
				if err1 == nil && err2 == nil {
					se := &staleEpoch{node: ne, routed: re}
					if ne > re {
						return verdict{reason: "staleepoch_newer", retry: true, stale: se}
					}
					return verdict{reason: "staleepoch_older", retry: true, stale: se}
				}
			}
			return verdict{reason: "staleepoch", retry: true}
		case "READONLY", "MASTERDOWN", "NOREPLICAS", "LOADING", "BUSY", "TRYAGAIN":
			return verdict{reason: strings.ToLower(word), retry: true}
		}
		return verdict{reason: "reply"}
	}
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return verdict{reason: "dial", retry: true, dial: true}
	}
	var ne net.Error
	if errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &ne) && ne.Timeout()) {
		return verdict{reason: "timeout", retry: true, maybeApplied: true}
	}
	return verdict{reason: "conn", retry: true, maybeApplied: true}
}

// target is where one attempt goes.
type target struct {
	shard topology.Shard
	node  *node
}

// replicated reports whether a write through t waits for a replica: AckReplica on a
// shard that is not degraded. On a degraded shard (durability degrade, no replica in
// sync: lazarus set min-replicas-to-write 0) writes are acknowledged by the primary
// alone and say so (Replicated false).
func (c *Client) replicated(t target) bool { return c.cfg.Ack == AckReplica && !t.shard.Degraded }

// run calls attempt against the primary of the shard pick chooses, retrying
// retryable failures until success, a final error, maxAttempts (0: no limit) or the
// deadline. It returns the shard of the successful attempt.
func (c *Client) run(ctx context.Context, op, queue string, maxAttempts int,
	pick func(topology.Map) (topology.Shard, error), attempt func(ctx context.Context, t target) error) (topology.Shard, error) {
	parent := ctx
	if dl, ok := ctx.Deadline(); !ok || time.Until(dl) > c.cfg.OpTimeout {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.cfg.OpTimeout)
		defer cancel()
	}
	var (
		maybeApplied bool
		lastErr      error
		lastReason   string
		shardID      string
	)
	fail := func(cat Category, sentinel error, n int) error {
		err := sentinel
		if lastErr != nil {
			err = fmt.Errorf("%w: %w", sentinel, lastErr)
		}
		return &Error{Op: op, Queue: queue, Shard: shardID, Category: cat, Attempts: n, Reason: lastReason, Err: err}
	}
	for n := 1; ; n++ {
		if ctx.Err() != nil {
			return topology.Shard{}, c.final(parent, fail, maybeApplied, n-1)
		}
		changed := c.topo.Changed()
		sh, err := pick(c.topo.Map())
		if err != nil {
			if errors.Is(err, ErrUnknownShard) {
				return topology.Shard{}, &Error{Op: op, Queue: queue, Category: CategoryNotFound, Attempts: n, Err: err}
			}
			return topology.Shard{}, &Error{Op: op, Queue: queue, Category: CategoryUnavailable, Attempts: n, Err: err}
		}
		shardID = sh.ID
		if dl, ok := ctx.Deadline(); ok && n > 1 && time.Until(dl) < c.cfg.AttemptTimeout/4 {
			// Too little time left for an attempt to finish: starting one would only
			// turn a definite failure into an unknown outcome.
			return topology.Shard{}, c.final(parent, fail, maybeApplied, n-1)
		}
		if seen := c.seenEpoch(sh.ID); sh.Epoch < seen {
			// A node told us of a newer epoch than our topology has: never write
			// with the old one; wait for the topology to catch up.
			lastReason = "stale_topology"
			lastErr = fmt.Errorf("topology has epoch %d for shard %s, a node reported epoch %d", sh.Epoch, sh.ID, seen)
			c.refresh()
		} else {
			allowed, closed := c.br.allow(sh, time.Now())
			if closed {
				c.circuitClosed(sh, "the shard's route changed")
			}
			if !allowed {
				if lastErr == nil {
					lastErr = fmt.Errorf("%w: shard %s", ErrShardDown, sh.ID)
				} else {
					lastErr = fmt.Errorf("%w: shard %s, %w", ErrShardDown, sh.ID, lastErr)
				}
				lastReason = "shard_down"
				return topology.Shard{}, c.final(parent, fail, maybeApplied, n-1)
			}
			nd, err := c.node(sh.Primary)
			if err != nil {
				return topology.Shard{}, &Error{Op: op, Queue: queue, Shard: sh.ID, Category: CategoryCanceled, Attempts: n, Err: err}
			}
			actx, acancel := context.WithTimeout(ctx, c.cfg.AttemptTimeout)
			err = attempt(actx, target{shard: sh, node: nd})
			acancel()
			if err == nil {
				if c.br.success(sh.ID) {
					c.circuitClosed(sh, "a call succeeded")
				}
				return sh, nil
			}
			var qe *Error
			if errors.As(err, &qe) {
				return topology.Shard{}, err // a final answer from the attempt itself
			}
			if parent.Err() != nil && errors.Is(err, parent.Err()) {
				// The caller gave up during the attempt: it may have been applied.
				lastErr = err
				return topology.Shard{}, c.final(parent, fail, true, n)
			}
			v := classify(err)
			lastErr, lastReason = fmt.Errorf("%s: %w", sh.Primary, err), v.reason
			if v.maybeApplied {
				maybeApplied = true
			}
			if !v.retry {
				return topology.Shard{}, fail(CategoryInternal, ErrInternal, n)
			}
			if v.stale == nil && v.reason != "pool" && v.reason != "closed" && c.br.failure(sh, time.Now()) {
				c.metrics.circuit(sh.ID, true)
				c.log.Warn().Str("shard", sh.ID).Str("node", sh.Primary).Uint64("epoch", sh.Epoch).Str("reason", v.reason).
					Dur("failing_for", c.cfg.BreakerAfter).AnErr("error", err).
					Msg("shard circuit open: calls to the shard fail at once until a probe succeeds or its route changes")
			}
			if v.dial {
				c.replace(nd)
			}
			if v.stale != nil {
				lastErr = fmt.Errorf("%s: %w", sh.Primary, v.stale)
				if v.stale.node > v.stale.routed {
					c.noteEpoch(sh.ID, v.stale.node)
					c.refresh()
				}
			}
		}
		c.metrics.retry(op, lastReason)
		if maxAttempts > 0 && n >= maxAttempts {
			cat, sentinel := CategoryUnavailable, ErrUnavailable
			if maybeApplied {
				cat, sentinel = CategoryUnknown, ErrUnknownOutcome
			}
			return topology.Shard{}, fail(cat, sentinel, n)
		}
		c.log.Debug().Str("op", op).Str("shard", sh.ID).Str("node", sh.Primary).Uint64("epoch", sh.Epoch).
			Str("reason", lastReason).Int("attempt", n).AnErr("error", lastErr).Msg("retrying")
		t := time.NewTimer(c.cfg.Backoff.Delay(n))
		select {
		case <-ctx.Done():
		case <-changed:
		case <-t.C:
		}
		t.Stop()
	}
}

func (c *Client) circuitClosed(sh topology.Shard, why string) {
	c.metrics.circuit(sh.ID, false)
	c.log.Info().Str("shard", sh.ID).Str("node", sh.Primary).Uint64("epoch", sh.Epoch).Str("why", why).Msg("shard circuit closed")
}

// DownShards lists the shards whose circuit is open, with when it opened.
func (c *Client) DownShards() map[string]time.Time { return c.br.openShards() }

func (c *Client) final(parent context.Context, fail func(Category, error, int) error, maybeApplied bool, n int) error {
	switch {
	case maybeApplied:
		return fail(CategoryUnknown, ErrUnknownOutcome, n)
	case parent.Err() != nil && errors.Is(parent.Err(), context.Canceled):
		return fail(CategoryCanceled, context.Canceled, n)
	default:
		return fail(CategoryUnavailable, ErrUnavailable, n)
	}
}

// eval runs a write script on the node, pipelined with WAIT 1 for AckReplica (when
// wait is true). It loads the script on NOSCRIPT (a node seen for the first time).
func (c *Client) eval(ctx context.Context, n *node, s *redis.Script, wait bool, keys []string, args ...any) (any, error) {
	if n.calls != nil {
		return c.batched(ctx, n, s, wait, keys, args)
	}
	for i := 0; ; i++ {
		var res any
		var err error
		var w *redis.Cmd
		if wait && c.cfg.Ack == AckReplica {
			pipe := n.rdb.Pipeline()
			ev := pipe.EvalSha(ctx, s.Hash(), keys, args...)
			w = pipe.Do(ctx, "WAIT", 1, c.cfg.WaitTimeout.Milliseconds())
			_, _ = pipe.Exec(ctx)
			res, err = ev.Result()
		} else {
			res, err = n.rdb.EvalSha(ctx, s.Hash(), keys, args...).Result()
		}
		if err != nil && i == 0 && redis.HasErrorPrefix(err, "NOSCRIPT") {
			if lerr := s.Load(ctx, n.rdb).Err(); lerr != nil {
				return nil, lerr
			}
			continue
		}
		if err != nil {
			return nil, err
		}
		if w != nil {
			nrep, werr := w.Int64()
			if werr != nil {
				return res, werr
			}
			if nrep < 1 {
				return res, errNotReplicated
			}
		}
		return res, nil
	}
}

func epochArg(e uint64) string { return strconv.FormatUint(e, 10) }

func (c *Client) shardFor(queue string) func(topology.Map) (topology.Shard, error) {
	return func(m topology.Map) (topology.Shard, error) {
		if len(m.Shards) == 0 {
			return topology.Shard{}, ErrNoTopology
		}
		return m.ShardFor(queue)
	}
}

func shardByID(id string) func(topology.Map) (topology.Shard, error) {
	return func(m topology.Map) (topology.Shard, error) {
		sh, err := m.Shard(id)
		if err != nil {
			return topology.Shard{}, fmt.Errorf("%w: %q", ErrUnknownShard, id)
		}
		return sh, nil
	}
}

// EnqueueRequest is one message to enqueue.
type EnqueueRequest struct {
	Queue string
	Body  []byte
	// IdempotencyKey, when set, makes the enqueue idempotent for IdempotencyTTL: a
	// repeated enqueue with the same key returns the original id and stores nothing.
	IdempotencyKey string
	// ID is the message id to use; empty: a new UUIDv7. Retries of one call always
	// reuse the same id, and a stored id is never stored twice.
	ID string
}

// EnqueueResult describes an acknowledged enqueue.
type EnqueueResult struct {
	ID    string
	Queue string
	Shard string
	Node  string
	Epoch uint64
	// Duplicate: the first attempt found the idempotency key (or id) already stored;
	// ID is the original message's id.
	Duplicate bool
	// ServerUS is the primary's clock (µs since the Unix epoch) when the enqueue
	// created its queue (0 when the queue already existed: reading the clock costs).
	ServerUS int64
	// Replicated: a replica acknowledged the write (AckReplica on a shard that is not
	// degraded). False under AckPrimary, and on a degraded shard: a second failure
	// before a replica is in sync again loses the write.
	Replicated bool
}

// Enqueue appends a message to its queue. With AckReplica it returns only after a
// replica has the message.
func (c *Client) Enqueue(ctx context.Context, req EnqueueRequest) (EnqueueResult, error) {
	start := time.Now()
	res, err := c.enqueue(ctx, req)
	if err != nil {
		c.metrics.fail("enqueue", res.Shard, CategoryOf(err), time.Since(start))
		return res, err
	}
	result := "ok"
	if res.Duplicate {
		result = "duplicate"
	}
	c.metrics.op("enqueue", res.Shard, result, time.Since(start))
	if !res.Replicated && c.cfg.Ack == AckReplica {
		c.metrics.unreplicated("enqueue", res.Shard)
	}
	return res, nil
}

func (c *Client) enqueue(ctx context.Context, req EnqueueRequest) (EnqueueResult, error) {
	invalid := func(err error) (EnqueueResult, error) {
		return EnqueueResult{}, &Error{Op: "enqueue", Queue: clip(req.Queue), Category: CategoryInvalid, Err: err}
	}
	if err := ValidQueue(req.Queue); err != nil {
		return invalid(err)
	}
	if len(req.Body) > c.cfg.MaxBody {
		return invalid(fmt.Errorf("%w: %d bytes, limit %d", ErrBodyTooLarge, len(req.Body), c.cfg.MaxBody))
	}
	if req.IdempotencyKey != "" {
		if err := ValidIdempotencyKey(req.IdempotencyKey); err != nil {
			return invalid(err)
		}
	}
	id := req.ID
	if id == "" {
		u, err := uuid.NewV7()
		if err != nil {
			return invalid(fmt.Errorf("generating a message id: %w", err))
		}
		id = u.String()
	} else if err := ValidID(id); err != nil {
		return invalid(err)
	}
	iv := c.IntervalUS(req.Queue)
	ttl := c.cfg.IdempotencyTTL.Milliseconds()
	var out EnqueueResult
	attempts := 0
	ambiguous := false
	sh, err := c.run(ctx, "enqueue", req.Queue, 0, c.shardFor(req.Queue), func(ctx context.Context, t target) error {
		attempts++
		res, err := c.eval(ctx, t.node, enqueueScript, !t.shard.Degraded, []string{EpochKey, keyReady, keyStored},
			epochArg(t.shard.Epoch), req.Queue, id, req.Body, iv, req.IdempotencyKey, ttl)
		if err != nil {
			if classify(err).maybeApplied {
				ambiguous = true
			}
			return err
		}
		arr, ok := res.([]any)
		if !ok || len(arr) != 3 {
			return &Error{Op: "enqueue", Queue: req.Queue, Shard: t.shard.ID, Category: CategoryInternal,
				Err: fmt.Errorf("%w: enqueue script returned %v", ErrInternal, res)}
		}
		gotID, _ := arr[0].(string)
		dup, _ := arr[1].(int64)
		now, _ := arr[2].(int64)
		out = EnqueueResult{ID: gotID, Queue: req.Queue, Shard: t.shard.ID, Node: t.shard.Primary, Epoch: t.shard.Epoch,
			Duplicate: dup == 1 && !ambiguous, ServerUS: now, Replicated: c.replicated(t)}
		return nil
	})
	if err != nil {
		return EnqueueResult{ID: id, Queue: req.Queue, Shard: errShard(err)}, err
	}
	_ = sh
	return out, nil
}

func errShard(err error) string {
	var e *Error
	if errors.As(err, &e) {
		return e.Shard
	}
	return ""
}

// Message is a delivered message.
type Message struct {
	ID    string
	Queue string
	Body  []byte
	// Deliveries counts deliveries of this message, this one included.
	Deliveries int64
	// ServerUS is the primary's clock (µs) at the dequeue: the rate limit's time.
	ServerUS int64
	// IntervalUS is the queue's minimum dequeue spacing that applied (0: unlimited).
	IntervalUS int64
	Shard      string
	Node       string
	Epoch      uint64
	// Replicated: the in-flight state reached a replica before the message was
	// returned (false under AckPrimary and on a degraded shard).
	Replicated bool
}

// DequeueRequest selects what to dequeue.
type DequeueRequest struct {
	// Shard restricts the dequeue to one shard; empty: the shards in turn.
	Shard string
	// Visibility overrides Config.Visibility.
	Visibility time.Duration
}

// DequeueResult is a message, or nil with a hint of when to ask again.
type DequeueResult struct {
	Message *Message
	// NextIn is how long until a queue of the shard(s) allows a dequeue (or an
	// in-flight message expires); 0 when unknown.
	NextIn time.Duration
	// Ready and InFlight count non-empty queues and in-flight messages of the
	// shard(s) when nothing was delivered.
	Ready, InFlight int64
}

// Dequeue delivers the next message whose queue's rate allows a dequeue now. The
// message stays in flight until acked; after the visibility timeout it is delivered
// again. With AckReplica the in-flight state (and the queue's rate state) reached a
// replica before the message is returned.
func (c *Client) Dequeue(ctx context.Context, req DequeueRequest) (DequeueResult, error) {
	start := time.Now()
	vis := req.Visibility
	if vis <= 0 {
		vis = c.cfg.Visibility
	}
	if req.Shard != "" {
		res, err := c.dequeueShard(ctx, req.Shard, vis, 0)
		c.recordDequeue(req.Shard, res, err, start)
		return res, err
	}
	shards := c.topo.Map().Shards
	if len(shards) == 0 {
		err := &Error{Op: "dequeue", Category: CategoryUnavailable, Err: ErrNoTopology}
		c.metrics.fail("dequeue", "", CategoryUnavailable, time.Since(start))
		return DequeueResult{}, err
	}
	first := int(c.rr.Add(1)) % len(shards)
	var agg DequeueResult
	var lastErr error
	answered := 0
	for i := range shards {
		id := shards[(first+i)%len(shards)].ID
		res, err := c.dequeueShard(ctx, id, vis, 1)
		if err != nil {
			lastErr = err
			if ctx.Err() != nil {
				break
			}
			continue
		}
		answered++
		if res.Message != nil {
			c.recordDequeue(id, res, nil, start)
			return res, nil
		}
		if res.NextIn > 0 && (agg.NextIn == 0 || res.NextIn < agg.NextIn) {
			agg.NextIn = res.NextIn
		}
		agg.Ready += res.Ready
		agg.InFlight += res.InFlight
	}
	if answered == 0 {
		c.recordDequeue("", DequeueResult{}, lastErr, start)
		return DequeueResult{}, lastErr
	}
	c.recordDequeue("", agg, nil, start)
	return agg, nil
}

func (c *Client) recordDequeue(shard string, res DequeueResult, err error, start time.Time) {
	switch {
	case err != nil:
		c.metrics.fail("dequeue", shard, CategoryOf(err), time.Since(start))
	case res.Message == nil:
		c.metrics.op("dequeue", shard, "empty", time.Since(start))
	default:
		c.metrics.op("dequeue", res.Message.Shard, "ok", time.Since(start))
	}
}

func (c *Client) dequeueShard(ctx context.Context, shard string, vis time.Duration, maxAttempts int) (DequeueResult, error) {
	var out DequeueResult
	_, err := c.run(ctx, "dequeue", "", maxAttempts, shardByID(shard), func(ctx context.Context, t target) error {
		res, err := c.eval(ctx, t.node, dequeueScript, !t.shard.Degraded, []string{EpochKey, keyReady, keyInflight},
			epochArg(t.shard.Epoch), vis.Microseconds(), 1000)
		if errors.Is(err, errNotReplicated) {
			// A message (if any) is in flight on the primary but not confirmed on a
			// replica: it is not returned, and comes back after its visibility
			// timeout. Retrying here would only take more messages in flight.
			return &Error{Op: "dequeue", Shard: t.shard.ID, Category: CategoryUnknown, Reason: "not_replicated",
				Err: fmt.Errorf("%w: %w", ErrUnknownOutcome, err)}
		}
		if err != nil {
			return err
		}
		bad := func() error {
			return &Error{Op: "dequeue", Shard: t.shard.ID, Category: CategoryInternal,
				Err: fmt.Errorf("%w: dequeue script returned %v", ErrInternal, res)}
		}
		arr, ok := res.([]any)
		if !ok || len(arr) != 6 {
			return bad()
		}
		id, _ := arr[0].(string)
		now, _ := arr[1].(int64)
		if id == "" {
			nr := parseScore(arr[2])
			ni := parseScore(arr[3])
			out = DequeueResult{}
			out.Ready, _ = arr[4].(int64)
			out.InFlight, _ = arr[5].(int64)
			next := int64(-1)
			for _, v := range []int64{nr, ni} {
				if v >= 0 && (next < 0 || v < next) {
					next = v
				}
			}
			if next >= 0 {
				out.NextIn = time.Duration(max(next-now, 1)) * time.Microsecond
			}
			return nil
		}
		q, _ := arr[2].(string)
		body, _ := arr[3].(string)
		cnt, _ := arr[4].(int64)
		iv, _ := arr[5].(int64)
		out = DequeueResult{Message: &Message{ID: id, Queue: q, Body: []byte(body), Deliveries: cnt, ServerUS: now,
			IntervalUS: iv, Shard: t.shard.ID, Node: t.shard.Primary, Epoch: t.shard.Epoch, Replicated: c.replicated(t)}}
		if !c.replicated(t) && c.cfg.Ack == AckReplica {
			c.metrics.unreplicated("dequeue", t.shard.ID)
		}
		return nil
	})
	return out, err
}

func parseScore(v any) int64 {
	switch x := v.(type) {
	case int64:
		return x
	case string:
		f, err := strconv.ParseFloat(x, 64)
		if err != nil {
			return -1
		}
		return int64(f)
	}
	return -1
}

// Ack acknowledges a delivered message: it is deleted. Acking a message that is gone
// (acked before) succeeds; acking one whose visibility timeout expired (it is back
// in its queue) fails with ErrNotInFlight and the message will be delivered again.
func (c *Client) Ack(ctx context.Context, queue, id string) error {
	start := time.Now()
	shard, err := c.ack(ctx, queue, id)
	if err != nil {
		c.metrics.fail("ack", shard, CategoryOf(err), time.Since(start))
		return err
	}
	c.metrics.op("ack", shard, "ok", time.Since(start))
	return nil
}

func (c *Client) ack(ctx context.Context, queue, id string) (string, error) {
	if err := ValidQueue(queue); err != nil {
		return "", &Error{Op: "ack", Queue: clip(queue), Category: CategoryInvalid, Err: err}
	}
	if err := ValidID(id); err != nil {
		return "", &Error{Op: "ack", Queue: queue, Category: CategoryInvalid, Err: err}
	}
	sh, err := c.run(ctx, "ack", queue, 0, c.shardFor(queue), func(ctx context.Context, t target) error {
		res, err := c.eval(ctx, t.node, ackScript, !t.shard.Degraded, []string{EpochKey, keyInflight, keyStored}, epochArg(t.shard.Epoch), id)
		if err != nil {
			return err
		}
		if n, _ := res.(int64); n == 2 {
			return &Error{Op: "ack", Queue: queue, Shard: t.shard.ID, Category: CategoryNotFound,
				Err: fmt.Errorf("%w: %s", ErrNotInFlight, id)}
		}
		return nil
	})
	if err != nil {
		return errShard(err), err
	}
	return sh.ID, nil
}

// Depth returns how many messages wait in a queue (in-flight ones not counted).
func (c *Client) Depth(ctx context.Context, queue string) (int64, string, error) {
	if err := ValidQueue(queue); err != nil {
		return 0, "", &Error{Op: "depth", Queue: clip(queue), Category: CategoryInvalid, Err: err}
	}
	var n int64
	sh, err := c.run(ctx, "depth", queue, 0, c.shardFor(queue), func(ctx context.Context, t target) error {
		var err error
		n, err = t.node.rdb.LLen(ctx, prefixQueue+queue).Result()
		return err
	})
	return n, sh.ID, err
}

// ShardStats counts a shard's queue state.
type ShardStats struct {
	Shard string `json:"shard"`
	// ReadyQueues: non-empty queues. InFlight: delivered, unacked messages.
	// Stored: messages stored (waiting or in flight).
	ReadyQueues int64  `json:"ready_queues"`
	InFlight    int64  `json:"in_flight"`
	Stored      int64  `json:"stored"`
	Node        string `json:"node"`
	Epoch       uint64 `json:"epoch"`
	// Degraded: the topology says the shard acknowledges writes on its primary alone
	// (durability degrade, no replica in sync).
	Degraded bool `json:"degraded"`
}

// Stats reads a shard's counts from its primary.
func (c *Client) Stats(ctx context.Context, shard string) (ShardStats, error) {
	var st ShardStats
	_, err := c.run(ctx, "stats", "", 0, shardByID(shard), func(ctx context.Context, t target) error {
		pipe := t.node.rdb.Pipeline()
		r := pipe.ZCard(ctx, keyReady)
		f := pipe.ZCard(ctx, keyInflight)
		s := pipe.Get(ctx, keyStored)
		if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		stored, _ := s.Int64()
		st = ShardStats{Shard: t.shard.ID, ReadyQueues: r.Val(), InFlight: f.Val(), Stored: stored, Node: t.shard.Primary, Epoch: t.shard.Epoch,
			Degraded: t.shard.Degraded}
		return nil
	})
	return st, err
}

// Check proves each shard's primary reachable and writable at the routed epoch with
// one write (no retries, AttemptTimeout). It returns the error of each failing shard.
func (c *Client) Check(ctx context.Context) map[string]error {
	out := map[string]error{}
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, sh := range c.topo.Map().Shards {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, err := c.run(ctx, "check", "", 1, shardByID(sh.ID), func(ctx context.Context, t target) error {
				_, err := c.eval(ctx, t.node, probeScript, false, []string{EpochKey, keyProbe}, epochArg(t.shard.Epoch))
				return err
			})
			if err != nil {
				mu.Lock()
				out[sh.ID] = err
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return out
}
