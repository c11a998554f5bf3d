package fault

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/driver"
	"github.com/heartline/heartline/services/chaos/internal/target"
	"github.com/heartline/heartline/shared/redisinfo"
)

// Fault is one fault on one target.
type Fault interface {
	// Apply injects the fault. An error means the fault may not be (fully) in place;
	// Recover is still safe to call.
	Apply(ctx context.Context) error
	// Recover undoes the fault. It is idempotent.
	Recover(ctx context.Context) error
}

// Toxic is a toxiproxy toxic to add to a link.
type Toxic struct {
	Name       string         `json:"name"`
	Type       string         `json:"type"`
	Stream     string         `json:"stream"` // upstream or downstream
	Toxicity   float32        `json:"toxicity"`
	Attributes map[string]any `json:"attributes"`
}

// Links is the network side: the links the chaos runner routes through its proxies.
type Links interface {
	// AddToxic adds a toxic to every proxy of the link.
	AddToxic(link string, t Toxic) error
	// RemoveToxic removes it again (a missing toxic is not an error).
	RemoveToxic(ctx context.Context, link, name string) error
	// SetEnabled stops (connection refused, connections closed) or starts the link's
	// proxies.
	SetEnabled(link string, enabled bool) error
}

// Deps are what faults act through.
type Deps struct {
	Driver driver.Driver
	Links  Links
	// Redis returns a client for a node (nil: a default client). Faults close it.
	Redis func(addr string) *redis.Client
	Log   zerolog.Logger
}

func (d Deps) redis(addr string) *redis.Client {
	if d.Redis != nil {
		return d.Redis(addr)
	}
	return NewRedisClient(addr, 1)
}

// NewRedisClient returns a client for chaos's own short commands: no retries, short
// timeouts that honour the context.
func NewRedisClient(addr string, pool int) *redis.Client {
	return redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: 3 * time.Second, WriteTimeout: 3 * time.Second, ContextTimeoutEnabled: true, PoolSize: pool})
}

// Spec is a validated fault to build.
type Spec struct {
	Kind     Kind
	Params   Params
	Duration time.Duration
	AttackID string
}

// Build returns the fault of spec s on target t.
func Build(s Spec, t target.Target, d Deps) (Fault, error) {
	info, err := Lookup(s.Kind)
	if err != nil {
		return nil, err
	}
	if err := info.CheckTarget(t); err != nil {
		return nil, err
	}
	if s.Params == nil {
		if s.Params, err = info.CheckParams(nil); err != nil {
			return nil, err
		}
	}
	needDriver := func() error {
		if d.Driver == nil {
			return fmt.Errorf("%w: %s needs a process driver and none is configured", driver.ErrUnsupported, s.Kind)
		}
		return nil
	}
	switch info.Group {
	case "process":
		if err := needDriver(); err != nil {
			return nil, err
		}
	case "network":
		if d.Links == nil {
			return nil, fmt.Errorf("%w: %s needs the chaos proxies and this environment routes no link through them", driver.ErrUnsupported, s.Kind)
		}
	}
	switch s.Kind {
	case Kill, Terminate:
		o, err := killOptions(s.Params)
		if err != nil {
			return nil, err
		}
		o.Graceful = s.Kind == Terminate
		return &procFault{d: d, t: t, apply: func(ctx context.Context) error { return d.Driver.Kill(ctx, t, o) }}, nil
	case Pause:
		return &pauseFault{d: d, t: t}, nil
	case Restart:
		o := driver.RestartOptions{Delay: s.Params.Duration("delay"), Wipe: s.Params.Bool("wipe"), Graceful: s.Params.Bool("graceful")}
		return &procFault{d: d, t: t, apply: func(ctx context.Context) error { return d.Driver.Restart(ctx, t, o) }}, nil
	case RestartWrongConfig:
		override, err := wrongConfig(s.Params)
		if err != nil {
			return nil, err
		}
		o := driver.RestartOptions{Delay: s.Params.Duration("delay"), Wipe: s.Params.Bool("wipe"), Config: override}
		return &wrongConfigFault{d: d, t: t, o: o}, nil
	case ShutdownNoSave:
		o, err := killOptions(s.Params)
		if err != nil {
			return nil, err
		}
		return &shutdownFault{d: d, t: t, o: o}, nil
	case ClientPause:
		return &clientPauseFault{d: d, t: t, dur: s.Duration, mode: strings.ToUpper(s.Params["mode"])}, nil
	case ResyncStorm:
		return &resyncFault{d: d, t: t}, nil
	case LoadSpike:
		return &spikeFault{d: d, t: t, key: "heartline:chaos:spike:" + s.AttackID, rate: s.Params.Int("rate"),
			clients: int(s.Params.Int("clients")), size: int(s.Params.Int("value_bytes")), maxItems: s.Params.Int("max_items"),
			dur: s.Duration}, nil
	case Partition, Latency, Reset, Bandwidth:
		return netFault(s, t, d)
	}
	return nil, fmt.Errorf("%w %q", ErrUnknownKind, s.Kind)
}

func killOptions(p Params) (driver.KillOptions, error) {
	switch v := p["restart_after"]; v {
	case "", "supervisor":
		return driver.KillOptions{}, nil
	case "never":
		return driver.KillOptions{NoRestart: true}, nil
	default:
		d, err := ParseDuration(v)
		if err != nil {
			return driver.KillOptions{}, fmt.Errorf("%w: restart_after: %v", ErrBadParam, err)
		}
		if d == 0 {
			return driver.KillOptions{Immediate: true}, nil
		}
		return driver.KillOptions{RestartAfter: d}, nil
	}
}

func wrongConfig(p Params) ([][2]string, error) {
	var out [][2]string
	switch p["config"] {
	case "no-min-replicas", "":
		out = [][2]string{{"min-replicas-to-write", ""}}
	case "persistence-off":
		out = [][2]string{{"save", `""`}, {"appendonly", "no"}}
	case "custom":
	default:
		return nil, fmt.Errorf("%w: config %q", ErrBadParam, p["config"])
	}
	if p["directives"] != "" {
		extra, err := ParseDirectives(p["directives"])
		if err != nil {
			return nil, fmt.Errorf("%w: directives: %v", ErrBadParam, err)
		}
		out = append(out, extra...)
	}
	return out, nil
}

// ---- process faults ----

type procFault struct {
	d     Deps
	t     target.Target
	apply func(ctx context.Context) error
}

func (f *procFault) Apply(ctx context.Context) error { return f.apply(ctx) }

func (f *procFault) Recover(ctx context.Context) error { return f.d.Driver.EnsureRunning(ctx, f.t) }

type pauseFault struct {
	d Deps
	t target.Target
}

func (f *pauseFault) Apply(ctx context.Context) error { return f.d.Driver.Pause(ctx, f.t) }

func (f *pauseFault) Recover(ctx context.Context) error { return f.d.Driver.EnsureRunning(ctx, f.t) }

type wrongConfigFault struct {
	d Deps
	t target.Target
	o driver.RestartOptions
}

func (f *wrongConfigFault) Apply(ctx context.Context) error { return f.d.Driver.Restart(ctx, f.t, f.o) }

// Recover writes the declared config back and applies it with CONFIG SET: the node
// keeps running (and keeps its data).
func (f *wrongConfigFault) Recover(ctx context.Context) error {
	if err := f.d.Driver.EnsureRunning(ctx, f.t); err != nil {
		return err
	}
	declared, err := f.d.Driver.RestoreConfig(ctx, f.t)
	if err != nil {
		return fmt.Errorf("restoring the config of %s: %w", f.t, err)
	}
	c := f.d.redis(f.t.Addr)
	defer c.Close()
	var errs []error
	for _, kv := range declared {
		if err := c.ConfigSet(ctx, kv[0], kv[1]).Err(); err != nil {
			errs = append(errs, fmt.Errorf("CONFIG SET %s %q on %s: %w", kv[0], kv[1], f.t, err))
		}
	}
	return errors.Join(errs...)
}

// ---- Redis-level faults ----

type shutdownFault struct {
	d Deps
	t target.Target
	o driver.KillOptions
}

func (f *shutdownFault) Apply(ctx context.Context) error {
	if s, ok := f.d.Driver.(driver.Supervisor); ok {
		if err := s.SetRestart(f.t, f.o); err != nil && !errors.Is(err, driver.ErrUnknownTarget) {
			return err
		}
	}
	c := f.d.redis(f.t.Addr)
	defer c.Close()
	err := c.ShutdownNoSave(ctx).Err()
	if err == nil || isConnClosed(err) {
		return nil // the node closed the connection as it exited
	}
	return fmt.Errorf("SHUTDOWN NOSAVE on %s: %w", f.t, err)
}

func (f *shutdownFault) Recover(ctx context.Context) error {
	if f.d.Driver == nil {
		return nil
	}
	err := f.d.Driver.EnsureRunning(ctx, f.t)
	if errors.Is(err, driver.ErrUnknownTarget) || errors.Is(err, driver.ErrUnsupported) {
		f.d.Log.Warn().Err(err).Str("target", f.t.String()).Msg("cannot start the node again after SHUTDOWN NOSAVE; its supervisor must")
		return nil
	}
	return err
}

func isConnClosed(err error) bool {
	if errors.Is(err, redis.ErrClosed) || errors.Is(err, net.ErrClosed) {
		return true
	}
	s := err.Error()
	return strings.Contains(s, "EOF") || strings.Contains(s, "connection reset") || strings.Contains(s, "broken pipe")
}

type clientPauseFault struct {
	d    Deps
	t    target.Target
	dur  time.Duration
	mode string
}

func (f *clientPauseFault) Apply(ctx context.Context) error {
	c := f.d.redis(f.t.Addr)
	defer c.Close()
	ms := f.dur.Milliseconds()
	if ms < 1 {
		ms = 1
	}
	if err := c.Do(ctx, "CLIENT", "PAUSE", strconv.FormatInt(ms, 10), f.mode).Err(); err != nil {
		return fmt.Errorf("CLIENT PAUSE on %s: %w", f.t, err)
	}
	return nil
}

func (f *clientPauseFault) Recover(ctx context.Context) error {
	c := f.d.redis(f.t.Addr)
	defer c.Close()
	if err := c.Do(ctx, "CLIENT", "UNPAUSE").Err(); err != nil {
		return fmt.Errorf("CLIENT UNPAUSE on %s: %w", f.t, err)
	}
	return nil
}

type resyncFault struct {
	d Deps
	t target.Target
}

// Apply turns the replica into a primary and back into a replica of the same primary
// in one transaction: its replication id changes, so the primary can only serve it a
// full resync.
func (f *resyncFault) Apply(ctx context.Context) error {
	c := f.d.redis(f.t.Addr)
	defer c.Close()
	info, err := redisinfo.Read(ctx, c)
	if err != nil {
		return fmt.Errorf("reading INFO of %s: %w", f.t, err)
	}
	if info.IsPrimary() {
		return fmt.Errorf("%w: %s is a primary now, not a replica", ErrBadTarget, f.t)
	}
	if info.Parked() {
		return fmt.Errorf("not forcing a resync: %s is parked (its replication is frozen by the agent)", f.t)
	}
	_, err = c.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SlaveOf(ctx, "NO", "ONE")
		p.SlaveOf(ctx, info.MasterHost, strconv.Itoa(info.MasterPort))
		return nil
	})
	if err != nil {
		return fmt.Errorf("forcing a full resync of %s from %s: %w", f.t, info.MasterAddr(), err)
	}
	return nil
}

func (f *resyncFault) Recover(context.Context) error { return nil }

type spikeFault struct {
	d        Deps
	t        target.Target
	key      string
	rate     int64
	clients  int
	size     int
	maxItems int64
	dur      time.Duration

	mu     sync.Mutex
	cancel context.CancelFunc
	wg     sync.WaitGroup
	ops    atomic.Int64
	errs   atomic.Int64
}

func (f *spikeFault) Apply(ctx context.Context) error {
	c := f.d.redis(f.t.Addr)
	if err := c.Ping(ctx).Err(); err != nil {
		c.Close()
		return fmt.Errorf("load spike on %s: %w", f.t, err)
	}
	c.Close()
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.cancel != nil {
		return nil
	}
	// The spike outlives the request that started it, bounded by its duration.
	limit := f.dur
	if limit <= 0 || limit > MaxDuration {
		limit = 10 * time.Minute
	}
	sctx, cancel := context.WithTimeout(context.Background(), limit)
	f.cancel = cancel
	val := strings.Repeat("x", f.size)
	per := time.Duration(float64(time.Second) * float64(f.clients) / float64(f.rate))
	ttl := limit + time.Minute
	for i := 0; i < f.clients; i++ {
		f.wg.Add(1)
		go func() {
			defer f.wg.Done()
			cl := NewRedisClient(f.t.Addr, 1)
			defer cl.Close()
			tick := time.NewTicker(per)
			defer tick.Stop()
			for {
				select {
				case <-sctx.Done():
					return
				case <-tick.C:
				}
				_, err := cl.Pipelined(sctx, func(p redis.Pipeliner) error {
					p.LPush(sctx, f.key, val)
					p.LTrim(sctx, f.key, 0, f.maxItems-1)
					p.PExpire(sctx, f.key, ttl)
					return nil
				})
				if err != nil {
					f.errs.Add(1)
				} else {
					f.ops.Add(1)
				}
			}
		}()
	}
	return nil
}

func (f *spikeFault) Recover(ctx context.Context) error {
	f.mu.Lock()
	cancel := f.cancel
	f.mu.Unlock()
	if cancel != nil {
		cancel()
	}
	f.wg.Wait()
	c := f.d.redis(f.t.Addr)
	defer c.Close()
	if err := c.Unlink(ctx, f.key).Err(); err != nil {
		return fmt.Errorf("removing the load-spike key %s from %s (it expires by itself): %w", f.key, f.t, err)
	}
	return nil
}

// Stats reports what the spike wrote.
func (f *spikeFault) Stats() map[string]string {
	return map[string]string{"writes": strconv.FormatInt(f.ops.Load(), 10), "errors": strconv.FormatInt(f.errs.Load(), 10)}
}

// Statser is implemented by faults that report figures after recovery.
type Statser interface{ Stats() map[string]string }

// ---- network faults ----

type toxicFault struct {
	d      Deps
	link   string
	toxics []Toxic
}

type refuseFault struct {
	d    Deps
	link string
}

func netFault(s Spec, t target.Target, d Deps) (Fault, error) {
	prefix := "chaos-" + s.AttackID
	streams := func(dir string) []string {
		switch dir {
		case "upstream", "downstream":
			return []string{dir}
		}
		return []string{"upstream", "downstream"}
	}
	var tox []Toxic
	switch s.Kind {
	case Partition:
		if s.Params["mode"] == "refuse" {
			return &refuseFault{d: d, link: t.Link}, nil
		}
		for _, st := range streams("both") {
			tox = append(tox, Toxic{Name: prefix + "-partition-" + st, Type: "timeout", Stream: st, Toxicity: 1,
				Attributes: map[string]any{"timeout": 0}})
		}
	case Latency:
		for _, st := range streams(s.Params["direction"]) {
			tox = append(tox, Toxic{Name: prefix + "-latency-" + st, Type: "latency", Stream: st, Toxicity: 1,
				Attributes: map[string]any{"latency": s.Params.Duration("latency").Milliseconds(), "jitter": s.Params.Duration("jitter").Milliseconds()}})
		}
	case Reset:
		tox = append(tox, Toxic{Name: prefix + "-reset", Type: "reset_peer", Stream: "upstream", Toxicity: 1,
			Attributes: map[string]any{"timeout": s.Params.Duration("after").Milliseconds()}})
	case Bandwidth:
		for _, st := range streams(s.Params["direction"]) {
			tox = append(tox, Toxic{Name: prefix + "-bandwidth-" + st, Type: "bandwidth", Stream: st, Toxicity: 1,
				Attributes: map[string]any{"rate": s.Params.Int("rate_kbps")}})
		}
	}
	return &toxicFault{d: d, link: t.Link, toxics: tox}, nil
}

func (f *toxicFault) Apply(ctx context.Context) error {
	for _, t := range f.toxics {
		if err := f.d.Links.AddToxic(f.link, t); err != nil {
			return fmt.Errorf("adding %s to link %s: %w", t.Type, f.link, err)
		}
	}
	return nil
}

func (f *toxicFault) Recover(ctx context.Context) error {
	var errs []error
	for _, t := range f.toxics {
		if err := f.d.Links.RemoveToxic(ctx, f.link, t.Name); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (f *refuseFault) Apply(ctx context.Context) error { return f.d.Links.SetEnabled(f.link, false) }

func (f *refuseFault) Recover(ctx context.Context) error { return f.d.Links.SetEnabled(f.link, true) }
