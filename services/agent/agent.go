package agent

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/config"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/topology"
)

// Topology is what the agent needs of the shard map: *topology.Follower has it.
type Topology interface {
	Shard(id string) (topology.Shard, error)
	// ShardOfNode finds the shard that has addr as a node (for an agent without
	// -shard: it follows its node between shards and the spare pool).
	ShardOfNode(addr string) (topology.Shard, bool)
	// Changed returns a channel closed at the next change of the map.
	Changed() <-chan struct{}
}

// Options are the Agent's dependencies.
type Options struct {
	Config Config
	// Publisher receives the heartbeats (topic heartbeats, key = shard id).
	Publisher stream.Publisher
	// Topology is the shard map (nil: none yet; see SetTopology). Without one, the
	// primary is -primary or the primary the replica follows, and the epoch is 0.
	Topology Topology
	Log      zerolog.Logger
	// Registry receives the metrics and serves /metrics (required: never the global one).
	Registry *prometheus.Registry
	// PublishRetry is the backoff between publish attempts while the stream is down
	// (zero: DefaultPublishRetry).
	PublishRetry backoff.Policy
}

// Agent is one heartbeat agent, beside one replica.
type Agent struct {
	cfg   Config
	log   zerolog.Logger
	reg   *prometheus.Registry
	m     *metrics
	out   *outbox
	src   events.Source
	start time.Time
	addrs *addrMatcher

	topo atomic.Pointer[topoBox]

	replica *nodeClient
	kick    chan struct{}

	// opMu serialises the commands that change the replica's replication (park and
	// unpark), issued from the probe loop and from the watch goroutine.
	opMu sync.Mutex

	mu      sync.Mutex
	st      state
	primCli *nodeClient   // client of st.primary, guarded by mu
	watchCh chan struct{} // closed when st.primary changes, guarded by mu

	seq       uint64        // probe loop only
	beats     atomic.Uint64 // heartbeats queued (seq, readable from any goroutine)
	lastCycle atomic.Int64  // unix nanoseconds of the end of the last probe cycle
	running   atomic.Bool
}

type topoBox struct{ t Topology }

// state is what the agent knows, guarded by Agent.mu.
type state struct {
	primary string // the guarded primary's host:port; "" unknown
	source  string // where primary came from: flag, topology, replica
	epoch   uint64 // the topology's epoch for the shard (0 without topology)
	named   bool   // the topology names this replica as the shard's primary
	// shard is the shard the node belongs to: -shard, or without it the shard whose
	// topology entry lists the node ("" while the node is a spare or unknown).
	shard string

	// Memory of the current primary, reset when the primary changes.
	runID           string    // last run id seen
	replID          string    // last replication id seen
	offset          int64     // last replication offset seen
	linkSeenUp      bool      // the replica's link to this primary was seen up since the last park
	linkedReplID    string    // the replica's replication id when its link was last seen up
	primaryFails    int       // consecutive failed probes of the primary
	primaryFailedAt time.Time // when the current run of failed probes began
	replicaFails    int       // consecutive failed probes of the replica

	// The replica.
	rep        redisinfo.Node // last INFO read
	repOK      bool
	masterAddr string // the last primary the replica followed (not the park address)

	// Freezing.
	frozen       bool
	park         parkInfo
	opAt         time.Time // last park or unpark: INFO read before it is stale about parking
	healthySince time.Time // unfreeze conditions held continuously since
	leftAlone    string    // why a parked replica is left to lazarus (logged once per reason)
	verify       *verifyInfo
	parkGuardOff bool      // the last park address check found something accepting connections
	sincePark    int       // probe cycles since the last park address check
	parkErrLog   time.Time // when a park skipped for the park address was last logged

	// Drift.
	primaryDrift, replicaDrift []events.ConfigDrift
	driftDueP, driftDueR       bool
	sinceDrift                 int

	flags       map[events.Flag]bool // the last heartbeat's flags
	noPrimaryAt time.Time            // when ErrNoPrimary was last logged
	unknownLog  bool                 // unknown shard in the topology logged
	overridden  string               // the topology's primary when -primary overrides it (logged once)
}

type parkInfo struct {
	reason  string
	detail  string
	at      time.Time
	primary string
	epoch   uint64
}

type verifyInfo struct {
	at            time.Time
	deadline      time.Time
	fullBefore    int64
	partialBefore int64
	statsOK       bool
}

// New checks the configuration and returns an agent; Run starts it.
func New(o Options) (*Agent, error) {
	cfg := o.Config
	var p config.Problems
	cfg.validate(&p)
	if o.Publisher == nil {
		p.Addf("no stream publisher")
	}
	if o.Registry == nil {
		p.Addf("no Prometheus registry")
	}
	if err := p.Err(); err != nil {
		return nil, err
	}
	lc := o.Log.With().Str(logging.FieldNode, cfg.Replica)
	if cfg.Shard != "" {
		lc = lc.Str(logging.FieldShard, cfg.Shard)
	}
	log := lc.Logger()
	m := newMetrics(o.Registry)
	a := &Agent{
		cfg: cfg, log: log, reg: o.Registry, m: m,
		out:     newOutbox(o.Publisher, cfg.BufferSize, o.PublishRetry, log, m),
		src:     events.Source{Service: "agent", Instance: cfg.InstanceName()},
		start:   time.Now().UTC(),
		addrs:   newAddrMatcher(),
		replica: newNodeClient(cfg.Replica, 4, max(cfg.ProbeTimeout, time.Second)),
		kick:    make(chan struct{}, 1),
		watchCh: make(chan struct{}),
	}
	a.st.flags = map[events.Flag]bool{}
	a.st.driftDueP, a.st.driftDueR = true, true
	a.st.sincePark = cfg.DriftEvery // check the park address in the first probe cycle
	a.st.shard = cfg.Shard
	if o.Topology != nil {
		a.topo.Store(&topoBox{o.Topology})
	}
	return a, nil
}

// SetTopology hands the agent a topology that became available after it started (the
// kv store was empty or unreachable at start).
func (a *Agent) SetTopology(t Topology) {
	a.topo.Store(&topoBox{t})
	a.Kick()
}

func (a *Agent) topology() Topology {
	if b := a.topo.Load(); b != nil {
		return b.t
	}
	return nil
}

// Kick asks for a probe now, without waiting for the next tick.
func (a *Agent) Kick() {
	select {
	case a.kick <- struct{}{}:
	default:
	}
}

// ErrRunning: Run was called twice.
var errRunning = errors.New("agent: already running")

// Run probes, publishes and guards the replica until ctx is done. Then it publishes
// what is buffered within the shutdown timeout and returns.
func (a *Agent) Run(ctx context.Context) error {
	if !a.running.CompareAndSwap(false, true) {
		return errRunning
	}
	a.log.Info().Str("replica", a.cfg.Replica).Str("primary_flag", a.cfg.Primary).Dur("interval", a.cfg.Interval).
		Dur("probe_timeout", a.cfg.ProbeTimeout).Bool("freeze", a.cfg.Freeze).Int("desired_params", len(a.cfg.desired)).
		Msg("agent started")
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); a.out.Run(ctx, a.cfg.ShutdownTimeout) }()
	go func() { defer wg.Done(); a.watchLoop(ctx) }()
	a.probeLoop(ctx)
	wg.Wait()
	a.replica.Close()
	a.mu.Lock()
	if a.primCli != nil {
		a.primCli.Close()
	}
	a.mu.Unlock()
	a.log.Info().Uint64("heartbeats", a.seq).Msg("agent stopped")
	return nil
}

func (a *Agent) probeLoop(ctx context.Context) {
	t := time.NewTicker(a.cfg.Interval)
	defer t.Stop()
	a.cycle(ctx)
	for {
		var topoCh <-chan struct{}
		if tp := a.topology(); tp != nil {
			topoCh = tp.Changed()
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-a.kick:
			t.Reset(a.cfg.Interval)
		case <-topoCh:
			t.Reset(a.cfg.Interval)
		}
		a.cycle(ctx)
	}
}

// resolvePrimary works out the guarded primary and the epoch: -primary, else the
// topology's primary, else the primary the replica last followed. A change resets the
// memory of the previous primary and moves the watch connection.
func (a *Agent) resolvePrimary() {
	var addr, source string
	var epoch uint64
	var named bool
	if tp := a.topology(); tp != nil {
		var sh topology.Shard
		var err error
		if a.cfg.Shard != "" {
			sh, err = tp.Shard(a.cfg.Shard)
		} else {
			var ok bool
			if sh, ok = tp.ShardOfNode(a.cfg.Replica); !ok {
				err = ErrSpare
			}
			a.mu.Lock()
			if a.st.shard != sh.ID {
				a.log.Info().Str(logging.FieldShard, sh.ID).Str("previous_shard", a.st.shard).Uint64(logging.FieldEpoch, sh.Epoch).
					Msg("node membership changed (no -shard: following the topology): heartbeats now go to " + orNone(sh.ID))
				a.st.shard = sh.ID
			}
			a.mu.Unlock()
		}
		a.mu.Lock()
		if err != nil && !a.st.unknownLog && !errors.Is(err, ErrSpare) {
			a.log.Warn().Err(err).Msg("shard not in the topology; guarding the primary from -primary or the replica's INFO")
		}
		a.st.unknownLog = err != nil
		a.mu.Unlock()
		if err == nil {
			epoch = sh.Epoch
			named = a.addrs.same(sh.Primary, a.cfg.Replica)
			addr, source = sh.Primary, "topology"
		}
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg.Primary != "" {
		if addr != "" && !a.addrs.same(addr, a.cfg.Primary) && a.st.overridden != addr {
			a.log.Warn().Str("topology_primary", addr).Str("primary_flag", a.cfg.Primary).Uint64(logging.FieldEpoch, epoch).
				Msg("the topology names another primary than -primary; guarding -primary as configured")
		}
		a.st.overridden = addr
		addr, source = a.cfg.Primary, "flag"
	} else if addr == "" {
		addr, source = a.st.masterAddr, "replica"
	}
	if a.st.epoch != epoch && epoch != 0 {
		a.log.Info().Uint64(logging.FieldEpoch, epoch).Uint64("previous_epoch", a.st.epoch).Str("topology_primary", addr).Msg("topology epoch changed")
	}
	a.st.epoch, a.st.named = epoch, named
	if addr == a.st.primary {
		a.st.source = source
		return
	}
	a.log.Info().Str("primary", addr).Str("previous", a.st.primary).Str("source", source).Bool("named_primary", named).
		Msg("guarding primary")
	a.st.primary, a.st.source = addr, source
	a.st.runID, a.st.replID, a.st.offset, a.st.primaryFails = "", "", 0, 0
	a.st.linkSeenUp, a.st.linkedReplID = false, ""
	a.st.healthySince, a.st.leftAlone = time.Time{}, ""
	a.st.primaryDrift, a.st.driftDueP = nil, true
	if a.primCli != nil {
		a.primCli.Close()
		a.primCli = nil
	}
	if addr != "" {
		a.primCli = newNodeClient(addr, 2, a.cfg.ProbeTimeout)
	}
	close(a.watchCh)
	a.watchCh = make(chan struct{})
}

// watchTarget returns the primary to watch and a channel closed when it changes.
func (a *Agent) watchTarget() (string, <-chan struct{}) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.st.primary == "" || a.st.named || a.addrs.same(a.st.primary, a.cfg.Replica) {
		return "", a.watchCh
	}
	return a.st.primary, a.watchCh
}

// Ready reports whether the agent is doing its job: the probe loop ran recently and
// the primary is known.
func (a *Agent) Ready() (bool, string) {
	last := a.lastCycle.Load()
	if last == 0 {
		return false, "no probe cycle yet"
	}
	if age := time.Since(time.Unix(0, last)); age > 3*a.cfg.Interval+2*a.cfg.ProbeTimeout+time.Second {
		return false, fmt.Sprintf("last probe cycle ended %s ago", age.Round(time.Millisecond))
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.cfg.Shard == "" && a.st.shard == "" {
		return true, "spare: the node is in no shard of the topology (no heartbeats until lazarus attaches it)"
	}
	if a.st.primary == "" {
		return false, ErrNoPrimary.Error()
	}
	return true, "probing"
}

func orNone(s string) string {
	if s == "" {
		return "none (a spare)"
	}
	return s
}

// Frozen reports whether the agent holds its replica parked.
func (a *Agent) Frozen() bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.st.frozen
}

// Buffered is the number of heartbeats not yet published.
func (a *Agent) Buffered() int { return a.out.Len() }
