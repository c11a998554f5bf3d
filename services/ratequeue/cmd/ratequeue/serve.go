package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/heartline/heartline/services/ratequeue/queue"
	"github.com/heartline/heartline/services/ratequeue/server"
	"github.com/heartline/heartline/shared/config"
)

type serveConfig struct {
	clientFlags
	Listen          string
	ShutdownTimeout time.Duration
}

func serveLoader() (*config.Loader, *serveConfig) {
	c := &serveConfig{}
	l := config.NewLoader("ratequeue serve", "RATEQUEUE")
	c.register(l)
	l.String(&c.Listen, "listen", ":8080", "HTTP listen address")
	l.Duration(&c.ShutdownTimeout, "shutdown-timeout", 10*time.Second, "grace period for in-flight requests at shutdown")
	return l, c
}

// Validate reports every problem with the configuration.
func (c *serveConfig) Validate() error {
	var p config.Problems
	c.validate(&p)
	p.Check(c.Listen == "", "-listen is empty")
	p.Positive("-shutdown-timeout", c.ShutdownTimeout)
	return p.Err()
}

func serve(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	l, cfg := serveLoader()
	if err := parse(l, args, getenv, stderr); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return usageErr(err)
	}
	log, err := cfg.logger("ratequeue")
	if err != nil {
		return usageErr(err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	topo, closeTopo, err := cfg.openTopology(ctx, log)
	if err != nil {
		return err
	}
	defer closeTopo()
	qc, err := queue.New(cfg.queueConfig(topo, queue.NewMetrics(reg), log))
	if err != nil {
		return usageErr(err)
	}
	defer qc.Close()
	srv := server.New(qc, server.Config{MaxBody: cfg.MaxBody, RequestTimeout: cfg.OpTimeout + time.Second}, log, reg)
	ln, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("not serving: %w", err)
	}
	hs := &http.Server{Handler: srv.Handler(), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 30 * time.Second,
		WriteTimeout: cfg.OpTimeout + 10*time.Second, IdleTimeout: 2 * time.Minute, MaxHeaderBytes: 64 << 10}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	log.Info().Str("addr", ln.Addr().String()).Str("ack", cfg.Ack).Int("shards", len(topo.Map().Shards)).
		Float64("default_rate", cfg.DefaultRate).Msg("ratequeue serving")
	select {
	case <-ctx.Done():
	case err := <-errc:
		return fmt.Errorf("HTTP server stopped: %w", err)
	}
	log.Info().Msg("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), cfg.ShutdownTimeout)
	defer cancel()
	if err := hs.Shutdown(sctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("shutdown: %w", err)
	}
	return nil
}
