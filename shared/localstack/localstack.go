// Package localstack starts a whole local Heartline topology as real processes on
// loopback, and stops it cleanly: the game day's stage (services/chaos `gameday`) and
// the end-to-end tests' fixture.
//
// What it runs, in start order:
//
//   - the stream and kv store: an embedded NATS server with JetStream in this process
//     (NATS KV for the kv store), or kinesalite and dynalite (shared/localaws) for
//     Kinesis with DynamoDB;
//   - N shards (default 3) of a primary and R replicas (default 1): redis-server through
//     shared/redisproc, persistence off (the restart-wipe case must be survivable),
//     min-replicas-to-write 1;
//   - the topology, seeded with `lazarus seed` (which also stamps each primary's epoch);
//   - an agent beside EVERY Redis node, not only beside the first replicas: roles move
//     with failovers, and the node that is a replica after a failover needs an agent to
//     guard it against the restart-wipe (see Options.Replicas);
//   - the alerter, lazarus (2 instances, so that shard leases are exercised) and
//     `ratequeue serve` (3 instances).
//
// Every process writes its own log file in the run directory, and Start returns once
// each answers /readyz. Stop (or the end of Start's context) stops everything in
// reverse order and checks that no process is left.
package localstack

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/connect"
	"github.com/heartline/heartline/shared/localaws"
	"github.com/heartline/heartline/shared/proc"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/redisproc"
	"github.com/heartline/heartline/shared/topology"
)

// Stream backends.
const (
	StreamNATS    = "nats"    // embedded NATS with JetStream in this process, NATS KV
	StreamKinesis = "kinesis" // kinesalite + dynalite
)

// Service names, as the chaos driver and the topology's selectors know them.
const (
	Agent     = "agent"
	Alerter   = "alerter"
	Lazarus   = "lazarus"
	Ratequeue = "ratequeue"
)

// Errors.
var (
	// ErrBadOptions: the options cannot describe a topology.
	ErrBadOptions = errors.New("localstack: bad options")
	// ErrNotReady: a process did not become ready (it exited, or its /readyz never
	// answered 200 within the timeout).
	ErrNotReady = errors.New("localstack: not ready")
)

// Binaries are the service binaries the stack runs.
type Binaries struct {
	Agent, Alerter, Lazarus, Ratequeue string
}

// BinariesIn returns the binaries of ./scripts/build's output directory.
func BinariesIn(dir string) Binaries {
	return Binaries{Agent: filepath.Join(dir, Agent), Alerter: filepath.Join(dir, Alerter),
		Lazarus: filepath.Join(dir, Lazarus), Ratequeue: filepath.Join(dir, Ratequeue)}
}

func (b Binaries) check() error {
	var errs []error
	for _, p := range [][2]string{{Agent, b.Agent}, {Alerter, b.Alerter}, {Lazarus, b.Lazarus}, {Ratequeue, b.Ratequeue}} {
		if p[1] == "" {
			errs = append(errs, fmt.Errorf("no %s binary given", p[0]))
			continue
		}
		st, err := os.Stat(p[1])
		switch {
		case err != nil:
			errs = append(errs, fmt.Errorf("%s binary: %w (run ./scripts/build)", p[0], err))
		case st.IsDir() || st.Mode()&0o111 == 0:
			errs = append(errs, fmt.Errorf("%s binary %s is not an executable file", p[0], p[1]))
		}
	}
	return errors.Join(errs...)
}

// LinkFunc routes one link through a proxy: the processes on the from side are given
// the returned address instead of upstream (host:port). The chaos game day passes
// netfault's proxies here, so that a partition of client->ratequeue or agents->stream
// can be injected. The parts are "client"->"ratequeue" (one call per ratequeue serve
// instance) and "agents"->"stream" (one call: every agent publishes through it).
type LinkFunc func(from, to, upstream string) (addr string, err error)

// Options describe the stack.
type Options struct {
	// Dir is the run directory: logs/, redis/, services' data and the topology file
	// (required; created if missing).
	Dir  string
	Bins Binaries
	// Shards (default 3) of a primary and Replicas replicas (default 1) each.
	Shards   int
	Replicas int
	// Spares (default 0) are empty Redis nodes in lazarus's spare pool (added with
	// `lazarus spares add`), each with an agent beside it.
	Spares int
	// Durability sets a shard's durability policy in the seeded topology, by shard id
	// (strict or degrade; unset: the fleet default, strict).
	Durability map[string]string
	// Stream is StreamNATS (default) or StreamKinesis.
	Stream string
	// LazarusInstances (default 2) and RatequeueInstances (default 3).
	LazarusInstances   int
	RatequeueInstances int
	// Link, when set, routes client->ratequeue and agents->stream.
	Link LinkFunc
	// Settings of the services (zero: the game-day defaults, see Settings).
	Settings Settings
	// RedisDirectives are extra redis.conf directives for every node.
	RedisDirectives [][2]string
	// ReadyTimeout bounds the wait for every process's /readyz (default 2 min: the
	// machine may be loaded).
	ReadyTimeout time.Duration
	Log          zerolog.Logger
}

// Settings are the services' settings for back-to-back experiments. Zero values take
// the defaults documented on each field; the remaining settings are the services' own
// defaults (detection: 250 ms probes, 3 failures and 500 ms; see docs/design.md).
type Settings struct {
	// LazarusCooldown is lazarus's per-shard hold after a failover (-cooldown).
	// Default 5 s instead of 30 s: the pack fails the same shard over in consecutive
	// experiments about a minute apart, and every experiment first waits until the
	// shard is healthy again.
	LazarusCooldown time.Duration
	// LazarusMaxPerWindow is the fleet limit of failovers per -window (10 min).
	// Default 50 instead of 5: the pack makes 4 deliberate failovers per round and a
	// game day may run several rounds; -max-concurrent stays at 2.
	LazarusMaxPerWindow int
	// AlerterFlapWindow is the alerter's flap-detection window (-flap-window). Default
	// 30 s instead of 2 min: more than 4 state changes of one shard within 30 s still
	// mark it flapping, but two experiments on the same shard a minute apart do not.
	AlerterFlapWindow time.Duration
	// Args are extra flags per service (Agent, Alerter, Lazarus, Ratequeue), appended
	// last so that they win.
	Args map[string][]string
}

func (s *Settings) defaults() {
	if s.LazarusCooldown == 0 {
		s.LazarusCooldown = 5 * time.Second
	}
	if s.LazarusMaxPerWindow == 0 {
		s.LazarusMaxPerWindow = 50
	}
	if s.AlerterFlapWindow == 0 {
		s.AlerterFlapWindow = 30 * time.Second
	}
}

// Directives are the redis.conf lines every node gets on top of redisproc's defaults
// (persistence off, immediate diskless syncs, repl-timeout 5, min-replicas-max-lag 5):
// an isolated primary refuses writes (docs/design.md, fencing), and a replica does not
// keep the RDB file of its last full sync on disk (rdb-del-sync-files), so that a node
// restarted by the supervisor comes back truly empty, as persistence off means: the
// restart-wipe case the pack must survive.
var Directives = [][2]string{
	{"min-replicas-to-write", "1"},
	{"rdb-del-sync-files", "yes"},
}

// Node is one redis-server of the stack.
type Node struct {
	// Shard is the shard the node belongs to.
	Shard string
	*redisproc.Process
}

// Shard is one shard as started: Nodes[0] was the first primary (roles move with
// failovers: read the topology for the current ones).
type Shard struct {
	ID    string
	Nodes []*Node
}

// Service is one service process.
type Service struct {
	Name     string
	Instance int // 1-based
	// Node is the Redis node an agent runs beside.
	Node string
	// HTTP is the host:port of /healthz, /readyz and /metrics (ratequeue: its API).
	HTTP string
	// URL is what clients use for a ratequeue instance (through the link, if any).
	URL  string
	Proc *proc.Process
	Log  string
}

// Stack is a running topology.
type Stack struct {
	o        Options
	log      zerolog.Logger
	Platform *connect.Platform
	Shards   []Shard
	// SpareNodes are the spare Redis nodes as started (they may have been attached to
	// a shard since: read the topology).
	SpareNodes []*Node
	Services   []*Service
	// Seeded is the topology as seeded.
	Seeded topology.Map

	streamURL, kvURL string // for the services (-stream, -kv)
	agentStream      string // the agents' -stream (through the link)
	aws              []*localaws.Server

	stopOnce sync.Once
	stopErr  error
	stopCtx  context.CancelFunc
}

// Start starts the stack and waits until every process is ready. On error, what was
// started is stopped. The stack stops when ctx ends, or on Stop.
func Start(ctx context.Context, o Options) (*Stack, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	s := &Stack{o: o, log: o.Log.With().Str("component", "localstack").Logger()}
	if err := s.start(ctx); err != nil {
		_ = s.Stop()
		return nil, err
	}
	wctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	s.stopCtx = cancel
	go func() {
		select {
		case <-ctx.Done():
			_ = s.Stop()
		case <-wctx.Done():
		}
	}()
	return s, nil
}

func (o *Options) defaults() error {
	var errs []error
	if o.Dir == "" {
		errs = append(errs, errors.New("Dir is required"))
	}
	if o.Shards == 0 {
		o.Shards = 3
	}
	if o.Replicas == 0 {
		o.Replicas = 1
	}
	if o.LazarusInstances == 0 {
		o.LazarusInstances = 2
	}
	if o.RatequeueInstances == 0 {
		o.RatequeueInstances = 3
	}
	if o.Stream == "" {
		o.Stream = StreamNATS
	}
	if o.ReadyTimeout <= 0 {
		o.ReadyTimeout = 2 * time.Minute
	}
	if o.Shards < 1 || o.Shards > 100 {
		errs = append(errs, fmt.Errorf("Shards %d: want 1 to 100", o.Shards))
	}
	if o.Spares < 0 || o.Spares > 10 {
		errs = append(errs, fmt.Errorf("Spares %d: want 0 to 10", o.Spares))
	}
	for id, d := range o.Durability {
		if d == "" || !topology.ValidDurability(d) {
			errs = append(errs, fmt.Errorf("Durability of %s %q: want strict or degrade", id, d))
		}
	}
	if o.Replicas < 1 || o.Replicas > 5 {
		errs = append(errs, fmt.Errorf("Replicas %d: want 1 to 5 (a shard needs a replica to fail over to)", o.Replicas))
	}
	if o.LazarusInstances < 1 || o.RatequeueInstances < 1 {
		errs = append(errs, errors.New("at least one lazarus and one ratequeue instance"))
	}
	if o.Stream != StreamNATS && o.Stream != StreamKinesis {
		errs = append(errs, fmt.Errorf("Stream %q: want %s or %s", o.Stream, StreamNATS, StreamKinesis))
	}
	if err := o.Bins.check(); err != nil {
		errs = append(errs, err)
	}
	if _, err := redisproc.Binary(); err != nil {
		errs = append(errs, err)
	}
	o.Settings.defaults()
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrBadOptions, err)
	}
	// Processes run in their own directories: every path must be absolute.
	for _, p := range []*string{&o.Dir, &o.Bins.Agent, &o.Bins.Alerter, &o.Bins.Lazarus, &o.Bins.Ratequeue} {
		abs, err := filepath.Abs(*p)
		if err != nil {
			return fmt.Errorf("%w: %w", ErrBadOptions, err)
		}
		*p = abs
	}
	return nil
}

func (s *Stack) path(parts ...string) string {
	return filepath.Join(append([]string{s.o.Dir}, parts...)...)
}

func (s *Stack) start(ctx context.Context) error {
	for _, d := range []string{s.path("logs"), s.path("redis"), s.path("data")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	begun := time.Now()
	if err := s.startStream(ctx); err != nil {
		return err
	}
	if err := s.startShards(ctx); err != nil {
		return err
	}
	if err := s.seed(ctx); err != nil {
		return err
	}
	if err := s.startServices(ctx); err != nil {
		return err
	}
	s.log.Info().Int("shards", len(s.Shards)).Int("processes", len(s.Services)).Str("stream", s.o.Stream).
		Dur("took", time.Since(begun)).Str("dir", s.o.Dir).Msg("local stack ready")
	return nil
}

// ---- stream and kv ----

func (s *Stack) startStream(ctx context.Context) error {
	switch s.o.Stream {
	case StreamNATS:
		pl, err := connect.Open(ctx, connect.Config{DataDir: s.path("data", "launcher"), NATSListen: "127.0.0.1:-1", Instance: "localstack"}, s.o.Log)
		if err != nil {
			return fmt.Errorf("starting the embedded NATS server: %w", err)
		}
		s.Platform = pl
		s.streamURL = pl.NATSURL
		s.agentStream = pl.NATSURL
		if s.o.Link != nil {
			u, err := url.Parse(pl.NATSURL)
			if err != nil {
				return fmt.Errorf("NATS URL %q: %w", pl.NATSURL, err)
			}
			addr, err := s.o.Link("agents", "stream", u.Host)
			if err != nil {
				return fmt.Errorf("routing agents->stream: %w", err)
			}
			s.agentStream = "nats://" + addr
		}
	case StreamKinesis:
		dir, err := localaws.FindDir()
		if err != nil {
			return err
		}
		if err := localaws.Check(dir); err != nil {
			return err
		}
		kin, err := s.startAWS(ctx, "kinesalite", localaws.StartKinesis, dir)
		if err != nil {
			return err
		}
		dyn, err := s.startAWS(ctx, "dynalite", localaws.StartDynamo, dir)
		if err != nil {
			return err
		}
		s.kvURL = fmt.Sprintf("dynamodb://heartline?region=%s&endpoint=%s", localaws.Region, dyn.Endpoint())
		s.streamURL = KinesisURL(kin.Endpoint())
		s.agentStream = s.streamURL
		if s.o.Link != nil {
			addr, err := s.o.Link("agents", "stream", kin.Addr())
			if err != nil {
				return fmt.Errorf("routing agents->stream: %w", err)
			}
			s.agentStream = KinesisURL("http://" + addr)
		}
		pl, err := connect.Open(ctx, connect.Config{Stream: s.streamURL, KV: s.kvURL, DataDir: s.path("data", "launcher"), Instance: "localstack"}, s.o.Log)
		if err != nil {
			return fmt.Errorf("opening Kinesis and DynamoDB: %w", err)
		}
		s.Platform = pl
	}
	return nil
}

// KinesisURL is the stream setting for kinesalite at endpoint: two shards per topic
// (heartbeats of different shards spread over both), streams created on first use,
// and GetRecords paced at 50 ms (kinesalite has no 5-calls-per-second limit; the
// default 200 ms would add up to 0.4 s to detection).
func KinesisURL(endpoint string) string {
	return fmt.Sprintf("kinesis://heartline?region=%s&endpoint=%s&shards=2&poll=50ms&min_get=50ms", localaws.Region, endpoint)
}

func (s *Stack) startAWS(ctx context.Context, name string, start func(context.Context, localaws.Options) (*localaws.Server, error), dir string) (*localaws.Server, error) {
	f, err := os.OpenFile(s.path("logs", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return nil, err
	}
	srv, err := start(ctx, localaws.Options{Dir: dir, Output: f, StartTimeout: time.Minute})
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	s.aws = append(s.aws, srv)
	go func() { <-srv.Done(); f.Close() }()
	s.log.Info().Str("endpoint", srv.Endpoint()).Int("pid", srv.PID()).Msg(name + " started")
	return srv, nil
}

// StreamURL is the -stream setting of the stack's services (HEARTLINE_STREAM).
func (s *Stack) StreamURL() string { return s.streamURL }

// KVURL is the -kv setting of the stack's services (HEARTLINE_KV; "" follows the stream).
func (s *Stack) KVURL() string { return s.kvURL }

// Env is the environment for other Heartline commands run against the stack
// (`lazarus status`, `ratequeue load -direct`).
func (s *Stack) Env() []string {
	return []string{"HEARTLINE_STREAM=" + s.streamURL, "HEARTLINE_KV=" + s.kvURL}
}

// ---- redis ----

func (s *Stack) startShards(ctx context.Context) error {
	dirs := append(append([][2]string(nil), Directives...), s.o.RedisDirectives...)
	for i := 1; i <= s.o.Shards; i++ {
		sh := Shard{ID: fmt.Sprintf("shard-%d", i)}
		var primary string
		for n := 1; n <= 1+s.o.Replicas; n++ {
			cfg := redisproc.Config{Name: fmt.Sprintf("%s-n%d", sh.ID, n), Dir: s.path("redis"), Directives: dirs}
			if n > 1 {
				cfg.ReplicaOf = primary
			}
			p, err := redisproc.Start(ctx, cfg)
			if err != nil {
				return fmt.Errorf("starting %s: %w", cfg.Name, err)
			}
			if n == 1 {
				primary = p.Addr()
			}
			sh.Nodes = append(sh.Nodes, &Node{Shard: sh.ID, Process: p})
		}
		s.Shards = append(s.Shards, sh)
	}
	for i := 1; i <= s.o.Spares; i++ {
		cfg := redisproc.Config{Name: fmt.Sprintf("spare-%d", i), Dir: s.path("redis"), Directives: dirs}
		p, err := redisproc.Start(ctx, cfg)
		if err != nil {
			return fmt.Errorf("starting %s: %w", cfg.Name, err)
		}
		s.SpareNodes = append(s.SpareNodes, &Node{Process: p})
	}
	for _, sh := range s.Shards {
		if err := waitLinked(ctx, sh, time.Minute); err != nil {
			return err
		}
	}
	return nil
}

// waitLinked waits until every replica of a freshly started shard has its link up.
func waitLinked(ctx context.Context, sh Shard, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		why := ""
		for _, n := range sh.Nodes[1:] {
			info, err := nodeInfo(ctx, n.Addr())
			switch {
			case err != nil:
				why = fmt.Sprintf("%s: %v", n.Addr(), err)
			case !info.LinkUp || info.SyncInProgress:
				why = fmt.Sprintf("%s: link to %s not up yet", n.Addr(), sh.Nodes[0].Addr())
			}
		}
		if why == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s: %s", ErrNotReady, sh.ID, why)
		}
		if err := sleep(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

func nodeInfo(ctx context.Context, addr string) (redisinfo.Node, error) {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second, ReadTimeout: 2 * time.Second,
		ContextTimeoutEnabled: true, PoolSize: 1, DisableIdentity: true})
	defer c.Close()
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	return redisinfo.Read(ictx, c)
}

// Nodes lists every Redis node of the stack, the spares last.
func (s *Stack) Nodes() []*Node {
	var out []*Node
	for _, sh := range s.Shards {
		out = append(out, sh.Nodes...)
	}
	return append(out, s.SpareNodes...)
}

// AuditDials reads every Redis node's log and returns each master address a node
// tried to reach ("Connecting to MASTER host:port"), and those outside loopback. The
// stack starts everything on loopback and parks replicas on loopback, so off must be
// empty: anything in it is traffic that left the machine.
func (s *Stack) AuditDials() (all, off []redisproc.Dial, err error) {
	var procs []*redisproc.Process
	for _, n := range s.Nodes() {
		procs = append(procs, n.Process)
	}
	return redisproc.AuditDials(procs)
}

// Node returns the node listening on addr.
func (s *Stack) Node(addr string) *Node {
	for _, n := range s.Nodes() {
		if n.Addr() == addr {
			return n
		}
	}
	return nil
}

// ---- topology ----

func (s *Stack) seed(ctx context.Context) error {
	var m topology.Map
	for i, sh := range s.Shards {
		ts := topology.Shard{ID: sh.ID, Index: i, Epoch: 1, Primary: sh.Nodes[0].Addr(), Durability: s.o.Durability[sh.ID]}
		for _, n := range sh.Nodes[1:] {
			ts.Replicas = append(ts.Replicas, n.Addr())
		}
		m.Shards = append(m.Shards, ts)
	}
	file := s.path("topology.json")
	if err := topology.WriteFile(file, m); err != nil {
		return err
	}
	sctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(sctx, s.o.Bins.Lazarus, "seed", "-stream", s.streamURL, "-kv", s.kvURL, "-topology", file,
		"-data-dir", s.path("data", "seed"), "-log-format", "json")
	cmd.Env = s.childEnv()
	out, err := cmd.CombinedOutput()
	_ = os.WriteFile(s.path("logs", "lazarus-seed.log"), out, 0o644)
	if err != nil {
		return fmt.Errorf("lazarus seed: %v: %s", err, tail(string(out), 2000))
	}
	s.Seeded = m
	s.log.Info().Str("file", file).Msg("topology seeded (lazarus seed), primaries stamped at epoch 1")
	for _, n := range s.SpareNodes {
		cmd := exec.CommandContext(sctx, s.o.Bins.Lazarus, "spares", "add", "-addr", n.Addr(), "-by", "localstack", "-stream", s.streamURL, "-kv", s.kvURL,
			"-data-dir", s.path("data", "seed"), "-log-format", "json")
		cmd.Env = s.childEnv()
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("lazarus spares add %s: %v: %s", n.Addr(), err, tail(string(out), 2000))
		}
	}
	if len(s.SpareNodes) > 0 {
		s.log.Info().Int("spares", len(s.SpareNodes)).Msg("spare pool filled (lazarus spares add)")
	}
	return nil
}

// Topology reads the current topology from the kv store.
func (s *Stack) Topology(ctx context.Context) (topology.Map, error) {
	return topology.Store{KV: s.Platform.KV}.Load(ctx)
}

// ---- services ----

// childEnv is the services' environment: the parent's, without Heartline settings
// that could contradict the flags given.
func (s *Stack) childEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "HEARTLINE_") || strings.HasPrefix(k, "AGENT_") || strings.HasPrefix(k, "ALERTER_") ||
			strings.HasPrefix(k, "LAZARUS_") || strings.HasPrefix(k, "RATEQUEUE_") {
			continue
		}
		env = append(env, kv)
	}
	return env
}

func (s *Stack) startServices(ctx context.Context) error {
	type plan struct {
		name, node string
		inst       int
		args       func(listen string) []string
		bin        string
	}
	common := func(name string, inst int, stream string) []string {
		return []string{"-stream", stream, "-kv", s.kvURL, "-data-dir", s.path("data", fmt.Sprintf("%s-%d", name, inst)), "-log-format", "json"}
	}
	var plans []plan
	inst := 0
	// An agent beside every node, spares included. No -shard: each agent follows its
	// node through the topology (the shard that lists it; none while it is a spare),
	// because lazarus moves nodes between shards and the spare pool.
	for _, n := range s.Nodes() {
		inst++
		n, i := n, inst
		plans = append(plans, plan{name: Agent, inst: i, node: n.Addr(), bin: s.o.Bins.Agent, args: func(listen string) []string {
			a := append(common(Agent, i, s.agentStream), "-replica", n.Addr(), "-http-listen", listen,
				"-instance", "agent-"+n.Name(), "-topology-file", s.path("data", fmt.Sprintf("%s-%d", Agent, i), "topology.json"))
			return append(a, s.o.Settings.Args[Agent]...)
		}})
	}
	plans = append(plans, plan{name: Alerter, inst: 1, bin: s.o.Bins.Alerter, args: func(listen string) []string {
		a := append(common(Alerter, 1, s.streamURL), "-http-listen", listen, "-instance", "alerter-1",
			"-flap-window", s.o.Settings.AlerterFlapWindow.String())
		return append(a, s.o.Settings.Args[Alerter]...)
	}})
	for i := 1; i <= s.o.LazarusInstances; i++ {
		plans = append(plans, plan{name: Lazarus, inst: i, bin: s.o.Bins.Lazarus, args: func(listen string) []string {
			a := append([]string{"run"}, common(Lazarus, i, s.streamURL)...)
			a = append(a, "-listen", listen, "-instance", fmt.Sprintf("lazarus-%d", i),
				"-cooldown", s.o.Settings.LazarusCooldown.String(), "-max-per-window", strconv.Itoa(s.o.Settings.LazarusMaxPerWindow))
			return append(a, s.o.Settings.Args[Lazarus]...)
		}})
	}
	for i := 1; i <= s.o.RatequeueInstances; i++ {
		plans = append(plans, plan{name: Ratequeue, inst: i, bin: s.o.Bins.Ratequeue, args: func(listen string) []string {
			a := append([]string{"serve"}, common(Ratequeue, i, s.streamURL)...)
			a = append(a, "-listen", listen, "-topology-file", s.path("data", fmt.Sprintf("%s-%d", Ratequeue, i), "topology.json"))
			return append(a, s.o.Settings.Args[Ratequeue]...)
		}})
	}
	// Start everything, then wait for every /readyz at once.
	errc := make(chan error, len(plans))
	var wg sync.WaitGroup
	var mu sync.Mutex
	for _, p := range plans {
		svc := &Service{Name: p.name, Instance: p.inst, Node: p.node, Log: s.path("logs", fmt.Sprintf("%s-%d.log", p.name, p.inst))}
		if p.name == Agent {
			svc.Log = s.path("logs", fmt.Sprintf("agent-%d-%s.log", p.inst, strings.NewReplacer(":", "_").Replace(p.node)))
		}
		if err := os.MkdirAll(s.path("data", fmt.Sprintf("%s-%d", p.name, p.inst)), 0o755); err != nil {
			return err
		}
		mu.Lock()
		s.Services = append(s.Services, svc)
		mu.Unlock()
		wg.Add(1)
		go func() {
			defer wg.Done()
			errc <- s.startService(ctx, svc, p.bin, p.args)
		}()
	}
	wg.Wait()
	close(errc)
	var errs []error
	for err := range errc {
		if err != nil {
			errs = append(errs, err)
		}
	}
	if err := errors.Join(errs...); err != nil {
		return err
	}
	if s.o.Link != nil {
		for _, svc := range s.ServicesNamed(Ratequeue) {
			addr, err := s.o.Link("client", "ratequeue", svc.HTTP)
			if err != nil {
				return fmt.Errorf("routing client->ratequeue: %w", err)
			}
			svc.URL = "http://" + addr
		}
	}
	return nil
}

// startService starts one process on a free port and waits for its /readyz. A process
// that exits before it is ready (for example: the port was taken in between) is
// started again on another port, twice at most.
func (s *Stack) startService(ctx context.Context, svc *Service, bin string, args func(listen string) []string) error {
	var last error
	for attempt := 0; attempt < 3; attempt++ {
		port, err := redisproc.FreePort()
		if err != nil {
			return err
		}
		svc.HTTP = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		svc.URL = "http://" + svc.HTTP
		// The children inherit the environment; every setting that matters is a flag,
		// and flags win over environment variables.
		p := proc.New(proc.Spec{Name: fmt.Sprintf("%s-%d", svc.Name, svc.Instance), Path: bin, Args: args(svc.HTTP),
			Dir: s.path("data", fmt.Sprintf("%s-%d", svc.Name, svc.Instance)), Log: svc.Log})
		if err := p.Start(); err != nil {
			return err
		}
		svc.Proc = p
		last = s.waitReady(ctx, svc)
		if last == nil {
			s.log.Debug().Str("service", svc.Name).Int("instance", svc.Instance).Str("http", svc.HTTP).Int("pid", p.PID()).Msg("ready")
			return nil
		}
		if p.Running() {
			return last // alive and not ready: no point in another port
		}
	}
	return last
}

func (s *Stack) waitReady(ctx context.Context, svc *Service) error {
	deadline := time.Now().Add(s.o.ReadyTimeout)
	hc := &http.Client{Timeout: 2 * time.Second}
	why := "no answer yet"
	for {
		select {
		case <-svc.Proc.Exited():
			return fmt.Errorf("%w: %s-%d exited before it was ready; log %s:\n%s", ErrNotReady, svc.Name, svc.Instance, svc.Log, tailFile(svc.Log, 3000))
		default:
		}
		resp, err := hc.Get("http://" + svc.HTTP + "/readyz")
		if err == nil {
			b := make([]byte, 512)
			n, _ := resp.Body.Read(b)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			why = fmt.Sprintf("/readyz %d %s", resp.StatusCode, strings.TrimSpace(string(b[:n])))
		} else {
			why = err.Error()
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%w: %s-%d not ready after %s (%s); log %s:\n%s", ErrNotReady, svc.Name, svc.Instance, s.o.ReadyTimeout, why, svc.Log, tailFile(svc.Log, 3000))
		}
		if err := sleep(ctx, 100*time.Millisecond); err != nil {
			return err
		}
	}
}

// NotReady checks every service once and lists those that are not running or whose
// /readyz does not answer 200 (empty: all ready).
func (s *Stack) NotReady(ctx context.Context) []string {
	hc := &http.Client{Timeout: 2 * time.Second}
	var out []string
	for _, svc := range s.Services {
		name := fmt.Sprintf("%s-%d", svc.Name, svc.Instance)
		if svc.Proc == nil || !svc.Proc.Running() {
			out = append(out, name+": not running")
			continue
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+svc.HTTP+"/readyz", nil)
		if err != nil {
			out = append(out, name+": "+err.Error())
			continue
		}
		resp, err := hc.Do(req)
		if err != nil {
			out = append(out, name+": "+err.Error())
			continue
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			out = append(out, fmt.Sprintf("%s: /readyz %d", name, resp.StatusCode))
		}
	}
	return out
}

// ServicesNamed lists the instances of one service, in instance order.
func (s *Stack) ServicesNamed(name string) []*Service {
	var out []*Service
	for _, svc := range s.Services {
		if svc.Name == name {
			out = append(out, svc)
		}
	}
	return out
}

// RatequeueURLs are the base URLs clients use (through the client->ratequeue link).
func (s *Stack) RatequeueURLs() []string {
	var out []string
	for _, svc := range s.ServicesNamed(Ratequeue) {
		out = append(out, svc.URL)
	}
	return out
}

// ---- stop ----

// Stop stops everything in reverse order of start: ratequeue, lazarus, the alerter
// and the agents (SIGTERM, then SIGKILL after 15 s), the Redis nodes, the stream and
// kv (NATS or kinesalite and dynalite). It then checks that none of the processes it
// started is still alive (a supervisor outside may have restarted a node meanwhile) and
// kills what it finds. Safe to call more than once.
func (s *Stack) Stop() error {
	s.stopOnce.Do(func() {
		if s.stopCtx != nil {
			s.stopCtx()
		}
		begun := time.Now()
		var errs []error
		for _, tier := range [][]string{{Ratequeue}, {Lazarus}, {Alerter}, {Agent}} {
			errs = append(errs, s.stopServices(tier[0])...)
		}
		// Two clean passes in a row: a supervisor outside (the chaos driver's) may be
		// starting a node again right now.
		clean := 0
		for pass := 0; pass < 8 && clean < 2; pass++ {
			alive := 0
			for _, n := range s.Nodes() {
				if n.Running() {
					alive++
					if err := n.Kill(); err != nil {
						errs = append(errs, fmt.Errorf("killing %s: %w", n.Name(), err))
					}
				}
			}
			for _, svc := range s.Services {
				if svc.Proc != nil && svc.Proc.Running() {
					alive++
					_ = svc.Proc.Kill()
				}
			}
			if alive == 0 {
				clean++
			} else {
				clean = 0
			}
			time.Sleep(250 * time.Millisecond)
		}
		if s.Platform != nil {
			if err := s.Platform.Close(); err != nil {
				errs = append(errs, fmt.Errorf("closing the stream and kv: %w", err))
			}
		}
		for i := len(s.aws) - 1; i >= 0; i-- {
			if err := s.aws[i].Stop(); err != nil {
				errs = append(errs, fmt.Errorf("stopping %s: %w", s.aws[i].Service(), err))
			}
		}
		s.stopErr = errors.Join(errs...)
		s.log.Info().Dur("took", time.Since(begun)).Err(s.stopErr).Msg("local stack stopped")
	})
	return s.stopErr
}

func (s *Stack) stopServices(name string) []error {
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	for _, svc := range s.ServicesNamed(name) {
		if svc.Proc == nil {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := svc.Proc.Stop(syscall.SIGTERM, 15*time.Second); err != nil {
				mu.Lock()
				errs = append(errs, err)
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return errs
}

// PIDs lists the process ids of everything the stack runs now (tests check that none
// is left after Stop).
func (s *Stack) PIDs() []int {
	var out []int
	for _, n := range s.Nodes() {
		if pid := n.PID(); pid > 0 {
			out = append(out, pid)
		}
	}
	for _, svc := range s.Services {
		if svc.Proc != nil {
			if pid := svc.Proc.PID(); pid > 0 {
				out = append(out, pid)
			}
		}
	}
	for _, a := range s.aws {
		select {
		case <-a.Done():
		default:
			out = append(out, a.PID())
		}
	}
	return out
}

// Dir is the run directory.
func (s *Stack) Dir() string { return s.o.Dir }

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return tail(string(b), n)
}
