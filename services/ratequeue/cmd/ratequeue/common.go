package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/ratequeue/queue"
	"github.com/heartline/heartline/shared/config"
	"github.com/heartline/heartline/shared/connect"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/topology"
)

// clientFlags configure the queue client (serve, and load -direct).
type clientFlags struct {
	Connect        connect.Config
	TopologyFile   string
	Ack            string
	WaitTimeout    time.Duration
	OpTimeout      time.Duration
	BreakerAfter   time.Duration
	BreakerProbe   time.Duration
	DefaultRate    float64
	Rates          []string
	Visibility     time.Duration
	MaxBody        int
	IdempotencyTTL time.Duration
	PoolSize       int
	LogLevel       string
	LogFormat      string
}

func (c *clientFlags) register(l *config.Loader) {
	c.Connect.Register(l)
	l.String(&c.TopologyFile, "topology-file", "", "local topology file (JSON map): the fallback copy when the kv store is unreachable, and the only source when -stream and -kv are both unset")
	l.String(&c.Ack, "ack", "replica", "durability: replica (acknowledge after WAIT 1 saw a replica) or primary")
	l.Duration(&c.WaitTimeout, "wait-timeout", time.Second, "WAIT timeout for ack=replica")
	l.Duration(&c.OpTimeout, "op-timeout", 10*time.Second, "bound on one queue operation including its retries")
	l.Duration(&c.BreakerAfter, "breaker-after", 3*time.Second, "a shard whose calls fail this long without a success is down: calls to it fail at once (503, shard_down) until a probe succeeds or its route changes (-1s: never)")
	l.Duration(&c.BreakerProbe, "breaker-probe", 500*time.Millisecond, "while a shard is down, one call per this interval goes through to see whether it is back")
	l.Float(&c.DefaultRate, "default-rate", 10, "default dequeue rate per queue, messages per second (0: unlimited)")
	l.List(&c.Rates, "rates", nil, "per-queue rate overrides, QUEUE=RATE")
	l.Duration(&c.Visibility, "visibility", 30*time.Second, "default visibility timeout of a delivered message")
	l.Int(&c.MaxBody, "max-body", 64<<10, "largest message body in bytes")
	l.Duration(&c.IdempotencyTTL, "idempotency-ttl", 24*time.Hour, "how long an idempotency key is remembered")
	l.Int(&c.PoolSize, "pool-size", 128, "Redis connections per node")
	l.String(&c.LogLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	l.Shared("log-level")
	l.String(&c.LogFormat, "log-format", "", `log format: json, console, or "" (console on a terminal)`)
	l.Shared("log-format")
}

func (c *clientFlags) validate(p *config.Problems) {
	if c.Connect.Stream != "" || c.Connect.KV != "" {
		c.Connect.Validate(p)
	} else if c.TopologyFile == "" {
		p.Addf("no topology source: set -topology-file, or -kv/-stream (HEARTLINE_KV, HEARTLINE_STREAM)")
	}
	if _, err := queue.ParseAckMode(c.Ack); err != nil {
		p.Addf("-ack: %v", err)
	}
	p.Positive("-wait-timeout", c.WaitTimeout)
	p.Positive("-op-timeout", c.OpTimeout)
	p.Check(c.BreakerAfter == 0, "-breaker-after must be positive, or negative for never")
	p.Positive("-breaker-probe", c.BreakerProbe)
	p.Positive("-visibility", c.Visibility)
	p.Positive("-idempotency-ttl", c.IdempotencyTTL)
	p.Check(c.DefaultRate < 0, "-default-rate %v: want >= 0", c.DefaultRate)
	p.Check(c.MaxBody <= 0 || c.MaxBody > 16<<20, "-max-body %d: want 1..16 MiB", c.MaxBody)
	p.Check(c.PoolSize <= 0, "-pool-size %d: want > 0", c.PoolSize)
	if _, err := parseRates(c.Rates); err != nil {
		p.Addf("-rates: %v", err)
	}
}

func parseRates(list []string) (map[string]float64, error) {
	out := map[string]float64{}
	var errs []error
	for _, item := range list {
		q, v, ok := strings.Cut(item, "=")
		r, err := strconv.ParseFloat(strings.TrimSpace(v), 64)
		switch {
		case !ok || err != nil:
			errs = append(errs, fmt.Errorf("%q: want QUEUE=RATE", item))
		case r < 0:
			errs = append(errs, fmt.Errorf("%q: rate must be >= 0", item))
		case queue.ValidQueue(q) != nil:
			errs = append(errs, fmt.Errorf("%q: %v", item, queue.ValidQueue(q)))
		default:
			out[q] = r
		}
	}
	return out, errors.Join(errs...)
}

func (c *clientFlags) logger(service string) (zerolog.Logger, error) {
	return logging.New(logging.Options{Service: service, Level: c.LogLevel, Format: c.LogFormat, Out: nil})
}

// openTopology follows the topology: from the kv store (with the file as fallback)
// when -kv or -stream is set, else from the file alone.
func (c *clientFlags) openTopology(ctx context.Context, log zerolog.Logger) (*topology.Follower, func(), error) {
	cfg := topology.FollowerConfig{File: c.TopologyFile, Log: log}
	closer := func() {}
	if c.Connect.Stream != "" || c.Connect.KV != "" {
		p, err := connect.Open(ctx, c.Connect, log)
		switch {
		case err == nil:
			cfg.Store = p.KV
			closer = func() { _ = p.Close() }
		case c.TopologyFile != "":
			log.Warn().Err(err).Str("file", c.TopologyFile).Msg("kv store unavailable; following the topology file only (failovers will not be seen until restart)")
		default:
			return nil, nil, fmt.Errorf("opening the kv store for the topology: %w", err)
		}
	}
	f, err := topology.Follow(ctx, cfg)
	if err != nil {
		closer()
		return nil, nil, fmt.Errorf("reading the topology: %w", err)
	}
	return f, closer, nil
}

func (c *clientFlags) queueConfig(topo queue.Topology, m *queue.Metrics, log zerolog.Logger) queue.Config {
	rates, _ := parseRates(c.Rates)
	ack, _ := queue.ParseAckMode(c.Ack)
	return queue.Config{Topology: topo, Ack: ack, WaitTimeout: c.WaitTimeout, AttemptTimeout: c.WaitTimeout + time.Second,
		OpTimeout: c.OpTimeout, BreakerAfter: c.BreakerAfter, BreakerProbe: c.BreakerProbe, DefaultRate: c.DefaultRate, Rates: rates, Visibility: c.Visibility, MaxBody: c.MaxBody,
		IdempotencyTTL: c.IdempotencyTTL, PoolSize: c.PoolSize, Metrics: m, Log: log}
}

// parse runs the loader, mapping -h to flag.ErrHelp (printing usage) and bad flags
// to exit code 2.
func parse(l *config.Loader, args []string, getenv func(string) string, stderr io.Writer) error {
	err := l.Parse(args, getenv)
	if errors.Is(err, flag.ErrHelp) {
		l.Usage(stderr)
		return err
	}
	if err != nil {
		return usageErr(err)
	}
	return nil
}

func flagsTable(args []string, w io.Writer) error {
	if len(args) != 1 {
		return usageErr(errors.New("usage: ratequeue flags-table serve|load|check|bench"))
	}
	var l *config.Loader
	switch args[0] {
	case "serve":
		l, _ = serveLoader()
	case "load":
		l, _ = loadLoader()
	case "check":
		l, _ = checkLoader()
	case "bench":
		l, _ = benchLoader()
	default:
		return usageErr(fmt.Errorf("unknown command %q", args[0]))
	}
	l.Table(w)
	return nil
}
