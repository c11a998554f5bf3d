package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heartline/heartline/services/ratequeue/history"
	"github.com/heartline/heartline/services/ratequeue/loadgen"
	"github.com/heartline/heartline/services/ratequeue/queue"
	"github.com/heartline/heartline/shared/config"
)

type loadConfig struct {
	clientFlags
	Targets      []string
	Direct       bool
	History      string
	SummaryJSON  string
	Run          string
	Queues       int
	EnqueueRate  float64
	Duration     time.Duration
	Concurrency  int
	Consumers    int
	LVisibility  time.Duration
	DrainTimeout time.Duration
	BodySize     int
	Retries      int
	AckDrop      float64
	Seed         int
	HTTPTimeout  time.Duration
}

func loadLoader() (*config.Loader, *loadConfig) {
	c := &loadConfig{}
	l := config.NewLoader("ratequeue load", "RATEQUEUE_LOAD")
	c.register(l)
	l.List(&c.Targets, "targets", nil, "ratequeue serve base URLs (http://host:port), used round-robin with failover")
	l.Bool(&c.Direct, "direct", false, "use the Go client directly (needs -topology-file or -kv) instead of -targets")
	l.String(&c.History, "history", "", "history file to write (JSON lines; required)")
	l.String(&c.SummaryJSON, "summary-json", "", "also write the run summary as JSON to this file")
	l.String(&c.Run, "run", "", "run id, in queue names and message ids (default: a timestamp)")
	l.Int(&c.Queues, "queues", 100, "number of queues")
	l.Float(&c.EnqueueRate, "enqueue-rate", 200, "total enqueues per second during the producing phase")
	l.Duration(&c.Duration, "duration", 10*time.Second, "length of the producing phase")
	l.Int(&c.Concurrency, "concurrency", 8, "concurrent producers")
	l.Int(&c.Consumers, "consumers", 8, "concurrent consumers")
	l.Duration(&c.LVisibility, "load-visibility", 5*time.Second, "visibility timeout the consumers ask for")
	l.Duration(&c.DrainTimeout, "drain-timeout", 60*time.Second, "bound on the drain after producing")
	l.Int(&c.BodySize, "body-size", 64, "message body size in bytes")
	l.Int(&c.Retries, "retries", 3, "re-attempts of an enqueue whose outcome is unknown (same id and idempotency key)")
	l.Float(&c.AckDrop, "ack-drop", 0, "fraction of deliveries deliberately not acked (exercises redelivery)")
	l.Int(&c.Seed, "seed", 1, "random seed for queue choice and ack drops")
	l.Duration(&c.HTTPTimeout, "http-timeout", 15*time.Second, "per-request timeout against -targets")
	return l, c
}

// Validate reports every problem with the configuration.
func (c *loadConfig) Validate() error {
	var p config.Problems
	p.Check(c.History == "", "-history is required")
	switch {
	case c.Direct && len(c.Targets) > 0:
		p.Addf("use either -direct or -targets, not both")
	case c.Direct:
		c.validate(&p)
	case len(c.Targets) == 0:
		p.Addf("no target: set -targets http://host:port[,...] or -direct")
	}
	if c.Run != "" && queue.ValidQueue("lg-"+c.Run+"-0") != nil {
		p.Addf("-run %q: want letters, digits, _ and - only", c.Run)
	}
	for _, ch := range c.Run {
		if !(ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9' || ch == '_' || ch == '-') {
			p.Addf("-run %q: want letters, digits, _ and - only", c.Run)
			break
		}
	}
	p.Check(len(c.Run) > 40, "-run: at most 40 characters")
	p.Check(c.Queues <= 0, "-queues must be positive")
	p.Check(c.EnqueueRate <= 0, "-enqueue-rate must be positive")
	p.Positive("-duration", c.Duration)
	p.Check(c.Concurrency <= 0, "-concurrency must be positive")
	p.Check(c.Consumers <= 0, "-consumers must be positive")
	p.Positive("-load-visibility", c.LVisibility)
	p.Positive("-drain-timeout", c.DrainTimeout)
	p.Check(c.BodySize <= 0, "-body-size must be positive")
	p.Check(c.Retries < 0, "-retries must be >= 0")
	p.Check(c.AckDrop < 0 || c.AckDrop >= 1, "-ack-drop must be in [0, 1)")
	p.Positive("-http-timeout", c.HTTPTimeout)
	return p.Err()
}

func load(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	l, cfg := loadLoader()
	if err := parse(l, args, getenv, stderr); err != nil {
		return err
	}
	if err := cfg.Validate(); err != nil {
		return usageErr(err)
	}
	log, err := cfg.logger("ratequeue-load")
	if err != nil {
		return usageErr(err)
	}
	// The first SIGINT/SIGTERM (ctx done) ends the producing phase and drains, so that
	// every acknowledged message is still delivered and recorded (a chaos experiment
	// aborted mid-load must not leave its messages in the queues); a second one stops
	// at once.
	stopProducing := make(chan struct{})
	// lctx is what the load runs under: cancelled only by the second signal.
	lctx, lcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer lcancel()
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	go func() {
		select {
		case <-ctx.Done():
			log.Warn().Dur("drain_timeout", cfg.DrainTimeout).Msg("interrupted: producing stopped, draining; interrupt again to stop at once")
			close(stopProducing)
		case <-lctx.Done():
			return
		}
		for n := 0; ; {
			select {
			case <-sigs:
				if n++; n >= 2 {
					log.Warn().Msg("interrupted again: stopping without draining")
					lcancel()
					return
				}
			case <-lctx.Done():
				return
			}
		}
	}()
	var d loadgen.Driver
	if cfg.Direct {
		topo, closeTopo, err := cfg.openTopology(lctx, log)
		if err != nil {
			return err
		}
		defer closeTopo()
		qc, err := queue.New(cfg.queueConfig(topo, queue.NewMetrics(prometheus.NewRegistry()), log))
		if err != nil {
			return usageErr(err)
		}
		defer qc.Close()
		d = loadgen.Direct{C: qc}
	} else {
		h, err := loadgen.NewHTTP(cfg.Targets, cfg.HTTPTimeout)
		if err != nil {
			return usageErr(err)
		}
		d = h
	}
	w, err := history.Create(cfg.History)
	if err != nil {
		return fmt.Errorf("not running the load: %w", err)
	}
	sum, runErr := loadgen.Run(lctx, loadgen.Config{Run: cfg.Run, Queues: cfg.Queues, EnqueueRate: cfg.EnqueueRate,
		Duration: cfg.Duration, Concurrency: cfg.Concurrency, Consumers: cfg.Consumers, Visibility: cfg.LVisibility,
		DrainTimeout: cfg.DrainTimeout, BodySize: cfg.BodySize, Retries: cfg.Retries, AckDrop: cfg.AckDrop, Seed: uint64(cfg.Seed),
		StopProducing: stopProducing}, d, w, log)
	if err := w.Close(); err != nil && runErr == nil {
		runErr = fmt.Errorf("closing the history: %w", err)
	}
	if ctx.Err() != nil && runErr == nil {
		runErr = fmt.Errorf("interrupted: producing stopped early (drained: %v)", sum.Drained)
	}
	fmt.Fprint(stdout, sum.String())
	fmt.Fprintf(stdout, "history: %s\n", cfg.History)
	if cfg.SummaryJSON != "" {
		b, _ := json.MarshalIndent(sum, "", "  ")
		if err := os.WriteFile(cfg.SummaryJSON, append(b, '\n'), 0o644); err != nil && runErr == nil {
			runErr = fmt.Errorf("writing the summary: %w", err)
		}
	}
	return runErr
}
