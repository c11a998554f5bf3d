package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/api"
	"github.com/heartline/heartline/services/chaos/internal/driver"
	"github.com/heartline/heartline/services/chaos/internal/driver/local"
	"github.com/heartline/heartline/services/chaos/internal/experiment"
	"github.com/heartline/heartline/services/chaos/internal/fault"
	"github.com/heartline/heartline/services/chaos/internal/injector"
	"github.com/heartline/heartline/services/chaos/internal/localenv"
	"github.com/heartline/heartline/services/chaos/internal/runner"
	"github.com/heartline/heartline/services/chaos/internal/schedule"
	"github.com/heartline/heartline/services/chaos/internal/target"
	"github.com/heartline/heartline/shared/config"
	"github.com/heartline/heartline/shared/connect"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/stream"
)

const usage = `chaos: Heartline's fault injector and experiment runner

  chaos serve [flags]                      the HTTP API (start attack, list, recover, halt)
  chaos validate FILE...                   check experiment files (errors name file:line and field)
  chaos run [flags] EXPERIMENT...          run experiments, write report.json and report.html
  chaos schedule [flags] EXPERIMENT...     Ratequeue Chaos: run experiments every -every on a random healthy shard
  chaos halt [flags]                       ask a running chaos serve to recover every active fault
  chaos gameday [flags]                    start a local topology, run the game-day pack, print the summary
  chaos flags-table COMMAND                a command's flags as a Markdown table

Exit codes: 0 success; 1 a hypothesis failed, a file is invalid, or a run could not
be carried out; 2 bad usage or configuration.
Run "chaos COMMAND -h" for a command's flags and environment variables.
`

// Env is the process environment the command runs in.
type Env struct {
	Getenv func(string) string
	Stdout io.Writer
	Stderr io.Writer
}

// ExitError carries an exit code.
type ExitError struct {
	Code int
	Err  error
}

func (e *ExitError) Error() string { return e.Err.Error() }
func (e *ExitError) Unwrap() error { return e.Err }

// Run runs one command.
func Run(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 {
		fmt.Fprint(env.Stderr, usage)
		return &ExitError{2, fmt.Errorf("%w: no command", ErrUsage)}
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "validate":
		return validate(rest, env)
	case "flags-table":
		if len(rest) != 1 {
			return &ExitError{2, fmt.Errorf("%w: flags-table COMMAND", ErrUsage)}
		}
		var c Config
		l := config.NewLoader("chaos "+rest[0], "CHAOS")
		c.register(l, rest[0])
		l.Table(env.Stdout)
		return nil
	case "serve", "run", "schedule", "halt", "gameday":
	case "-h", "--help", "help":
		fmt.Fprint(env.Stdout, usage)
		return nil
	default:
		fmt.Fprint(env.Stderr, usage)
		return &ExitError{2, fmt.Errorf("%w: unknown command %q", ErrUsage, cmd)}
	}
	var c Config
	l := config.NewLoader("chaos "+cmd, "CHAOS")
	c.register(l, cmd)
	if err := l.Parse(rest, env.Getenv); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			l.Usage(env.Stdout)
			return nil
		}
		return &ExitError{2, err}
	}
	if err := c.Validate(cmd); err != nil {
		return &ExitError{2, err}
	}
	files := l.FlagSet().Args()
	if (cmd == "run" || cmd == "schedule") && len(files) == 0 {
		return &ExitError{2, fmt.Errorf("%w: chaos %s needs at least one experiment file", ErrUsage, cmd)}
	}
	if cmd == "gameday" {
		return runGameday(ctx, c, files, rest, env)
	}
	log, err := logging.New(logging.Options{Service: "chaos", Level: c.LogLevel, Format: c.LogFormat, Out: env.Stderr})
	if err != nil {
		return &ExitError{2, err}
	}
	switch cmd {
	case "halt":
		return halt(ctx, c, env)
	case "serve":
		return serve(ctx, c, log)
	default:
		var exps []*experiment.Experiment
		var bad []string
		for _, f := range files {
			x, err := experiment.LoadFile(f)
			if err != nil {
				bad = append(bad, err.Error())
				continue
			}
			exps = append(exps, x)
		}
		if len(bad) > 0 {
			return &ExitError{2, fmt.Errorf("invalid experiment files:\n%s", strings.Join(bad, "\n"))}
		}
		return runExperiments(ctx, cmd, c, exps, log, env)
	}
}

func validate(files []string, env Env) error {
	if len(files) == 0 {
		return &ExitError{2, fmt.Errorf("%w: chaos validate FILE...", ErrUsage)}
	}
	bad := 0
	for _, f := range files {
		x, err := experiment.LoadFile(f)
		if err != nil {
			bad++
			fmt.Fprintln(env.Stderr, err)
			continue
		}
		fmt.Fprintf(env.Stdout, "ok  %s: %q, %d fault(s), %d hypothesis bound(s)\n", f, x.Title, len(x.Method), bounds(x.Hypothesis))
	}
	if bad > 0 {
		return &ExitError{1, fmt.Errorf("%d of %d experiment files are invalid", bad, len(files))}
	}
	return nil
}

func bounds(h experiment.Hypothesis) int {
	b, _ := json.Marshal(h)
	var m map[string]any
	_ = json.Unmarshal(b, &m)
	n := len(m)
	if _, ok := m["alert_code"]; ok {
		n--
	}
	return n
}

// deployment is what serve, run and schedule share.
type deployment struct {
	pl      *connect.Platform
	drv     driver.Driver
	local   *local.Driver
	inj     *injector.Injector
	health  injector.ShardHealth
	alerts  *injector.AlertWatch
	reg     *prometheus.Registry
	metrics *injector.Metrics
}

func open(ctx context.Context, c Config, log zerolog.Logger) (*deployment, error) {
	pl, err := connect.Open(ctx, c.Connect, log)
	if err != nil {
		return nil, fmt.Errorf("opening the stream and kv store: %w", err)
	}
	d := &deployment{pl: pl, reg: prometheus.NewRegistry(), alerts: injector.NewAlertWatch()}
	d.metrics = injector.NewMetrics(d.reg)
	switch c.Driver {
	case "local":
		ld := local.New(local.Options{RedisRestartDelay: c.RedisRestartDelay, Log: log})
		for _, e := range c.LocalPIDs {
			name, file, _ := strings.Cut(e, "=")
			t, isNode, _ := parseLocalName(name)
			p := &local.PIDFile{Label: name, Path: file}
			if isNode {
				ld.AddRedis(t.Addr, p)
			} else {
				ld.AddService(t.Service, t.Instance, p)
			}
		}
		d.drv, d.local = ld, ld
	case "docker":
		if d.drv, err = dockerDriver(c, log); err != nil {
			pl.Close()
			return nil, err
		}
	case "kubernetes":
		if d.drv, err = kubeDriver(c, log); err != nil {
			pl.Close()
			return nil, err
		}
	}
	allow := c.Allow
	if len(allow) == 0 && c.Driver == "local" {
		allow = []string{"*"}
	}
	d.health = injector.ShardHealth{KV: pl.KV, Alerts: d.alerts}
	inv := injector.Inventory{KV: pl.KV, Driver: d.drv}
	d.inj = injector.New(injector.Config{Source: events.Source{Service: "chaos", Instance: hostname()}, Execute: c.Execute, DryRun: c.DryRun,
		Allow: allow, MaxShards: c.MaxShards}, fault.Deps{Driver: d.drv, Log: log},
		target.Resolver{Inv: inv}, d.health, pl.Stream, pl.KV, d.metrics, log)
	return d, nil
}

func hostname() string {
	h, _ := os.Hostname()
	return fmt.Sprintf("%s-%d", h, os.Getpid())
}

// background starts the alert watch and the local supervisor.
func (d *deployment) background(ctx context.Context, log zerolog.Logger) {
	go func() {
		group := "chaos-alerts-" + strings.NewReplacer(".", "-", ":", "-").Replace(hostname())
		if len(group) > 64 {
			group = group[:64]
		}
		for ctx.Err() == nil {
			if err := d.alerts.Follow(ctx, d.pl.Stream, group, log); err != nil && ctx.Err() == nil {
				log.Warn().Err(err).Msg("alert watch stopped; restarting")
				time.Sleep(time.Second)
			}
		}
	}()
	if d.local != nil {
		go d.local.Supervise(ctx)
	}
}

// haltAll recovers every active attack under a timeout of its own.
func (d *deployment) haltAll(timeout time.Duration, why string, log zerolog.Logger) {
	if len(d.inj.Active()) == 0 {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if _, err := d.inj.Halt(ctx, why); err != nil {
		log.Error().Err(err).Msg("halt finished with errors: check the targets by hand")
	}
}

func serve(ctx context.Context, c Config, log zerolog.Logger) error {
	d, err := open(ctx, c, log)
	if err != nil {
		return err
	}
	defer d.pl.Close()
	bctx, bcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer bcancel()
	d.background(bctx, log)
	if n, err := d.inj.RecoverLeftovers(ctx); err != nil {
		log.Warn().Err(err).Msg("could not look for attacks left active by an earlier chaos process")
	} else if n > 0 {
		log.Warn().Int("recovered", n).Msg("recovered attacks left active by an earlier chaos process")
	}
	srv := api.New(d.inj, c.Token, d.reg, log).HTTPServer(c.Listen)
	ln, err := net.Listen("tcp", c.Listen)
	if err != nil {
		return fmt.Errorf("listening on %s: %w", c.Listen, err)
	}
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	log.Info().Str("listen", ln.Addr().String()).Str("driver", c.Driver).Bool("execute", c.Execute).Strs("allow", c.Allow).Msg("chaos API serving")
	select {
	case <-ctx.Done():
		log.Warn().Msg("signal: halting every active attack, then stopping")
	case err := <-errc:
		d.haltAll(c.ShutdownTimeout, "HTTP server stopped", log)
		return err
	}
	d.haltAll(c.ShutdownTimeout, "signal", log)
	sctx, cancel := context.WithTimeout(context.Background(), c.ShutdownTimeout)
	defer cancel()
	return srv.Shutdown(sctx)
}

// cliEnv is the runner environment of the command line: the platform, the configured
// driver, and the ratequeue binary.
type cliEnv struct {
	name  string
	pl    *connect.Platform
	local *local.Driver
	rq    *localenv.Ratequeue
}

func (e *cliEnv) Name() string           { return e.name }
func (e *cliEnv) Stream() stream.Backend { return e.pl.Stream }
func (e *cliEnv) KV() kv.Store           { return e.pl.KV }
func (e *cliEnv) Load() runner.Load      { return e.rq }
func (e *cliEnv) StartStopped(ctx context.Context) error {
	if e.local == nil {
		return nil
	}
	return e.local.StartAll(ctx)
}
func (e *cliEnv) ResetLinks(context.Context) error { return nil }

func runExperiments(ctx context.Context, cmd string, c Config, exps []*experiment.Experiment, log zerolog.Logger, env Env) error {
	d, err := open(ctx, c, log)
	if err != nil {
		return err
	}
	defer d.pl.Close()
	bctx, bcancel := context.WithCancel(context.WithoutCancel(ctx))
	defer bcancel()
	d.background(bctx, log)
	defer d.haltAll(c.ShutdownTimeout, "chaos "+cmd+" exiting", log)
	rq := &localenv.Ratequeue{Bin: c.RatequeueBin, LoadArgs: strings.Fields(c.LoadArgs), CheckArgs: strings.Fields(c.CheckArgs), Log: log}
	r := &runner.Runner{Env: &cliEnv{name: c.Driver, pl: d.pl, local: d.local, rq: rq}, Inj: d.inj, Health: d.health,
		Metrics: d.metrics, Reports: c.Reports, Source: events.Source{Service: "chaos", Instance: hostname()}, Log: log,
		Poll: c.Poll, NoBackup: c.NoBackup}
	if cmd == "schedule" {
		s := &schedule.Scheduler{Every: c.Every, Experiments: exps, Runner: r, Health: d.health, KV: d.pl.KV,
			Eligible: func(shard string) bool {
				for _, a := range c.Allow {
					for _, role := range []string{"/primary", "/replica"} {
						if ok, _ := pathMatch(a, shard+role); ok || a == "*" {
							return true
						}
					}
				}
				return len(c.Allow) == 0 && c.Driver == "local"
			},
			LogFile: c.Reports + "/schedule.jsonl", StartNow: c.StartNow, MaxRuns: c.MaxRuns, Metrics: d.metrics, Log: log}
		return s.Run(ctx)
	}
	failed := 0
	fmt.Fprintf(env.Stdout, "%-60s %-8s %s\n", "EXPERIMENT", "RESULT", "REPORT")
	for _, x := range exps {
		if ctx.Err() != nil {
			break
		}
		rep := r.Run(ctx, x, runner.Options{})
		result := "passed"
		switch {
		case rep.Aborted:
			result = "ABORTED"
		case !rep.Passed:
			result = "FAILED"
		}
		if !rep.Passed {
			failed++
		}
		fmt.Fprintf(env.Stdout, "%-60s %-8s %s/report.html\n", trunc(x.Title, 60), result, rep.Dir)
		for _, h := range rep.Hypotheses {
			if !h.Held {
				fmt.Fprintf(env.Stdout, "    broken: %s: expected %s, got %s\n", h.Name, h.Expected, h.Actual)
			}
		}
		if rep.AbortReason != "" {
			fmt.Fprintf(env.Stdout, "    abort: %s\n", rep.AbortReason)
		}
		if rep.Error != "" {
			fmt.Fprintf(env.Stdout, "    error: %s\n", rep.Error)
		}
	}
	if failed > 0 {
		return &ExitError{1, fmt.Errorf("%d of %d experiments did not pass", failed, len(exps))}
	}
	return nil
}

func halt(ctx context.Context, c Config, env Env) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimRight(c.API, "/")+"/v1/halt", nil)
	if err != nil {
		return &ExitError{2, err}
	}
	req.Header.Set("Authorization", "Bearer "+c.Token)
	hc := &http.Client{Timeout: 2 * time.Minute}
	resp, err := hc.Do(req)
	if err != nil {
		return fmt.Errorf("halt: %w", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	env.Stdout.Write(b)
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("halt: %s", resp.Status)
	}
	return nil
}

func trunc(s string, n int) string {
	if len(s) > n {
		return s[:n-3] + "..."
	}
	return s
}
