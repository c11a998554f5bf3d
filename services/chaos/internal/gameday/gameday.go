// Package gameday is `chaos gameday`: it starts a local Heartline topology as real
// processes (shared/localstack: Redis shards, an agent beside every node, the alerter,
// two lazarus, three ratequeue serve instances, embedded NATS or kinesalite and
// dynalite), routes the client->ratequeue and agents->stream links through chaos's
// toxiproxy proxies, hands everything to the chaos runner (localenv), runs the
// game-day pack one experiment after another with the shards healthy again in between,
// and leaves a summary (table, summary.json, index.html) next to every run's report.
package gameday

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/driver/local"
	"github.com/heartline/heartline/services/chaos/internal/experiment"
	"github.com/heartline/heartline/services/chaos/internal/localenv"
	"github.com/heartline/heartline/services/chaos/internal/netfault"
	"github.com/heartline/heartline/services/chaos/internal/runner"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/localstack"
	"github.com/heartline/heartline/shared/topology"
)

// Errors.
var (
	// ErrPack: the pack cannot be loaded (missing folder, invalid file, unknown -only
	// name).
	ErrPack = errors.New("game-day pack")
	// ErrFailed: at least one experiment did not pass.
	ErrFailed = errors.New("game day failed")
	// ErrInterrupted: the game day was stopped by a signal.
	ErrInterrupted = errors.New("game day interrupted")
)

// Options configure a game day.
type Options struct {
	// BinDir holds the agent, alerter, lazarus and ratequeue binaries.
	BinDir string
	// Pack is the folder of experiment files (*.yaml, run in name order).
	Pack string
	// Only selects experiments by name (the file name without .yaml).
	Only []string
	// Out is the folder that receives everything; empty: gameday-reports/<UTC time>.
	Out string
	// Stream is localstack.StreamNATS or localstack.StreamKinesis.
	Stream   string
	Shards   int
	Replicas int
	// Spares in the spare pool (localstack.Options.Spares).
	Spares int
	// Degrade lists the shards whose durability policy is degrade (ids that the
	// topology does not have are ignored).
	Degrade []string
	// RedisRestartDelay is the modelled supervisor's delay (default 3 s).
	RedisRestartDelay time.Duration
	// HealthyTimeout bounds the wait for a healthy stack between experiments
	// (default 3 min).
	HealthyTimeout time.Duration
	// Poll is the runner's probe interval (default 250 ms).
	Poll time.Duration
	// Command is the command line, for the summary.
	Command string
	Log     zerolog.Logger
	// Stdout receives the progress and the summary table.
	Stdout io.Writer
}

// Entry is one experiment of the pack.
type Entry struct {
	Name string
	X    *experiment.Experiment
}

// LoadPack loads every experiment file of dir (sorted by name), or the ones named in
// only. Every invalid file and unknown name is reported at once.
func LoadPack(dir string, only []string) ([]Entry, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrPack, err)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("%w: no experiment file (*.yaml) in %s", ErrPack, dir)
	}
	sort.Strings(files)
	byName := map[string]string{}
	var names []string
	for _, f := range files {
		n := strings.TrimSuffix(filepath.Base(f), ".yaml")
		byName[n] = f
		names = append(names, n)
	}
	var problems []string
	if len(only) > 0 {
		var sel []string
		for _, n := range only {
			n = strings.TrimSuffix(strings.TrimSpace(n), ".yaml")
			if n == "" {
				continue
			}
			if _, ok := byName[n]; !ok {
				problems = append(problems, fmt.Sprintf("-only %q: no such experiment in %s (have: %s)", n, dir, strings.Join(names, ", ")))
				continue
			}
			sel = append(sel, n)
		}
		names = sel
	}
	var out []Entry
	for _, n := range names {
		x, err := experiment.LoadFile(byName[n])
		if err != nil {
			problems = append(problems, err.Error())
			continue
		}
		out = append(out, Entry{Name: n, X: x})
	}
	if len(problems) > 0 {
		return nil, fmt.Errorf("%w:\n%s", ErrPack, strings.Join(problems, "\n"))
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: nothing selected", ErrPack)
	}
	return out, nil
}

// Run runs the game day. The summary is returned (and written) even when an
// experiment failed (ErrFailed) or a signal stopped it (ErrInterrupted); any other
// error means the game day could not be carried out.
func Run(ctx context.Context, o Options, pack []Entry) (*Summary, error) {
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.HealthyTimeout <= 0 {
		o.HealthyTimeout = 3 * time.Minute
	}
	if o.RedisRestartDelay == 0 {
		o.RedisRestartDelay = 3 * time.Second
	}
	if o.Stream == "" {
		o.Stream = localstack.StreamNATS
	}
	started := time.Now().UTC()
	if o.Out == "" {
		o.Out = filepath.Join("gameday-reports", started.Format("20060102-150405"))
	}
	out, err := filepath.Abs(o.Out)
	if err != nil {
		return nil, err
	}
	if o.BinDir, err = filepath.Abs(o.BinDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	log := o.Log
	sum := &Summary{Started: started, Stream: o.Stream, Dir: out, Command: o.Command, Shards: o.Shards, Replicas: o.Replicas}
	for _, e := range pack {
		sum.Experiments = append(sum.Experiments, Result{Name: e.Name, Title: e.X.Title, File: e.X.File, Result: NotRun,
			FirstFailedHB: "-", Detected: "-", FailedOver: "-", WritesResumed: "-"})
	}
	say := func(format string, a ...any) { fmt.Fprintf(o.Stdout, format+"\n", a...) }

	// The stack lives until this function has halted every fault and stopped the
	// supervisor; a signal (ctx) only ends the experiments.
	stackCtx, stopStack := context.WithCancel(context.WithoutCancel(ctx))
	defer stopStack()
	links := netfault.New(log)
	defer links.Close()
	say("starting the local topology (%s; %d shards of a primary and %d replica(s), %d spare(s), durability degrade on %s; logs in %s)", o.Stream, o.Shards, o.Replicas, o.Spares,
		orNoShard(o.Degrade), filepath.Join(out, "stack", "logs"))
	begun := time.Now()
	st, err := localstack.Start(stackCtx, localstack.Options{Dir: filepath.Join(out, "stack"), Bins: localstack.BinariesIn(o.BinDir),
		Shards: o.Shards, Replicas: o.Replicas, Spares: o.Spares, Durability: durability(o.Degrade), Stream: o.Stream, Log: log,
		Link: func(from, to, upstream string) (string, error) { return links.Add(from, to, "", "", upstream) }})
	if err != nil {
		return nil, fmt.Errorf("starting the local topology: %w", err)
	}
	defer func() {
		if err := st.Stop(); err != nil {
			log.Error().Err(err).Msg("stopping the local topology")
		}
		_ = os.RemoveAll(filepath.Join(out, "stack", "data")) // JetStream files and service state: not evidence
	}()
	say("topology ready in %s: %d Redis nodes (%d of them spares), %d service processes", time.Since(begun).Round(100*time.Millisecond), len(st.Nodes()), len(st.SpareNodes), len(st.Services))

	drv := local.New(local.Options{RedisRestartDelay: o.RedisRestartDelay, Log: log})
	for _, n := range st.Nodes() {
		drv.AddRedis(n.Addr(), local.NewRedis(n.Process))
	}
	for _, svc := range st.Services {
		drv.AddService(svc.Name, svc.Instance, &local.Service{P: svc.Proc})
	}
	env := &localenv.Env{Streams: st.Platform.Stream, Store: st.Platform.KV, Driver: drv, Proxies: links,
		Ratequeue: &localenv.Ratequeue{Bin: localstack.BinariesIn(o.BinDir).Ratequeue,
			LoadArgs: []string{"-targets", strings.Join(st.RatequeueURLs(), ","), "-log-format", "json"}, Log: log}}
	kit := localenv.NewKit(env, localenv.KitOptions{Reports: out, Poll: o.Poll, Log: log,
		Source: events.Source{Service: "chaos", Instance: "gameday"}})
	kitCtx, stopKit := context.WithCancel(stackCtx)
	kit.Start(kitCtx)
	defer func() {
		// Recover every fault, stop the supervisor, then the stack (the deferred Stop).
		if err := kit.Halt(30 * time.Second); err != nil {
			log.Error().Err(err).Msg("halt at the end of the game day")
		}
		stopKit()
	}()

	interrupted := false
	for i := range pack {
		e := pack[i]
		res := &sum.Experiments[i]
		if ctx.Err() != nil {
			interrupted = true
			break
		}
		if why := waitHealthy(ctx, kit, st, o.HealthyTimeout); why != "" {
			if ctx.Err() != nil {
				interrupted = true
				break
			}
			say("warning: the stack is not healthy before %s after %s: %s (running it anyway: its steady state decides)", e.Name, o.HealthyTimeout, why)
		}
		say("[%d/%d] %s: %s", i+1, len(pack), e.Name, e.X.Title)
		rep := kit.Runner.Run(ctx, e.X, runner.Options{})
		*res = resultOf(e, rep, out)
		if ctx.Err() != nil {
			res.Result = Interrupted
			interrupted = true
		}
		say("       %s  detected %s, failed over %s, writes resumed %s, acked %s, lost %s  %s", res.Result, res.Detected, res.FailedOver,
			res.WritesResumed, num(res.Acked), num(res.Lost), res.Report)
		for _, b := range res.Broken {
			say("       broken: %s", b)
		}
		// Whatever the run left behind: processes down, links cut.
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Minute)
		if err := env.StartStopped(rctx); err != nil {
			log.Warn().Err(err).Msg("starting stopped processes after the experiment")
		}
		if err := env.ResetLinks(rctx); err != nil {
			log.Warn().Err(err).Msg("resetting the links after the experiment")
		}
		cancel()
	}
	sum.Ended = time.Now().UTC()
	sum.Network = auditNetwork(st)
	sum.Interrupted = interrupted
	sum.Passed = !interrupted && sum.Network.Clean()
	for _, r := range sum.Experiments {
		if r.Result != Passed {
			sum.Passed = false
		}
	}
	if err := sum.Write(); err != nil {
		log.Error().Err(err).Msg("writing the summary")
	}
	fmt.Fprintln(o.Stdout)
	sum.Table(o.Stdout)
	switch {
	case interrupted:
		return sum, ErrInterrupted
	case !sum.Passed:
		return sum, ErrFailed
	}
	return sum, nil
}

func orNoShard(ids []string) string {
	if len(ids) == 0 {
		return "no shard"
	}
	return strings.Join(ids, ",")
}

func durability(degrade []string) map[string]string {
	m := map[string]string{}
	for _, id := range degrade {
		m[id] = topology.DurabilityDegrade
	}
	return m
}

// auditNetwork reads every Redis node's log for the masters it dialed: nothing the
// game day starts may send traffic off the machine, and a parked replica dials its
// park address about once a second.
func auditNetwork(st *localstack.Stack) *NetworkAudit {
	a := &NetworkAudit{Nodes: len(st.Nodes())}
	all, off, err := st.AuditDials()
	if err != nil {
		a.Error = err.Error()
		return a
	}
	a.Dials, a.Off = all, off
	return a
}

// waitHealthy waits until every shard is healthy with no open alert and every service
// is ready; it returns why not after timeout ("" when healthy).
func waitHealthy(ctx context.Context, kit *localenv.Kit, st *localstack.Stack, timeout time.Duration) string {
	deadline := time.Now().Add(timeout)
	why := ""
	for {
		why = ""
		m, err := topology.Store{KV: st.Platform.KV}.Load(ctx)
		if err != nil {
			why = "topology: " + err.Error()
		} else {
			for _, sh := range m.Shards {
				if err := kit.Health.Check(ctx, sh.ID); err != nil {
					why = err.Error()
					break
				}
			}
		}
		if why == "" {
			if bad := st.NotReady(ctx); len(bad) > 0 {
				why = strings.Join(bad, "; ")
			}
		}
		if why == "" || time.Now().After(deadline) || ctx.Err() != nil {
			return why
		}
		select {
		case <-ctx.Done():
			return "interrupted"
		case <-time.After(500 * time.Millisecond):
		}
	}
}
