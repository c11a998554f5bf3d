// Package cli is lazarus's command line: run (the service), seed, events, status,
// pause, resume, switchover and failover. Each command loads its own Config from flags
// and LAZARUS_/HEARTLINE_ environment variables, reports every configuration problem at
// once (exit code 2), and opens the stream and kv store through an injectable opener so
// that tests can run the commands against in-memory backends.
package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/lazarus/internal/redisops"
	"github.com/heartline/heartline/services/lazarus/internal/worker"
	"github.com/heartline/heartline/shared/config"
	"github.com/heartline/heartline/shared/connect"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/lease"
	"github.com/heartline/heartline/shared/lifecycle"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/topology"
)

// ErrUsage: an unknown command or a missing argument (exit code 2, like bad config).
var ErrUsage = errors.New("usage")

// Opener opens the configured stream and kv store.
type Opener func(ctx context.Context, c connect.Config, log zerolog.Logger) (*connect.Platform, error)

// Env is what a command runs with.
type Env struct {
	Getenv func(string) string
	Stdout io.Writer
	Stderr io.Writer
	Open   Opener
	// Now defaults to time.Now.
	Now func() time.Time
}

func (e Env) now() time.Time {
	if e.Now != nil {
		return e.Now()
	}
	return time.Now()
}

// Usage is the command summary.
const Usage = `usage: lazarus <command> [flags]

commands:
  run                                 the failover worker: consumes alerts, fails shards over, reconciles
  seed --topology FILE                store missing shards at epoch 1 and stamp each primary's epoch
  events [--shard N] [--since T] [--json] [--follow]
                                      the failover history as a timeline for on-call
  status [--json]                     shards, primaries, epochs, leases, holds, pauses, last failovers
  pause [--shard N] [--reason R]      pause automation for a shard (fleet-wide without --shard)
  resume [--shard N]                  resume automation (and lift the shard's cooldown)
  switchover --shard N [--to ADDR]    planned zero-loss switch of the shard's primary
  failover --shard N                  forced failover of a shard whose primary is down (skips holds)
  spares list|add|remove [--addr A]   the spare pool: nodes lazarus attaches to a shard left without a replica

Every command reads HEARTLINE_STREAM / HEARTLINE_KV (or -stream / -kv); "lazarus <command> -h"
lists its flags with their environment variables.`

// Run runs one command.
func Run(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 {
		fmt.Fprintln(env.Stderr, Usage)
		return fmt.Errorf("%w: no command", ErrUsage)
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "run":
		return runService(ctx, rest, env)
	case "seed":
		return seed(ctx, rest, env)
	case "events":
		return eventsCmd(ctx, rest, env)
	case "status":
		return status(ctx, rest, env)
	case "pause", "resume":
		return pauseCmd(ctx, cmd, rest, env)
	case "switchover":
		return switchover(ctx, rest, env)
	case "failover":
		return failover(ctx, rest, env)
	case "spares":
		return sparesCmd(ctx, rest, env)
	case "help", "-h", "--help":
		fmt.Fprintln(env.Stdout, Usage)
		return nil
	}
	fmt.Fprintln(env.Stderr, Usage)
	return fmt.Errorf("%w: unknown command %q", ErrUsage, cmd)
}

// common is the part of every command's configuration that says where things are.
type common struct {
	Connect   connect.Config
	LogLevel  string
	LogFormat string
}

func (c *common) register(l *config.Loader) {
	c.Connect.Register(l)
	l.String(&c.LogLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	l.String(&c.LogFormat, "log-format", "", "log format: json or console (default: console on a terminal, else json)")
}

func (c common) validate(p *config.Problems) {
	c.Connect.Validate(p)
	switch c.LogFormat {
	case "", "json", "console":
	default:
		p.Addf("log-format %q: want json or console", c.LogFormat)
	}
	if _, err := zerolog.ParseLevel(strings.ToLower(c.LogLevel)); err != nil {
		p.Addf("log-level %q: want trace, debug, info, warn or error", c.LogLevel)
	}
}

// parse parses args with l (reporting -h as usage) and validates with v.
func parse(l *config.Loader, args []string, env Env, v func(p *config.Problems)) error {
	if err := l.Parse(args, env.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			l.Usage(env.Stdout)
			return nil
		}
		return err
	}
	var p config.Problems
	v(&p)
	return p.Err()
}

func helpAsked(args []string) bool {
	for _, a := range args {
		if a == "-h" || a == "--help" || a == "-help" {
			return true
		}
	}
	return false
}

func (c common) logger(env Env, service string, instance string) (zerolog.Logger, error) {
	return logging.New(logging.Options{Service: service, Instance: instance, Level: c.LogLevel, Format: c.LogFormat, Out: env.Stderr})
}

func (c common) open(ctx context.Context, env Env, log zerolog.Logger) (*connect.Platform, error) {
	open := env.Open
	if open == nil {
		open = connect.Open
	}
	p, err := open(ctx, c.Connect, log)
	if err != nil {
		return nil, fmt.Errorf("opening the stream and kv store: %w", err)
	}
	return p, nil
}

// ---- run ----

// RunConfig configures `lazarus run`.
type RunConfig struct {
	common
	Instance           string
	Listen             string
	LeaseTTL           time.Duration
	LeaseWait          time.Duration
	CheckTimeout       time.Duration
	ActionTimeout      time.Duration
	Cooldown           time.Duration
	MaxConcurrent      int
	MaxPerWindow       int
	Window             time.Duration
	MaxLag             int
	ReconcileInterval  time.Duration
	VerifyTimeout      time.Duration
	FailoverTimeout    time.Duration
	ParkGrace          time.Duration
	MinReplicasToWrite int
	CatchUpTimeout     time.Duration
	PauseFor           time.Duration
	ShutdownTimeout    time.Duration
	WatchOpen          time.Duration
	ParkAddr           string
	SpareAfter         time.Duration
	SpareSyncTimeout   time.Duration
	Durability         string
}

// Register binds the flags of `lazarus run`.
func (c *RunConfig) Register(l *config.Loader) {
	c.register(l)
	l.String(&c.Instance, "instance", "", "this instance's name in logs, events and lease owners (default: hostname-pid)")
	l.String(&c.Listen, "listen", "127.0.0.1:9402", "address of /healthz, /readyz and /metrics")
	l.Duration(&c.LeaseTTL, "lease-ttl", 10*time.Second, "per-shard lease TTL; a dead worker's unfinished failover is taken over after it")
	l.Duration(&c.LeaseWait, "lease-wait", 5*time.Second, "how long an alert waits for a shard lease held by another worker")
	l.Duration(&c.CheckTimeout, "check-timeout", 200*time.Millisecond, "timeout of one check of one node (dial + INFO)")
	l.Duration(&c.ActionTimeout, "action-timeout", 2*time.Second, "timeout of one action on a node (REPLICAOF, CONFIG SET, ...)")
	l.Duration(&c.Cooldown, "cooldown", 30*time.Second, "a shard that failed over is held for this long")
	l.Int(&c.MaxConcurrent, "max-concurrent", 2, "most failovers running at once in the fleet (-1: no limit)")
	l.Int(&c.MaxPerWindow, "max-per-window", 5, "most failovers started within -window in the fleet (-1: no limit)")
	l.Duration(&c.Window, "window", 10*time.Minute, "window of -max-per-window")
	l.Int(&c.MaxLag, "max-lag-bytes", 1<<20, "most a candidate may be behind the old primary's last known offset (-1: no bound)")
	l.Duration(&c.ReconcileInterval, "reconcile-interval", time.Second, "interval of the reconcile loop (demote returning primaries, repoint replicas, recover failovers)")
	l.Duration(&c.VerifyTimeout, "verify-timeout", 5*time.Second, "how long the verify step waits for a replica to acknowledge a write")
	l.Duration(&c.FailoverTimeout, "failover-timeout", 30*time.Second, "bound of one failover")
	l.Duration(&c.ParkGrace, "park-grace", 10*time.Second, "a replica parked while its primary is fine is repointed by lazarus after this long (the agent normally unparks it)")
	l.Int(&c.MinReplicasToWrite, "min-replicas-to-write", 1, "value restored on a node left fenced")
	l.Duration(&c.CatchUpTimeout, "catch-up-timeout", 5*time.Second, "switchover: how long to wait for the target to catch up")
	l.Duration(&c.PauseFor, "pause-for", 10*time.Second, "switchover: CLIENT PAUSE safety timeout on the old primary")
	l.Duration(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "how long shutdown waits for in-flight work")
	l.String(&c.ParkAddr, "park-addr", redisinfo.DefaultPark.Addr(), redisinfo.ParkUsage+" (lazarus only recognises it: the agents park)")
	l.Shared("park-addr")
	l.Duration(&c.SpareAfter, "spare-after", 2*time.Second, "a shard whose replicas all stay unreachable this long (its primary fine) gets a spare from the pool (-1s: never)")
	l.String(&c.Durability, "durability", topology.DurabilityStrict, "fleet default for a shard with no replica in sync (a shard's topology entry overrides it): strict (refuse writes until a replica or spare is in sync) or degrade (acknowledge on the primary alone, replicated: false, until one is)")
	l.Duration(&c.SpareSyncTimeout, "spare-sync-timeout", time.Minute, "how long an attached spare may take to sync before the attach is given up (and retried)")
	l.Duration(&c.WatchOpen, "watch-open-alerts", time.Minute, "an alert judged PRIMARY_HEALTHY is re-checked every reconcile pass for this long, or until resolved (-1s: never)")
}

// Validate reports every problem.
func (c RunConfig) Validate(p *config.Problems) {
	c.validate(p)
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"lease-ttl", c.LeaseTTL}, {"lease-wait", c.LeaseWait}, {"check-timeout", c.CheckTimeout}, {"action-timeout", c.ActionTimeout},
		{"cooldown", c.Cooldown}, {"window", c.Window}, {"reconcile-interval", c.ReconcileInterval}, {"verify-timeout", c.VerifyTimeout},
		{"failover-timeout", c.FailoverTimeout}, {"park-grace", c.ParkGrace}, {"catch-up-timeout", c.CatchUpTimeout},
		{"pause-for", c.PauseFor}, {"shutdown-timeout", c.ShutdownTimeout}, {"spare-sync-timeout", c.SpareSyncTimeout}} {
		p.Positive(d.name, d.v)
	}
	p.Check(c.ReconcileInterval >= c.LeaseTTL, "reconcile-interval %s must be below lease-ttl %s", c.ReconcileInterval, c.LeaseTTL)
	p.Check(c.CatchUpTimeout >= c.PauseFor, "catch-up-timeout %s must be below pause-for %s", c.CatchUpTimeout, c.PauseFor)
	p.Check(c.MaxConcurrent == 0, "max-concurrent must be positive, or -1 for no limit")
	p.Check(c.MaxPerWindow == 0, "max-per-window must be positive, or -1 for no limit")
	p.Check(c.MaxLag == 0, "max-lag-bytes must be positive, or -1 for no bound")
	p.Check(c.WatchOpen == 0, "watch-open-alerts must be positive, or negative for never")
	p.Check(c.SpareAfter == 0, "spare-after must be positive, or negative for never")
	p.Check(c.Durability == "" || !topology.ValidDurability(c.Durability), "durability %q: want strict or degrade", c.Durability)
	p.Check(c.MinReplicasToWrite < 1, "min-replicas-to-write must be at least 1, got %d", c.MinReplicasToWrite)
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		p.Addf("listen %q: want host:port", c.Listen)
	}
	if _, err := redisinfo.ParsePark(c.ParkAddr); err != nil {
		p.Addf("park-addr: %v", err)
	}
}

func (c *RunConfig) defaultInstance() {
	if c.Instance == "" {
		host, _ := os.Hostname()
		c.Instance = fmt.Sprintf("%s-%d", host, os.Getpid())
	}
}

// Settings turns the configuration into worker settings.
func (c RunConfig) Settings() worker.Settings {
	park, _ := redisinfo.ParsePark(c.ParkAddr) // checked by Validate
	return worker.Settings{Instance: c.Instance, LeaseTTL: c.LeaseTTL, LeaseWait: c.LeaseWait, CheckTimeout: c.CheckTimeout,
		ActionTimeout: c.ActionTimeout, Cooldown: c.Cooldown, MaxConcurrent: c.MaxConcurrent, MaxPerWindow: c.MaxPerWindow,
		Window: c.Window, MaxLag: int64(c.MaxLag), ReconcileInterval: c.ReconcileInterval, VerifyTimeout: c.VerifyTimeout,
		FailoverTimeout: c.FailoverTimeout, ParkGrace: c.ParkGrace, MinReplicasToWrite: c.MinReplicasToWrite,
		CatchUpTimeout: c.CatchUpTimeout, PauseFor: c.PauseFor, WatchOpen: c.WatchOpen, Park: park,
		SpareAfter: c.SpareAfter, SpareSyncTimeout: c.SpareSyncTimeout, Durability: c.Durability}
}

// RunLoader returns the loader of `lazarus run` bound to c (the README's table).
func RunLoader(c *RunConfig) *config.Loader {
	l := config.NewLoader("lazarus run", "LAZARUS")
	c.Register(l)
	return l
}

func runService(ctx context.Context, args []string, env Env) error {
	var c RunConfig
	l := RunLoader(&c)
	if err := parse(l, args, env, func(p *config.Problems) { c.Validate(p) }); err != nil || helpAsked(args) {
		return err
	}
	c.defaultInstance()
	log, err := c.logger(env, "lazarus", c.Instance)
	if err != nil {
		return err
	}
	c.Connect.Instance = c.Instance
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	p, err := c.open(ctx, env, log)
	if err != nil {
		return err
	}
	defer p.Close()
	w, err := worker.New(c.Settings(), worker.Deps{KV: p.KV, Publisher: p.Stream, Consumer: p.Stream, Log: log, Registry: reg})
	if err != nil {
		return err
	}
	log.Info().Str("stream", logging.RedactURL(c.Connect.Stream)).Str("owner", w.Owner()).Msg("lazarus running")
	runErr := lifecycle.Run(ctx, lifecycle.Options{Name: "lazarus", Listen: c.Listen, Handler: w.Handler(reg),
		ShutdownTimeout: c.ShutdownTimeout, Log: log}, w.Run)
	log.Info().Msg("lazarus stopped")
	return runErr
}

// ---- seed ----

func seed(ctx context.Context, args []string, env Env) error {
	var c common
	var file string
	var checkTimeout time.Duration
	l := config.NewLoader("lazarus seed", "LAZARUS")
	c.register(l)
	l.String(&file, "topology", "", "topology JSON file ({\"shards\":[{\"id\",\"index\",\"epoch\",\"primary\",\"replicas\"}]})")
	l.Duration(&checkTimeout, "action-timeout", 2*time.Second, "timeout of stamping one primary")
	if err := parse(l, args, env, func(p *config.Problems) {
		c.validate(p)
		p.Check(file == "", "-topology FILE is required")
	}); err != nil || helpAsked(args) {
		return err
	}
	m, err := loadSeed(file)
	if err != nil {
		return fmt.Errorf("%w: %w", config.ErrInvalid, err)
	}
	log, err := c.logger(env, "lazarus-seed", "")
	if err != nil {
		return err
	}
	p, err := c.open(ctx, env, log)
	if err != nil {
		return err
	}
	defer p.Close()
	return Seed(ctx, p.KV, m, redisops.Ops{ActionTimeout: checkTimeout}, env.Stdout)
}

// loadSeed reads a seed file.
func loadSeed(path string) (topology.Map, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return topology.Map{}, fmt.Errorf("topology file: %w", err)
	}
	m, err := ParseSeed(b)
	if err != nil {
		return topology.Map{}, fmt.Errorf("topology file %s: %w", path, err)
	}
	return m, nil
}

// ParseSeed parses a seed topology strictly (unknown fields are an error); shards
// without an epoch start at 1.
func ParseSeed(b []byte) (topology.Map, error) {
	var m topology.Map
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&m); err != nil {
		return topology.Map{}, err
	}
	if _, err := dec.Token(); err != io.EOF {
		return topology.Map{}, errors.New("trailing data after the JSON object")
	}
	for i := range m.Shards {
		if m.Shards[i].Epoch == 0 {
			m.Shards[i].Epoch = 1
		}
	}
	m.Sort()
	if err := m.Validate(); err != nil {
		return topology.Map{}, err
	}
	return m, nil
}

// Seed stores the shards of m that are missing and stamps each new primary with its
// epoch. Shards already stored are left alone (their epochs may have moved on).
func Seed(ctx context.Context, kvs kv.Store, m topology.Map, ops redisops.Ops, out io.Writer) error {
	return seedStore(ctx, topology.Store{KV: kvs}, m, ops, out)
}

func seedStore(ctx context.Context, store topology.Store, m topology.Map, ops redisops.Ops, out io.Writer) error {
	created, err := store.Seed(ctx, m)
	if err != nil {
		return fmt.Errorf("seeding the topology: %w", err)
	}
	isNew := map[string]bool{}
	for _, id := range created {
		isNew[id] = true
	}
	var errs []error
	for _, sh := range m.Shards {
		if !isNew[sh.ID] {
			cur, _, err := store.Get(ctx, sh.ID)
			if err == nil {
				fmt.Fprintf(out, "%s: already stored at epoch %d (primary %s); left alone\n", sh.ID, cur.Epoch, cur.Primary)
			}
			continue
		}
		if err := ops.StampEpoch(ctx, sh.Primary, sh.Epoch); err != nil {
			errs = append(errs, fmt.Errorf("%s: stored, but stamping epoch %d on %s failed: %w", sh.ID, sh.Epoch, sh.Primary, err))
			continue
		}
		fmt.Fprintf(out, "%s: stored at epoch %d, primary %s stamped\n", sh.ID, sh.Epoch, sh.Primary)
	}
	return errors.Join(errs...)
}

// ---- events ----

func eventsCmd(ctx context.Context, args []string, env Env) error {
	var c common
	var shard, since string
	var asJSON, follow bool
	var idle time.Duration
	l := config.NewLoader("lazarus events", "LAZARUS")
	c.register(l)
	l.String(&shard, "shard", "", "only this shard")
	l.String(&since, "since", "", "only events at or after this time: RFC 3339 (2026-01-02T15:04:05Z) or a duration ago (90m)")
	l.Bool(&asJSON, "json", false, "print the events as JSON lines")
	l.Bool(&follow, "follow", false, "keep printing new events")
	l.Duration(&idle, "idle", time.Second, "stop reading after this long without a new event (without -follow)")
	var f Filter
	if err := parse(l, args, env, func(p *config.Problems) {
		c.validate(p)
		p.Check(shard != "" && !events.ValidShardID(shard), "shard %q: want 1-64 of A-Z a-z 0-9 _ -", shard)
		if since != "" {
			t, err := ParseSince(since, env.now())
			if err != nil {
				p.Addf("since: %v", err)
			}
			f.Since = t
		}
		p.Positive("idle", idle)
	}); err != nil || helpAsked(args) {
		return err
	}
	f.Shard = shard
	log, err := c.logger(env, "lazarus-events", "")
	if err != nil {
		return err
	}
	p, err := c.open(ctx, env, log)
	if err != nil {
		return err
	}
	defer p.Close()
	return Events(ctx, p.Stream, f, EventsOptions{JSON: asJSON, Follow: follow, Idle: idle, Group: fmt.Sprintf("lazarus-events-%d-%s", os.Getpid(), events.NewID()[24:])}, env.Stdout)
}

// ParseSince reads an RFC 3339 time or a duration before now.
func ParseSince(s string, now time.Time) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if d, err := time.ParseDuration(s); err == nil && d >= 0 {
		return now.Add(-d), nil
	}
	return time.Time{}, fmt.Errorf("%q: want an RFC 3339 time or a duration such as 90m", s)
}

// EventsOptions tune Events.
type EventsOptions struct {
	JSON   bool
	Follow bool
	Idle   time.Duration
	Group  string
}

// Events reads the failovers topic with a private consumer group from the oldest event
// and prints the matching ones: sorted as a timeline after the stream has been idle
// for o.Idle, or as they come with o.Follow.
func Events(ctx context.Context, c stream.Consumer, f Filter, o EventsOptions, out io.Writer) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var evs []events.Event
	last := make(chan struct{}, 1)
	print := func(e events.Event, raw []byte) {
		if o.JSON {
			fmt.Fprintln(out, string(raw))
			return
		}
		WriteTimeline(out, []events.Event{e})
	}
	var bad int
	var mu sync.Mutex // partitions are handled concurrently
	h := func(_ context.Context, d stream.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		select {
		case last <- struct{}{}:
		default:
		}
		e, err := events.Decode(d.Data)
		if err != nil {
			bad++
			return nil // another writer's bug; counted and reported, never blocks the timeline
		}
		if !f.Match(e) {
			return nil
		}
		if o.Follow {
			print(e, d.Data)
			return nil
		}
		evs = append(evs, e)
		return nil
	}
	done := make(chan error, 1)
	go func() {
		done <- c.Consume(ctx, stream.Subscription{Topic: events.TopicFailovers, Group: o.Group, Start: stream.StartOldest, Ephemeral: true}, h)
	}()
	if !o.Follow {
		idle := time.NewTimer(o.Idle)
		func() {
			for {
				select {
				case <-ctx.Done():
					return
				case <-last:
					idle.Reset(o.Idle)
				case <-idle.C:
					cancel()
					return
				}
			}
		}()
	}
	err := <-done
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("reading the failovers topic: %w", err)
	}
	mu.Lock()
	defer mu.Unlock()
	if !o.Follow {
		SortEvents(evs)
		for _, e := range evs {
			raw, _ := events.Encode(e)
			print(e, raw)
		}
		if len(evs) == 0 && !o.JSON {
			fmt.Fprintln(out, "no failover events match")
		}
	}
	if bad > 0 {
		fmt.Fprintf(out, "(%d undecodable messages skipped)\n", bad)
	}
	return nil
}

// ---- status ----

func status(ctx context.Context, args []string, env Env) error {
	var c common
	var asJSON bool
	l := config.NewLoader("lazarus status", "LAZARUS")
	c.register(l)
	l.Bool(&asJSON, "json", false, "print the status as JSON")
	if err := parse(l, args, env, func(p *config.Problems) { c.validate(p) }); err != nil || helpAsked(args) {
		return err
	}
	log, err := c.logger(env, "lazarus-status", "")
	if err != nil {
		return err
	}
	p, err := c.open(ctx, env, log)
	if err != nil {
		return err
	}
	defer p.Close()
	st, err := ReadStatus(ctx, p.KV, env.now())
	if err != nil {
		return err
	}
	if asJSON {
		b, _ := json.MarshalIndent(st, "", "  ")
		fmt.Fprintln(env.Stdout, string(b))
		return nil
	}
	WriteStatus(env.Stdout, st, env.now())
	return nil
}

// ShardStatus is one shard in `lazarus status`.
type ShardStatus struct {
	Shard        topology.Shard     `json:"shard"`
	Lease        *lease.Record      `json:"lease,omitempty"`
	LeaseLive    bool               `json:"lease_live"`
	Paused       *worker.PauseFlag  `json:"paused,omitempty"`
	Hold         *worker.HoldRecord `json:"hold,omitempty"`
	Last         *worker.Record     `json:"last_failover,omitempty"`
	Running      *worker.Record     `json:"running_failover,omitempty"`
	CooldownTill time.Time          `json:"cooldown_until,omitzero"`
	Failovers    int                `json:"failovers_recorded"`
	// NoReplica is the standing NO_REPLICA condition: the primary is fine and no
	// replica is in sync (the shard refuses writes under min-replicas-to-write 1).
	NoReplica *worker.NoReplicaRecord `json:"no_replica,omitempty"`
}

// Status is `lazarus status`.
type Status struct {
	FleetPaused *worker.PauseFlag `json:"fleet_paused,omitempty"`
	Shards      []ShardStatus     `json:"shards"`
	Spares      topology.Pool     `json:"spares"`
}

// ReadStatus gathers the status from kv.
func ReadStatus(ctx context.Context, kvs kv.Store, now time.Time) (Status, error) {
	var st Status
	m, err := topology.Store{KV: kvs}.Load(ctx)
	if err != nil && !errors.Is(err, topology.ErrEmpty) {
		return st, fmt.Errorf("reading the topology: %w", err)
	}
	readPause := func(key string) *worker.PauseFlag {
		e, err := kvs.Get(ctx, key)
		if err != nil {
			return nil
		}
		var f worker.PauseFlag
		_ = json.Unmarshal(e.Value, &f)
		return &f
	}
	st.FleetPaused = readPause(worker.PauseKey(worker.PauseAll))
	recs, err := worker.Records{KV: kvs}.List(ctx, "")
	if err != nil {
		return st, fmt.Errorf("reading failover records: %w", err)
	}
	leases := lease.Manager{Store: kvs, Now: func() time.Time { return now }}
	ctl := worker.Control{KV: kvs}
	for _, sh := range m.Shards {
		s := ShardStatus{Shard: sh, Paused: readPause(worker.PauseKey(sh.ID))}
		if rec, live, err := leases.Read(ctx, worker.LeaseKey(sh.ID)); err == nil {
			s.Lease, s.LeaseLive = &rec, live
		}
		s.Hold, _ = ctl.Hold(ctx, sh.ID)
		s.NoReplica, _ = ctl.NoReplica(ctx, sh.ID)
		for _, r := range recs {
			if r.Shard != sh.ID {
				continue
			}
			s.Failovers++
			if r.Unfinished() {
				s.Running = r
			} else if r.State == worker.StateCompleted || r.State == worker.StateAborted || r.State == worker.StateRolledBack {
				s.Last = r
			}
		}
		st.Shards = append(st.Shards, s)
	}
	if st.Spares, _, err = (topology.Store{KV: kvs}).Pool(ctx); err != nil {
		return st, err
	}
	return st, nil
}

// WriteStatus prints the status as a table and a line per hold, pause and running
// failover.
func WriteStatus(w io.Writer, st Status, now time.Time) {
	if st.FleetPaused != nil {
		fmt.Fprintf(w, "FLEET PAUSED by %s at %s: %s (lazarus resume)\n\n", st.FleetPaused.By, st.FleetPaused.At.Format(time.RFC3339), st.FleetPaused.Reason)
	}
	if len(st.Shards) == 0 {
		fmt.Fprintln(w, "no shards in the topology (seed it with `lazarus seed --topology FILE`)")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SHARD\tEPOCH\tPRIMARY\tREPLICAS\tLEASE\tHOLD\tLAST FAILOVER")
	for _, s := range st.Shards {
		ls := "free"
		if s.Lease != nil && s.LeaseLive {
			ls = fmt.Sprintf("%s (%s, %s left)", s.Lease.Owner, s.Lease.Note, s.Lease.Expires.Sub(now).Round(100*time.Millisecond))
		}
		hold := "-"
		switch {
		case s.Paused != nil:
			hold = "PAUSED by " + s.Paused.By
		case st.FleetPaused != nil:
			hold = "PAUSED (fleet)"
		case s.Hold != nil:
			hold = string(s.Hold.Reason)
		}
		if s.NoReplica != nil {
			hold = strings.TrimPrefix(hold+" NO_REPLICA", "- ")
		}
		if s.Shard.Degraded {
			hold = strings.TrimPrefix(hold+" DEGRADED", "- ")
		}
		last := "-"
		if r := s.Last; r != nil {
			last = fmt.Sprintf("%s %s %s %s e%d->%d loss %s", r.Finished.UTC().Format("2006-01-02T15:04:05Z"), r.Outcome, r.Reason,
				short(r.ID), r.FromEpoch, r.ToEpoch, loss(r.LossWindow))
		}
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\t%s\n", s.Shard.ID, s.Shard.Epoch, s.Shard.Primary, strings.Join(s.Shard.Replicas, ","), ls, hold, last)
	}
	tw.Flush()
	for _, s := range st.Shards {
		if s.Running != nil {
			r := s.Running
			var done []string
			for _, x := range r.Steps {
				done = append(done, x.Name+":"+x.Status)
			}
			fmt.Fprintf(w, "\n%s: failover %s RUNNING by %s (%s -> %s): %s\n", s.Shard.ID, r.ID, r.Worker, r.OldPrimary, r.NewPrimary, strings.Join(done, " "))
		}
		if s.Hold != nil {
			fmt.Fprintf(w, "\n%s: hold %s since %s: %s\n  override: %s\n", s.Shard.ID, s.Hold.Reason, s.Hold.Since.Format(time.RFC3339), s.Hold.Detail, s.Hold.Override)
		}
		if s.Paused != nil {
			fmt.Fprintf(w, "\n%s: paused by %s at %s: %s (lazarus resume --shard %s)\n", s.Shard.ID, s.Paused.By, s.Paused.At.Format(time.RFC3339), s.Paused.Reason, s.Shard.ID)
		}
		if n := s.NoReplica; n != nil {
			what := "the shard refuses writes"
			if s.Shard.Degraded {
				what = fmt.Sprintf("DEGRADED since %s: writes are acknowledged by the primary alone (replicated: false)", s.Shard.DegradedSince.Format(time.RFC3339))
			}
			fmt.Fprintf(w, "\n%s: NO_REPLICA for %s (since %s): no replica in sync, %s; %s: %s\n", s.Shard.ID,
				now.Sub(n.Since).Round(time.Second), n.Since.Format(time.RFC3339), what, n.Decision, n.Detail)
		}
		if r := s.Last; r != nil && r.State == worker.StateCompleted && !r.Verified {
			fmt.Fprintf(w, "\n%s: last failover not verified yet: %s\n", s.Shard.ID, r.Degraded)
		}
	}
	fmt.Fprintln(w)
	WriteSpares(w, st.Spares, now)
}

// ---- pause / resume ----

func pauseCmd(ctx context.Context, cmd string, args []string, env Env) error {
	var c common
	var shard, reason, by string
	l := config.NewLoader("lazarus "+cmd, "LAZARUS")
	c.register(l)
	l.String(&shard, "shard", "", "the shard (default: the whole fleet)")
	if cmd == "pause" {
		l.String(&reason, "reason", "", "why, shown to on-call in status and in held decisions")
	}
	l.String(&by, "by", os.Getenv("USER"), "who")
	if err := parse(l, args, env, func(p *config.Problems) {
		c.validate(p)
		p.Check(shard != "" && !events.ValidShardID(shard), "shard %q: want 1-64 of A-Z a-z 0-9 _ -", shard)
	}); err != nil || helpAsked(args) {
		return err
	}
	log, err := c.logger(env, "lazarus-"+cmd, "")
	if err != nil {
		return err
	}
	p, err := c.open(ctx, env, log)
	if err != nil {
		return err
	}
	defer p.Close()
	return PauseResume(ctx, p.KV, cmd == "pause", shard, by, reason, env.now(), env.Stdout)
}

// PauseResume sets or clears a pause flag; resuming a shard also lifts its cooldown.
func PauseResume(ctx context.Context, kvs kv.Store, pause bool, shard, by, reason string, now time.Time, out io.Writer) error {
	ctl := worker.Control{KV: kvs}
	scope := "the whole fleet"
	if shard != "" {
		scope = "shard " + shard
		if _, _, err := (topology.Store{KV: kvs}).Get(ctx, shard); err != nil {
			return err
		}
	}
	if pause {
		if err := ctl.Pause(ctx, shard, by, reason, now); err != nil {
			return err
		}
		fmt.Fprintf(out, "automation paused for %s: alerts are decided and held (PAUSED), nothing fails over\n", scope)
		return nil
	}
	if err := ctl.Resume(ctx, shard); err != nil {
		return err
	}
	fmt.Fprintf(out, "automation resumed for %s\n", scope)
	if shard != "" {
		lifted, err := worker.Records{KV: kvs}.LiftCooldown(ctx, shard)
		if err != nil {
			return err
		}
		if lifted {
			fmt.Fprintf(out, "cooldown of %s lifted\n", shard)
		}
	} else {
		fmt.Fprintln(out, "(shards paused with --shard stay paused; resume them one by one)")
	}
	return nil
}

// ---- switchover / failover ----

func switchover(ctx context.Context, args []string, env Env) error {
	return manual(ctx, "switchover", args, env)
}

func failover(ctx context.Context, args []string, env Env) error {
	return manual(ctx, "failover", args, env)
}

func manual(ctx context.Context, cmd string, args []string, env Env) error {
	var c RunConfig
	var shard, to string
	l := config.NewLoader("lazarus "+cmd, "LAZARUS")
	c.Register(l)
	l.String(&shard, "shard", "", "the shard (required)")
	if cmd == "switchover" {
		l.String(&to, "to", "", "the replica to promote (default: the attached replica with the highest offset)")
	}
	if err := parse(l, args, env, func(p *config.Problems) {
		c.Validate(p)
		p.Check(shard == "", "-shard is required")
		p.Check(shard != "" && !events.ValidShardID(shard), "shard %q: want 1-64 of A-Z a-z 0-9 _ -", shard)
	}); err != nil || helpAsked(args) {
		return err
	}
	c.defaultInstance()
	log, err := c.logger(env, "lazarus-"+cmd, c.Instance)
	if err != nil {
		return err
	}
	p, err := c.open(ctx, env, log)
	if err != nil {
		return err
	}
	defer p.Close()
	w, err := worker.New(c.Settings(), worker.Deps{KV: p.KV, Publisher: p.Stream, Log: log})
	if err != nil {
		return err
	}
	var rec *worker.Record
	if cmd == "switchover" {
		rec, err = w.Switchover(ctx, shard, to)
	} else {
		_, rec, err = w.Failover(ctx, shard, c.Instance)
	}
	if rec != nil {
		fmt.Fprintf(env.Stdout, "%s %s of %s: %s -> %s, epoch %d -> %d, %s\n", cmd, rec.ID, shard, rec.OldPrimary, rec.NewPrimary,
			rec.FromEpoch, rec.ToEpoch, rec.Outcome)
		for _, s := range rec.Steps {
			fmt.Fprintf(env.Stdout, "  %-18s %-8s %s%s\n", s.Name, s.Status, s.Detail, s.Error)
		}
	}
	return err
}
