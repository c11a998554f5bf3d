// Command agent runs Heartline's heartbeat agent beside one Redis replica: it probes the
// replica and the shard's primary every interval, publishes heartbeats, flags a
// restarted, regressed or demoted primary and configuration drift, and parks the
// replica when its primary dies so that it cannot resync from a primary that came back
// empty. See services/agent/README.md.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/agent"
	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/config"
	"github.com/heartline/heartline/shared/connect"
	"github.com/heartline/heartline/shared/lifecycle"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/topology"
)

func main() {
	os.Exit(exitCode(run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr), os.Stderr))
}

// exitCode maps run's error to the process exit code: 2 for bad configuration, 1 for
// any other failure, 0 otherwise.
func exitCode(err error, stderr io.Writer) int {
	switch {
	case err == nil, errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, config.ErrInvalid):
		fmt.Fprintln(stderr, "agent:", err)
		return 2
	default:
		fmt.Fprintln(stderr, "agent:", err)
		return 1
	}
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := agent.DefaultConfig()
	l := config.NewLoader("agent", "AGENT")
	cfg.Register(l)
	if err := l.Parse(args, getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			l.Usage(stderr)
		}
		return err
	}
	if err := cfg.Validate(); err != nil {
		return err
	}
	cfg.Instance = cfg.InstanceName()
	cfg.Connect.Instance = cfg.Instance
	log, err := logging.New(logging.Options{Service: "agent", Instance: cfg.Instance, Level: cfg.LogLevel,
		Format: cfg.LogFormat, Out: stdout})
	if err != nil {
		return fmt.Errorf("%w: %v", config.ErrInvalid, err)
	}
	// go-redis reports every failed dial on stderr; while a primary is down that is
	// several lines a second. Route them into the JSON log at debug level.
	redis.SetLogger(redisLogger{log})
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	plat, err := connect.Open(ctx, cfg.Connect, log)
	if err != nil {
		return fmt.Errorf("opening the stream and kv store: %w", err)
	}
	defer func() {
		if err := plat.Close(); err != nil {
			log.Warn().Err(err).Msg("closing the stream and kv store")
		}
	}()
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	fcfg := topology.FollowerConfig{Store: plat.KV, File: cfg.TopologyFile, Log: log}
	follower, ferr := topology.Follow(ctx, fcfg)
	opts := agent.Options{Config: cfg, Publisher: plat.Stream, Log: log, Registry: reg}
	if ferr == nil {
		opts.Topology = follower
	} else {
		log.Warn().Err(ferr).Msg("no topology yet; guarding the primary from -primary or the replica's INFO, and retrying")
	}
	a, err := agent.New(opts)
	if err != nil {
		return err
	}
	if ferr != nil {
		go followLater(ctx, a, fcfg, log)
	}
	// The agent flushes its outbox within ShutdownTimeout itself: wait a second more.
	return lifecycle.Run(ctx, lifecycle.Options{Name: "the agent", Listen: cfg.HTTPListen, Handler: a.Handler(),
		ShutdownTimeout: cfg.ShutdownTimeout + time.Second, Log: log}, a.Run)
}

type redisLogger struct{ log zerolog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Debug().Str("component", "go-redis").Msgf(format, v...)
}

// followLater retries following the topology until it exists, then hands it over.
func followLater(ctx context.Context, a *agent.Agent, fcfg topology.FollowerConfig, log zerolog.Logger) {
	pol := backoff.Policy{Initial: time.Second, Max: 30 * time.Second}
	for n := 1; ; n++ {
		if backoff.Sleep(ctx, pol.Delay(n)) != nil {
			return
		}
		f, err := topology.Follow(ctx, fcfg)
		if err == nil {
			log.Info().Msg("topology available; following it")
			a.SetTopology(f)
			return
		}
	}
}
