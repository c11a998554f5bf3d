// Command failbench measures Heartline's failover: the time from kill -9 of a shard's
// primary to the first write acknowledged on the new primary through the Ratequeue
// client, over several runs, with each phase's share, and checks that no acknowledged
// message was lost (`ratequeue check`). See internal/failbench.
//
//	go run ./cmd/failbench -runs 10                 synthetic alert source
//	go run ./cmd/failbench -runs 10 -pipeline       the real agent and alerter binaries
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heartline/heartline/services/lazarus/internal/failbench"
	"github.com/heartline/heartline/services/lazarus/internal/worker"
	"github.com/heartline/heartline/shared/config"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/testbin"
)

// Config is the benchmark's configuration.
type Config struct {
	Runs         int
	Replicas     int
	Period       time.Duration
	Pipeline     bool
	Ratequeue    string
	Agent        string
	Alerter      string
	WorkDir      string
	EnqueueRate  float64
	Out          string
	LogLevel     string
	SentinelRuns int
	DownAfter    time.Duration
	HostGone     bool
	Spares       int
	Durability   string
	SpareAfter   time.Duration
}

// Validate reports every problem.
func (c Config) Validate() error {
	var p config.Problems
	p.Check(c.Runs < 1, "-runs must be at least 1")
	p.Check(c.Replicas < 1, "-replicas must be at least 1")
	p.Check(c.Period < 3*time.Second, "-period must be at least 3s (a failover, a rejoin and a settled load)")
	p.Check(c.EnqueueRate <= 0, "-enqueue-rate must be positive")
	p.Check(c.SentinelRuns < 0, "-sentinel-runs must be >= 0")
	p.Positive("-sentinel-down-after", c.DownAfter)
	p.Check(c.Durability != "strict" && c.Durability != "degrade", "-durability %q: want strict or degrade", c.Durability)
	p.Check(c.Spares < 0, "-spares must be >= 0")
	p.Positive("-spare-after", c.SpareAfter)
	return p.Err()
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "failbench:", err)
		if errors.Is(err, config.ErrInvalid) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func run() error {
	var c Config
	l := config.NewLoader("failbench", "FAILBENCH")
	l.Int(&c.Runs, "runs", 10, "failovers to measure")
	l.Int(&c.Replicas, "replicas", 2, "replicas of the shard")
	l.Duration(&c.Period, "period", 6*time.Second, "time between kills")
	l.Bool(&c.Pipeline, "pipeline", false, "detect with the agent and alerter binaries instead of the synthetic detector")
	l.String(&c.Ratequeue, "ratequeue", "", "ratequeue binary (default: built from the workspace)")
	l.String(&c.Agent, "agent", "", "agent binary for -pipeline (default: built from the workspace)")
	l.String(&c.Alerter, "alerter", "", "alerter binary for -pipeline (default: built from the workspace)")
	l.String(&c.WorkDir, "work-dir", "", "directory for nodes, NATS, logs and the history (default: a temporary one, removed)")
	l.Float(&c.EnqueueRate, "enqueue-rate", 200, "ratequeue load enqueues per second")
	l.String(&c.Out, "out", "", "also write the table to this file")
	l.String(&c.LogLevel, "log-level", "warn", "lazarus's log level (logs go to stderr)")
	l.Int(&c.SentinelRuns, "sentinel-runs", 5, "also measure Redis Sentinel this many times in the same run, for the ratio (0: skip)")
	l.Duration(&c.DownAfter, "sentinel-down-after", time.Second, "Sentinel's down-after-milliseconds")
	l.Bool(&c.HostGone, "host-gone", false, "the killed primary stays down until the shard has a replica in sync again (a spare attached); Sentinel's killed node stays down 10 s")
	l.Int(&c.Spares, "spares", 1, "spare nodes in lazarus's pool with -host-gone")
	l.String(&c.Durability, "durability", "strict", "lazarus's durability policy: strict or degrade")
	l.Duration(&c.SpareAfter, "spare-after", 2*time.Second, "lazarus's -spare-after")
	if err := l.Parse(os.Args[1:], os.Getenv); err != nil {
		return err
	}
	if err := c.Validate(); err != nil {
		return err
	}
	log, err := logging.New(logging.Options{Service: "failbench", Level: c.LogLevel, Format: "json", Out: os.Stderr})
	if err != nil {
		return fmt.Errorf("%w: %v", config.ErrInvalid, err)
	}
	redis.SetLogger(quietRedis{})
	bins := map[string]*string{"ratequeue": &c.Ratequeue}
	if c.Pipeline {
		bins["agent"], bins["alerter"] = &c.Agent, &c.Alerter
	}
	for name, p := range bins {
		if *p == "" {
			if *p, err = testbin.Path(name); err != nil {
				return err
			}
		}
	}
	if c.WorkDir == "" {
		d, err := os.MkdirTemp("", "failbench-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(d)
		c.WorkDir = d
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	res, err := failbench.Execute(ctx, failbench.Options{Runs: c.Runs, Replicas: c.Replicas, Period: c.Period, Pipeline: c.Pipeline,
		RatequeueBin: c.Ratequeue, AgentBin: c.Agent, AlerterBin: c.Alerter, EnqueueRate: c.EnqueueRate, WorkDir: c.WorkDir,
		HostGone: c.HostGone, Spares: c.Spares, Settings: worker.Settings{Durability: c.Durability, SpareAfter: c.SpareAfter},
		Log: log, Progress: os.Stderr})
	table := res.Table()
	if err == nil && c.SentinelRuns > 0 {
		fmt.Fprintln(os.Stderr, "measuring Redis Sentinel for comparison...")
		sres, serr := failbench.Sentinel(ctx, failbench.SentinelOptions{Runs: c.SentinelRuns, Replicas: c.Replicas, DownAfter: c.DownAfter, WorkDir: c.WorkDir, HostGone: c.HostGone})
		if serr != nil {
			fmt.Fprintln(os.Stderr, "sentinel comparison failed:", serr)
		} else {
			table += "\n" + failbench.Compare(res, sres, c.DownAfter)
		}
	}
	fmt.Print(table)
	if c.Out != "" {
		if werr := os.WriteFile(c.Out, []byte(table), 0o644); werr != nil && err == nil {
			err = werr
		}
	}
	if err != nil {
		return err
	}
	if !res.CheckOK {
		return fmt.Errorf("ratequeue check failed:\n%s", res.CheckOut)
	}
	return nil
}
