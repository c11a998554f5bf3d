// Command alerter runs Heartline's threshold alerter: it consumes the agents'
// heartbeats and publishes alerts when a shard's primary is down, regressed, demoted,
// drifting, or its agents are lost. See services/alerter/README.md.
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

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/heartline/heartline/services/alerter"
	"github.com/heartline/heartline/shared/config"
	"github.com/heartline/heartline/shared/connect"
	"github.com/heartline/heartline/shared/lifecycle"
	"github.com/heartline/heartline/shared/logging"
)

func main() {
	err := run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	switch {
	case err == nil:
	case errors.Is(err, flag.ErrHelp):
	case errors.Is(err, config.ErrInvalid):
		fmt.Fprintln(os.Stderr, "alerter:", err)
		os.Exit(2)
	default:
		fmt.Fprintln(os.Stderr, "alerter:", err)
		os.Exit(1)
	}
}

func run(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg := alerter.DefaultConfig()
	l := config.NewLoader("alerter", "ALERTER")
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
	log, err := logging.New(logging.Options{Service: "alerter", Instance: cfg.Instance, Level: cfg.LogLevel,
		Format: cfg.LogFormat, Out: stdout})
	if err != nil {
		return fmt.Errorf("%w: %v", config.ErrInvalid, err)
	}
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
	svc, err := alerter.New(alerter.Options{Config: cfg, Consumer: plat.Stream, Publisher: plat.Stream, KV: plat.KV,
		Log: log, Registry: reg})
	if err != nil {
		return err
	}
	return lifecycle.Run(ctx, lifecycle.Options{Name: "the alerter", Listen: cfg.HTTPListen, Handler: svc.Handler(),
		ShutdownTimeout: cfg.ShutdownTimeout, Log: log}, svc.Run)
}
