// Package failbench measures a failover end to end: from kill -9 of a shard's primary
// to the first write acknowledged on the new primary through the Ratequeue client
// (`ratequeue load -direct`, WAIT 1 acknowledgements), over several runs, with each
// phase's share. It runs real processes on loopback: redis-server nodes, an embedded
// NATS server (stream and kv), lazarus (in this process), `ratequeue load` and
// `ratequeue check`, and either a synthetic alert source that follows the design's
// detection defaults or the real agent and alerter binaries (Pipeline).
package failbench

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/lazarus/internal/decide"
	"github.com/heartline/heartline/services/lazarus/internal/redisops"
	"github.com/heartline/heartline/services/lazarus/internal/worker"
	"github.com/heartline/heartline/shared/connect"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/redisproc"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/natsstream"
	"github.com/heartline/heartline/shared/topology"
)

// ShardID is the benchmark's shard.
const ShardID = "shard-1"

// Options configure a benchmark.
type Options struct {
	Runs     int // failovers measured (default 10)
	Replicas int // replicas of the shard (default 2)
	// Period between kills (default 6 s); the load runs for Runs*Period plus a lead.
	Period time.Duration
	// Pipeline uses the agent and alerter binaries instead of the synthetic detector.
	Pipeline bool
	// HostGone: the killed primary stays down until lazarus has attached a spare from
	// the pool (Spares nodes, default 1) to the shard; only then is it started again
	// (empty), joining the pool as the next run's spare. Measures a host lost for good.
	HostGone     bool
	Spares       int
	AgentBin     string
	AlerterBin   string
	RatequeueBin string // required
	EnqueueRate  float64
	WorkDir      string // required
	Settings     worker.Settings
	Log          zerolog.Logger
	Progress     io.Writer
}

// Run is one measured failover. Times are absolute.
type Run struct {
	N          int
	OldPrimary string
	NewPrimary string
	Kill       time.Time
	Detected   time.Time
	Alerted    time.Time
	Decided    time.Time
	Promoted   time.Time
	Routed     time.Time
	FirstAck   time.Time
	LossWindow int64
	Err        string
}

// Result is a benchmark's outcome.
type Result struct {
	Runs      []Run
	CheckOK   bool
	CheckOut  string
	LoadOut   string
	Acked     int // acknowledged enqueues in the history
	Detection string
}

type bench struct {
	o      Options
	nodes  map[string]*redisproc.Process
	plat   *connect.Platform
	store  topology.Store
	done   chan events.Event
	procs  []*exec.Cmd
	logDir string
}

// Execute runs the benchmark.
func Execute(ctx context.Context, o Options) (Result, error) {
	if o.Runs <= 0 {
		o.Runs = 10
	}
	if o.Replicas <= 0 {
		o.Replicas = 2
	}
	if o.Period <= 0 {
		o.Period = 6 * time.Second
	}
	if o.EnqueueRate <= 0 {
		o.EnqueueRate = 200
	}
	if o.RatequeueBin == "" || o.WorkDir == "" {
		return Result{}, errors.New("failbench: RatequeueBin and WorkDir are required")
	}
	if o.Pipeline && (o.AgentBin == "" || o.AlerterBin == "") {
		return Result{}, errors.New("failbench: the pipeline mode needs AgentBin and AlerterBin")
	}
	if o.Progress == nil {
		o.Progress = io.Discard
	}
	if o.Settings.Cooldown == 0 {
		o.Settings.Cooldown = time.Second // runs follow each other faster than the default 30 s
	}
	if o.Settings.MaxPerWindow == 0 {
		o.Settings.MaxPerWindow = -1 // the fleet limit (5 per 10 min) would hold the 6th run
	}
	if o.Settings.Instance == "" {
		o.Settings.Instance = "failbench-lazarus"
	}
	if o.HostGone && o.Spares <= 0 {
		o.Spares = 1
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	b := &bench{o: o, nodes: map[string]*redisproc.Process{}, done: make(chan events.Event, 64), logDir: filepath.Join(o.WorkDir, "logs")}
	defer b.stop()
	if err := os.MkdirAll(b.logDir, 0o755); err != nil {
		return Result{}, err
	}
	emb, err := natsstream.StartEmbedded(natsstream.EmbeddedOptions{StoreDir: filepath.Join(o.WorkDir, "nats"), Port: -1, Log: o.Log})
	if err != nil {
		return Result{}, err
	}
	defer emb.Shutdown()
	url := emb.ClientURL()
	if b.plat, err = connect.Open(ctx, connect.Config{Stream: url, Instance: "failbench"}, o.Log); err != nil {
		return Result{}, err
	}
	defer b.plat.Close()
	b.store = topology.Store{KV: b.plat.KV}
	if err := b.startShard(ctx); err != nil {
		return Result{}, err
	}
	w, err := worker.New(o.Settings, worker.Deps{KV: b.plat.KV, Publisher: b.plat.Stream, Consumer: b.plat.Stream, Log: o.Log})
	if err != nil {
		return Result{}, err
	}
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	wg.Add(2)
	go func() { defer wg.Done(); _ = w.Run(ctx) }()
	go func() { defer wg.Done(); b.watchFailovers(ctx) }()
	res := Result{Detection: "synthetic detector (watch connection + 250 ms probes, 150 ms timeout, 3 failures and 500 ms)"}
	if o.Pipeline {
		res.Detection = "agent + alerter binaries"
		if err := b.startPipeline(url); err != nil {
			return res, err
		}
	} else {
		wg.Add(1)
		go func() { defer wg.Done(); b.detect(ctx) }()
	}
	history := filepath.Join(o.WorkDir, "history.jsonl")
	lead := 4 * time.Second
	loadFor := lead + time.Duration(o.Runs)*o.Period
	load := exec.CommandContext(ctx, o.RatequeueBin, "load", "-direct", "-stream", url, "-history", history,
		"-queues", "32", "-enqueue-rate", fmt.Sprint(o.EnqueueRate), "-duration", loadFor.String(), "-concurrency", "16",
		"-consumers", "4", "-log-format", "json", "-log-level", "warn")
	load.Env = append(os.Environ(), "HEARTLINE_KV=", "HEARTLINE_STREAM=")
	var loadOut strings.Builder
	load.Stdout = &loadOut
	loadErr, err := os.Create(filepath.Join(b.logDir, "ratequeue-load.log"))
	if err != nil {
		return res, err
	}
	defer loadErr.Close()
	load.Stderr = loadErr
	if err := load.Start(); err != nil {
		return res, fmt.Errorf("starting ratequeue load: %w", err)
	}
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.Wait() }()
	start := time.Now()
	for i := 0; i < o.Runs; i++ {
		at := start.Add(lead + time.Duration(i)*o.Period)
		r := b.runOnce(ctx, i+1, at)
		res.Runs = append(res.Runs, r)
		fmt.Fprintf(o.Progress, "run %d: %s -> %s %s\n", r.N, r.OldPrimary, r.NewPrimary, r.Err)
	}
	if err := <-loadDone; err != nil {
		res.LoadOut = loadOut.String()
		return res, fmt.Errorf("ratequeue load: %w\n%s", err, loadOut.String())
	}
	res.LoadOut = loadOut.String()
	if err := b.firstAcks(history, &res); err != nil {
		return res, err
	}
	chk := exec.CommandContext(ctx, o.RatequeueBin, "check", history)
	out, err := chk.CombinedOutput()
	res.CheckOut, res.CheckOK = string(out), err == nil
	return res, nil
}

func (b *bench) stop() {
	for _, p := range b.procs {
		if p.Process != nil {
			_ = p.Process.Kill()
			_, _ = p.Process.Wait()
		}
	}
	for _, n := range b.nodes {
		_ = n.Kill()
	}
}

func (b *bench) startShard(ctx context.Context) error {
	dir := filepath.Join(b.o.WorkDir, "redis")
	dirs := [][2]string{{"min-replicas-to-write", "1"}}
	p, err := redisproc.Start(ctx, redisproc.Config{Name: "primary", Dir: dir, Directives: dirs})
	if err != nil {
		return err
	}
	b.nodes[p.Addr()] = p
	sh := topology.Shard{ID: ShardID, Index: 0, Epoch: 1, Primary: p.Addr()}
	for i := 0; i < b.o.Replicas; i++ {
		r, err := redisproc.Start(ctx, redisproc.Config{Name: fmt.Sprintf("replica%d", i+1), Dir: dir, ReplicaOf: p.Addr(), Directives: dirs})
		if err != nil {
			return err
		}
		b.nodes[r.Addr()] = r
		sh.Replicas = append(sh.Replicas, r.Addr())
	}
	if err := b.waitHealthy(ctx, sh, 20*time.Second); err != nil {
		return err
	}
	if _, err := b.store.Seed(ctx, topology.Map{Shards: []topology.Shard{sh}}); err != nil {
		return err
	}
	for i := 0; i < b.o.Spares; i++ {
		s, err := redisproc.Start(ctx, redisproc.Config{Name: fmt.Sprintf("spare%d", i+1), Dir: dir, Directives: dirs})
		if err != nil {
			return err
		}
		b.nodes[s.Addr()] = s
		if _, err := b.store.UpdatePool(ctx, func(p *topology.Pool) error {
			return p.Add(topology.Spare{Addr: s.Addr(), Added: time.Now().UTC(), AddedBy: "failbench"})
		}); err != nil {
			return err
		}
	}
	return redisops.Ops{}.StampEpoch(ctx, sh.Primary, 1)
}

// waitHealthy waits until every node answers and every replica follows the primary
// with its link up and no sync in progress.
func (b *bench) waitHealthy(ctx context.Context, sh topology.Shard, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	ops := redisops.Ops{CheckTimeout: 500 * time.Millisecond}
	for {
		ok := true
		why := ""
		nodes := ops.CheckAll(ctx, sh.Nodes())
		if !nodes[0].IsMaster() {
			ok, why = false, "primary "+sh.Primary+" not master "+nodes[0].Err
		}
		for _, n := range nodes[1:] {
			if !n.Reachable || n.Role != "slave" || n.MasterAddr != sh.Primary || !n.LinkUp || n.SyncInProgress {
				ok, why = false, fmt.Sprintf("replica %s: %s of %s link %v sync %v %s", n.Addr, n.Role, n.MasterAddr, n.LinkUp, n.SyncInProgress, n.Err)
			}
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("shard not healthy after %s: %s", timeout, why)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

func (b *bench) runOnce(ctx context.Context, n int, at time.Time) Run {
	r := Run{N: n}
	sh, _, err := b.store.Get(ctx, ShardID)
	if err != nil {
		r.Err = err.Error()
		return r
	}
	r.OldPrimary = sh.Primary
	if err := b.waitHealthy(ctx, sh, 30*time.Second); err != nil {
		r.Err = err.Error()
		return r
	}
	if d := time.Until(at); d > 0 {
		time.Sleep(d)
	} else {
		time.Sleep(time.Second) // let the load flow on this primary
	}
	for len(b.done) > 0 {
		<-b.done
	}
	node := b.nodes[sh.Primary]
	r.Kill = time.Now()
	if err := node.Kill(); err != nil {
		r.Err = err.Error()
		return r
	}
	timeout := time.After(30 * time.Second)
	for r.NewPrimary == "" {
		select {
		case <-ctx.Done():
			r.Err = ctx.Err().Error()
			return r
		case <-timeout:
			r.Err = "no failover within 30 s"
			return r
		case e := <-b.done:
			f := e.Payload.(*events.Failover)
			if f.OldPrimary != sh.Primary {
				continue
			}
			r.NewPrimary, r.LossWindow = f.NewPrimary, f.LossWindow
			r.Detected, r.Alerted, r.Decided, r.Promoted, r.Routed = f.Phases.Detected, f.Phases.Alerted, f.Phases.Decided, f.Phases.Promoted, f.Phases.Routed
		}
	}
	if b.o.HostGone {
		// The host stays gone until the shard has a replica in sync again without it:
		// the spare in the topology (epoch +2: failover, then the attach), or another
		// replica (a shard of more than one replica needs no spare). Then the node
		// comes back empty and joins the pool.
		deadline := time.Now().Add(30 * time.Second)
		ops := redisops.Ops{CheckTimeout: 500 * time.Millisecond}
		for {
			cur, _, err := b.store.Get(ctx, ShardID)
			if err == nil && cur.Epoch >= sh.Epoch+2 {
				break
			}
			if err == nil && cur.Epoch > sh.Epoch {
				nodes := ops.CheckAll(ctx, cur.Nodes())
				synced := false
				for _, n := range nodes[1:] {
					synced = synced || (n.Addr != sh.Primary && decide.InSync(n, nodes[0]))
				}
				if synced {
					break
				}
			}
			if time.Now().After(deadline) {
				r.Err = "no spare attached within 30 s of the kill"
				break
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	// The old node restarts empty, as with persistence off and an automatic restart;
	// lazarus's reconcile loop rejoins it as a replica (with HostGone: a spare).
	if err := node.Restart(ctx, true); err != nil {
		r.Err = "restart: " + err.Error()
	}
	return r
}

func (b *bench) watchFailovers(ctx context.Context) {
	_ = b.plat.Stream.Consume(ctx, stream.Subscription{Topic: events.TopicFailovers, Group: "failbench-" + events.NewID()[24:], Start: stream.StartLatest, Ephemeral: true},
		func(_ context.Context, d stream.Delivery) error {
			e, err := events.Decode(d.Data)
			if err == nil && e.Kind == events.KindFailoverCompleted {
				select {
				case b.done <- e:
				default:
				}
			}
			return nil
		})
}

func (b *bench) startPipeline(url string) error {
	start := func(name, bin string, args ...string) error {
		cmd := exec.Command(bin, args...)
		cmd.Env = append(os.Environ(), "HEARTLINE_STREAM="+url, "HEARTLINE_KV=")
		f, err := os.Create(filepath.Join(b.logDir, name+".log"))
		if err != nil {
			return err
		}
		cmd.Stdout, cmd.Stderr = f, f
		if err := cmd.Start(); err != nil {
			return fmt.Errorf("starting %s: %w", name, err)
		}
		b.procs = append(b.procs, cmd)
		return nil
	}
	// Back-to-back kills of one shard are what the alerter's flap detection exists to
	// stop; the benchmark measures the failover path, so it is lifted.
	if err := start("alerter", b.o.AlerterBin, "-http-listen", "", "-log-format", "json", "-flap-changes", "1000"); err != nil {
		return err
	}
	i := 0
	for addr := range b.nodes {
		i++
		if err := start(fmt.Sprintf("agent%d", i), b.o.AgentBin, "-shard", ShardID, "-replica", addr, "-http-listen", "", "-log-format", "json"); err != nil {
			return err
		}
	}
	return nil
}

// detect is the synthetic alert source: it follows the design's detection defaults
// (a watch connection that wakes an immediate probe, probes every 250 ms with a 150 ms
// timeout, an alert after 3 consecutive failures and 500 ms without a healthy probe).
func (b *bench) detect(ctx context.Context) {
	const interval, timeout, threshold, downAfter = 250 * time.Millisecond, 150 * time.Millisecond, 3, 500 * time.Millisecond
	var (
		watched     string
		wake        = make(chan struct{}, 1)
		stopWatch   context.CancelFunc
		fails       int
		firstFail   time.Time
		lastHealthy = time.Now()
		alerted     string
	)
	defer func() {
		if stopWatch != nil {
			stopWatch()
		}
	}()
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		sh, _, err := b.store.Get(ctx, ShardID)
		if err == nil && sh.Primary != watched {
			if stopWatch != nil {
				stopWatch()
			}
			watched, fails, lastHealthy = sh.Primary, 0, time.Now()
			stopWatch = startWatch(ctx, watched, wake)
		}
		if watched != "" {
			ok := probe(ctx, watched, timeout)
			now := time.Now()
			if ok {
				fails, lastHealthy = 0, now
			} else {
				if fails == 0 {
					firstFail = now
				}
				fails++
				key := fmt.Sprintf("%s@%d", watched, sh.Epoch)
				if fails >= threshold && now.Sub(lastHealthy) >= downAfter && alerted != key {
					alerted = key
					b.publishAlert(ctx, sh, firstFail, fails, now.Sub(lastHealthy))
				}
			}
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-wake:
			t.Reset(interval)
		}
	}
}

func (b *bench) publishAlert(ctx context.Context, sh topology.Shard, first time.Time, fails int, downFor time.Duration) {
	e := events.New(events.KindAlertOpened, events.Source{Service: "failbench-detector", Instance: "synthetic"}, sh.ID, &events.Alert{
		IncidentID: "syn-" + events.NewID(), Code: events.AlertPrimaryDown, Severity: events.SeverityCritical, State: events.StateHard,
		Primary: sh.Primary, Reason: "synthetic detector: primary failed its probes", FailedProbes: fails, DownFor: downFor,
		AgentsReporting: 1, AgentsDown: 1, FirstFailure: first.UTC()})
	e.Epoch = sh.Epoch
	data, err := events.Encode(e)
	if err != nil {
		return
	}
	_ = b.plat.Stream.Publish(ctx, events.TopicAlerts, stream.Message{Key: sh.ID, ID: e.ID, Data: data})
}

func probe(ctx context.Context, addr string, timeout time.Duration) bool {
	c := redisops.Client(addr, timeout)
	defer c.Close()
	pctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	return c.Ping(pctx).Err() == nil
}

func startWatch(ctx context.Context, addr string, wake chan<- struct{}) context.CancelFunc {
	wctx, cancel := context.WithCancel(ctx)
	go watch(wctx, addr, wake)
	return cancel
}

// watch holds a blocking command on the primary; when the connection breaks it wakes
// the detector for an immediate probe (as the agent's watch connection does).
func watch(ctx context.Context, addr string, wake chan<- struct{}) {
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 150 * time.Millisecond, ReadTimeout: -1,
		ContextTimeoutEnabled: true, PoolSize: 1, DisableIdentity: true})
	defer c.Close()
	for ctx.Err() == nil {
		err := c.BLPop(ctx, 0, "heartline:failbench:watch").Err()
		if ctx.Err() != nil {
			return
		}
		if err != nil && !errors.Is(err, redis.Nil) {
			// One immediate probe per lost connection, like the agent; the
			// regular probes do the rest.
			select {
			case wake <- struct{}{}:
			default:
			}
			return
		}
	}
}

// historyLine is the part of a Ratequeue history line the benchmark reads.
type historyLine struct {
	Type       string `json:"type"`
	Status     string `json:"status"`
	Node       string `json:"node"`
	CompleteUS int64  `json:"complete_us"`
}

// firstAcks finds, for each run, the first enqueue acknowledged by the new primary
// after the kill.
func (b *bench) firstAcks(path string, res *Result) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l historyLine
		if json.Unmarshal(sc.Bytes(), &l) != nil || l.Type != "enqueue" || l.Status != "ok" {
			continue
		}
		res.Acked++
		at := time.UnixMicro(l.CompleteUS)
		for i := range res.Runs {
			r := &res.Runs[i]
			if r.NewPrimary != "" && l.Node == r.NewPrimary && at.After(r.Kill) && (r.FirstAck.IsZero() || at.Before(r.FirstAck)) {
				r.FirstAck = at
			}
		}
	}
	return sc.Err()
}

// Phase names of the table, in order.
var Phase = []string{"kill→alert", "alert→decided", "decided→promoted", "promoted→routed", "routed→first ack"}

func (r Run) phases() ([]time.Duration, bool) {
	if r.Err != "" || r.FirstAck.IsZero() || r.Routed.IsZero() || r.Alerted.IsZero() {
		return nil, false
	}
	alerted := r.Alerted
	if r.AlertBeforeKill() {
		alerted = r.Decided // detection was lazarus's own re-check of the open alert
	}
	return []time.Duration{alerted.Sub(r.Kill), r.Decided.Sub(alerted), r.Promoted.Sub(r.Decided), r.Routed.Sub(r.Promoted), r.FirstAck.Sub(r.Routed)}, true
}

// AlertBeforeKill reports a failover decided on an alert opened before the kill: an
// incident still open (judged a false alarm) that lazarus kept watching, whose next
// reconcile pass saw the primary gone.
func (r Run) AlertBeforeKill() bool { return !r.Alerted.IsZero() && r.Alerted.Before(r.Kill) }

// Total is kill -9 to the first acknowledged write on the new primary.
func (r Run) Total() time.Duration {
	if r.FirstAck.IsZero() {
		return 0
	}
	return r.FirstAck.Sub(r.Kill)
}

// Median returns the median total and per-phase medians over the complete runs.
func (res Result) Median() (time.Duration, []time.Duration, int) {
	var totals []time.Duration
	per := make([][]time.Duration, len(Phase))
	for _, r := range res.Runs {
		ph, ok := r.phases()
		if !ok {
			continue
		}
		totals = append(totals, r.Total())
		for i, d := range ph {
			per[i] = append(per[i], d)
		}
	}
	if len(totals) == 0 {
		return 0, nil, 0
	}
	meds := make([]time.Duration, len(Phase))
	for i := range per {
		meds[i] = median(per[i])
	}
	return median(totals), meds, len(totals)
}

func median(ds []time.Duration) time.Duration {
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// Table renders the runs and the medians with each phase's share.
func (res Result) Table() string {
	var b strings.Builder
	fmt.Fprintf(&b, "detection: %s\n\n", res.Detection)
	fmt.Fprintf(&b, "| run | %s | kill→first ack | loss window |\n| --- |%s --- | --- |\n", strings.Join(Phase, " | "), strings.Repeat(" --- |", len(Phase)))
	footnote := false
	for _, r := range res.Runs {
		ph, ok := r.phases()
		if !ok {
			fmt.Fprintf(&b, "| %d | incomplete: %s |\n", r.N, orDefault(r.Err, "no acknowledged write on the new primary in the history"))
			continue
		}
		cells := make([]string, len(ph))
		for i, d := range ph {
			cells[i] = fmtDur(d)
		}
		mark := ""
		if r.AlertBeforeKill() {
			mark, footnote = " *", true
		}
		fmt.Fprintf(&b, "| %d%s | %s | %s | %d B |\n", r.N, mark, strings.Join(cells, " | "), fmtDur(r.Total()), r.LossWindow)
	}
	total, meds, n := res.Median()
	if n > 0 {
		var sum time.Duration
		for _, d := range meds {
			sum += d
		}
		cells := make([]string, len(meds))
		for i, d := range meds {
			cells[i] = fmt.Sprintf("%s (%.0f%%)", fmtDur(d), 100*float64(d)/float64(max(sum, 1)))
		}
		fmt.Fprintf(&b, "| **median of %d** | %s | **%s** | |\n", n, strings.Join(cells, " | "), fmtDur(total))
	}
	if footnote {
		fmt.Fprintf(&b, "\n\\* the alert was opened before the kill (an open incident lazarus judged healthy and kept watching); the failover was decided by lazarus's next reconcile pass, counted as detection.\n")
	}
	check := "FAILED"
	if res.CheckOK {
		check = "passed"
	}
	fmt.Fprintf(&b, "\n%d enqueues acknowledged; `ratequeue check`: %s\n", res.Acked, check)
	return b.String()
}

func fmtDur(d time.Duration) string {
	if d < 10*time.Millisecond {
		return fmt.Sprintf("%.1f ms", float64(d)/float64(time.Millisecond))
	}
	return fmt.Sprintf("%d ms", d.Milliseconds())
}

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
