// Package localenv is the chaos runner's environment for the game day's local
// topology: Redis shards run as shared/redisproc processes under the local driver's
// supervisor, Heartline services as shared/proc processes, network links through the
// chaos runner's own toxiproxy proxies, the stream and kv store are the platform's, and
// Ratequeue load and the loss check are the `ratequeue load` and `ratequeue check`
// commands of the ratequeue binary.
//
// The game-day launcher builds the topology and hands its parts to New; tests build
// one from redistest shards, a topology in memkv and memstream.
package localenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/driver/local"
	"github.com/heartline/heartline/services/chaos/internal/fault"
	"github.com/heartline/heartline/services/chaos/internal/injector"
	"github.com/heartline/heartline/services/chaos/internal/netfault"
	"github.com/heartline/heartline/services/chaos/internal/runner"
	"github.com/heartline/heartline/services/chaos/internal/target"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/stream"
)

var _ runner.Env = (*Env)(nil)

// Env is the local environment.
type Env struct {
	Streams stream.Backend
	Store   kv.Store
	Driver  *local.Driver
	// Proxies are the links routed through the chaos runner (nil: none).
	Proxies *netfault.Links
	// Ratequeue runs the load (nil: the environment has no load generator).
	Ratequeue *Ratequeue
}

// Name is "local".
func (e *Env) Name() string { return "local" }

// Stream is the platform's stream.
func (e *Env) Stream() stream.Backend { return e.Streams }

// KV is the platform's kv store.
func (e *Env) KV() kv.Store { return e.Store }

// Load returns the Ratequeue load generator, if any.
func (e *Env) Load() runner.Load {
	if e.Ratequeue == nil {
		return nil
	}
	return e.Ratequeue
}

// StartStopped starts every registered process that is down.
func (e *Env) StartStopped(ctx context.Context) error {
	if e.Driver == nil {
		return nil
	}
	return e.Driver.StartAll(ctx)
}

// ResetLinks removes every toxic and starts every proxy again.
func (e *Env) ResetLinks(ctx context.Context) error {
	if e.Proxies == nil {
		return nil
	}
	return e.Proxies.Reset(ctx)
}

// Ratequeue runs the ratequeue binary's load and check commands.
type Ratequeue struct {
	// Bin is the ratequeue binary.
	Bin string
	// LoadArgs say how load reaches Ratequeue, for example
	// ["-targets", "http://127.0.0.1:8080"] or ["-direct", "-topology-file", F].
	LoadArgs []string
	// CheckArgs are extra flags for check (for example ["-rate-tolerance", "2ms"]).
	CheckArgs []string
	// Env is added to the commands' environment.
	Env []string
	// StopGrace is how long an interrupted load may take to close its history
	// (default 30 s).
	StopGrace time.Duration
	Log       zerolog.Logger
}

// Start runs `ratequeue load` for the spec, its output in load.log next to the history.
func (q *Ratequeue) Start(ctx context.Context, s runner.LoadSpec) (runner.LoadRun, error) {
	if q.Bin == "" {
		return nil, errors.New("no ratequeue binary configured")
	}
	args := []string{"load", "-history", s.History, "-duration", s.Duration.String()}
	if s.RunID != "" {
		args = append(args, "-run", s.RunID)
	}
	if s.Queues > 0 {
		args = append(args, "-queues", strconv.Itoa(s.Queues))
	}
	if s.Rate > 0 {
		args = append(args, "-enqueue-rate", strconv.Itoa(s.Rate))
	}
	if s.Consumers > 0 {
		args = append(args, "-consumers", strconv.Itoa(s.Consumers))
	}
	args = append(args, q.LoadArgs...)
	args = append(args, s.Args...)
	if err := os.MkdirAll(filepath.Dir(s.History), 0o755); err != nil {
		return nil, err
	}
	logPath := filepath.Join(filepath.Dir(s.History), "load.log")
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(q.Bin, args...)
	cmd.Stdout, cmd.Stderr = lf, lf
	cmd.Env = append(os.Environ(), q.Env...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, fmt.Errorf("starting %s load: %w", q.Bin, err)
	}
	lr := &loadRun{cmd: cmd, args: append([]string{q.Bin}, args...), done: make(chan struct{}), log: logPath, grace: q.StopGrace}
	go func() {
		lr.err = cmd.Wait()
		lf.Close()
		close(lr.done)
	}()
	q.Log.Info().Strs("args", lr.args).Int("pid", cmd.Process.Pid).Msg("ratequeue load started")
	return lr, nil
}

type loadRun struct {
	cmd   *exec.Cmd
	args  []string
	done  chan struct{}
	err   error
	log   string
	grace time.Duration
	once  sync.Once
}

func (l *loadRun) Args() []string { return l.args }

// Wait waits for the load to finish; ctx ending interrupts it.
func (l *loadRun) Wait(ctx context.Context) error {
	select {
	case <-l.done:
	case <-ctx.Done():
		_ = l.Stop()
		<-l.done
	}
	if l.err != nil {
		return fmt.Errorf("ratequeue load: %v (see %s)", l.err, l.log)
	}
	return nil
}

// Stop interrupts the load (SIGINT: it closes its history), killing it after the grace.
func (l *loadRun) Stop() error {
	l.once.Do(func() {
		_ = l.cmd.Process.Signal(syscall.SIGINT)
		g := l.grace
		if g <= 0 {
			g = 30 * time.Second
		}
		go func() {
			select {
			case <-l.done:
			case <-time.After(g):
				_ = l.cmd.Process.Kill()
			}
		}()
	})
	return nil
}

// Check runs `ratequeue check -json OUT HISTORY`. Exit code 1 (anomalies) is a
// result, not an error; 2 and 3 (bad flags, unreadable history) are errors.
func (q *Ratequeue) Check(ctx context.Context, history, jsonOut string) (runner.CheckReport, error) {
	args := append([]string{"check", "-json", jsonOut}, q.CheckArgs...)
	args = append(args, history)
	cmd := exec.CommandContext(ctx, q.Bin, args...)
	cmd.Env = append(os.Environ(), q.Env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			return runner.CheckReport{}, fmt.Errorf("running ratequeue check: %w", err)
		}
		code = ee.ExitCode()
	}
	if code != 0 && code != 1 {
		return runner.CheckReport{ExitCode: code}, fmt.Errorf("ratequeue check exited %d: %s", code, tail(string(out), 600))
	}
	cr, err := ReadCheck(jsonOut)
	cr.ExitCode = code
	if err != nil {
		return cr, fmt.Errorf("reading the check report: %w", err)
	}
	return cr, nil
}

// ReadCheck reads the JSON report `ratequeue check -json` writes.
func ReadCheck(path string) (runner.CheckReport, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return runner.CheckReport{}, err
	}
	var cr runner.CheckReport
	if err := json.Unmarshal(b, &cr); err != nil {
		return runner.CheckReport{}, fmt.Errorf("%s: %w", path, err)
	}
	cr.Raw = json.RawMessage(b)
	return cr, nil
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// KitOptions configure NewKit.
type KitOptions struct {
	// Allow is the allowlist (default "*": the local topology is the runner's own).
	Allow []string
	// MaxShards is how many shards may be under attack at once (default 1).
	MaxShards int
	// Reports is the folder of the run reports.
	Reports string
	// Poll is the runner's probe interval (default 250 ms).
	Poll     time.Duration
	Registry *prometheus.Registry
	Source   events.Source
	Log      zerolog.Logger
}

// Kit is everything a game day needs to run experiments on a local topology.
type Kit struct {
	Env      *Env
	Injector *injector.Injector
	Runner   *runner.Runner
	Health   injector.ShardHealth
	Alerts   *injector.AlertWatch
	Metrics  *injector.Metrics
}

// NewKit builds the injector and the runner for e. Call Start to run the supervisor
// and the alert watch.
func NewKit(e *Env, o KitOptions) *Kit {
	if len(o.Allow) == 0 {
		o.Allow = []string{"*"}
	}
	if o.Registry == nil {
		o.Registry = prometheus.NewRegistry()
	}
	if o.Source.Service == "" {
		o.Source.Service = "chaos"
	}
	k := &Kit{Env: e, Alerts: injector.NewAlertWatch(), Metrics: injector.NewMetrics(o.Registry)}
	k.Health = injector.ShardHealth{KV: e.Store, Alerts: k.Alerts}
	deps := fault.Deps{Log: o.Log}
	inv := injector.Inventory{KV: e.Store}
	if e.Driver != nil {
		deps.Driver, inv.Driver = e.Driver, e.Driver
	}
	if e.Proxies != nil {
		deps.Links, inv.Proxies = e.Proxies, e.Proxies
	}
	k.Injector = injector.New(injector.Config{Source: o.Source, Allow: o.Allow, MaxShards: o.MaxShards}, deps,
		target.Resolver{Inv: inv}, k.Health, e.Streams, e.Store, k.Metrics, o.Log)
	k.Runner = &runner.Runner{Env: e, Inj: k.Injector, Health: k.Health, Metrics: k.Metrics, Reports: o.Reports,
		Source: o.Source, Log: o.Log, Poll: o.Poll}
	return k
}

// Start runs the local supervisor and the alert watch until ctx is done.
func (k *Kit) Start(ctx context.Context) {
	if k.Env.Driver != nil {
		go k.Env.Driver.Supervise(ctx)
	}
	go func() {
		for ctx.Err() == nil {
			_ = k.Alerts.Follow(ctx, k.Env.Streams, "chaos-alerts-"+strconv.Itoa(os.Getpid()), zerolog.Nop())
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
			}
		}
	}()
}

// Halt recovers every active fault (Ctrl-C of a game day).
func (k *Kit) Halt(timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	_, err := k.Injector.Halt(ctx, "game day stopping")
	return err
}
