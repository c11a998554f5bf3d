// Package local is the chaos driver for the game day's own topology: redis-server
// processes started through shared/redisproc, Heartline service processes started
// through shared/proc, and bare PIDs of processes someone else started (signals only).
//
// It also models the process supervisor that production has (systemd, Kubernetes): a
// Redis node that dies — killed by chaos, shut down with SHUTDOWN NOSAVE, crashed — is
// started again after a configurable delay, with whatever is on its disk (nothing, with
// persistence off: the restart-wipe case). A kill fault may ask for an immediate
// restart, a specific delay, or none until recovery.
package local

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/driver"
	"github.com/heartline/heartline/services/chaos/internal/target"
)

var _ driver.Driver = (*Driver)(nil)

// Proc is what the driver needs of a process.
type Proc interface {
	Name() string
	PID() int
	Running() bool
	Signal(sig syscall.Signal) error
	// Stop sends sig (after SIGCONT) and waits for the exit.
	Stop(sig syscall.Signal) error
	// Start starts the stopped process again. wipe and override apply to Redis nodes
	// only (ErrUnsupported elsewhere when set).
	Start(ctx context.Context, wipe bool, override [][2]string) error
	// RestoreConfig writes the declared configuration back and returns it.
	RestoreConfig() ([][2]string, error)
}

// Options configure the driver.
type Options struct {
	// RedisRestartDelay is the supervisor's delay before it starts a dead Redis node
	// again (default 3 s); negative: no supervisor for Redis nodes.
	RedisRestartDelay time.Duration
	// ServiceRestartDelay is the same for service processes; 0 (the default) means the
	// supervisor does not restart services: a killed instance stays down until the
	// fault is recovered. Set it positive to restart them.
	ServiceRestartDelay time.Duration
	// Poll is how often the supervisor looks for dead processes (default 50 ms).
	Poll time.Duration
	// StartTimeout bounds one start (default 20 s).
	StartTimeout time.Duration
	Log          zerolog.Logger
	// OnRestart, when set, is called after the supervisor started a process again.
	OnRestart func(t target.Target, at time.Time, err error)
}

type entry struct {
	t      target.Target
	p      Proc
	delay  time.Duration // supervisor delay; <0: not supervised
	hold   bool          // a fault owns the process: the supervisor keeps off
	paused bool
	// once overrides delay for the next restart only.
	once    *time.Duration
	deadAt  time.Time
	starts  int
	lastErr error
}

// Driver is the local driver.
type Driver struct {
	o      Options
	mu     sync.Mutex
	procs  map[string]*entry
	wake   chan struct{}
	opMu   map[string]*sync.Mutex
	opMuMu sync.Mutex
}

// New returns a driver with no processes. Call Supervise to run the supervisor.
func New(o Options) *Driver {
	if o.RedisRestartDelay == 0 {
		o.RedisRestartDelay = 3 * time.Second
	}
	if o.Poll <= 0 {
		o.Poll = 50 * time.Millisecond
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 20 * time.Second
	}
	return &Driver{o: o, procs: map[string]*entry{}, wake: make(chan struct{}, 1), opMu: map[string]*sync.Mutex{}}
}

func key(t target.Target) string {
	switch t.Kind {
	case target.Node:
		return "node/" + t.Addr
	case target.Service:
		return "service/" + t.Service + "/" + strconv.Itoa(t.Instance)
	}
	return string(t.Kind) + "/" + t.Name()
}

// AddRedis registers a Redis node under its address. shard and role are informative.
func (d *Driver) AddRedis(addr string, p Proc) {
	delay := d.o.RedisRestartDelay
	d.add(target.Target{Kind: target.Node, Addr: addr}, p, delay)
}

// AddService registers a service instance (1-based instance number).
func (d *Driver) AddService(service string, instance int, p Proc) {
	delay := d.o.ServiceRestartDelay
	if delay == 0 {
		delay = -1
	}
	d.add(target.Target{Kind: target.Service, Service: service, Instance: instance}, p, delay)
}

func (d *Driver) add(t target.Target, p Proc, delay time.Duration) {
	if bare(p) {
		delay = -1 // someone else starts it
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.procs[key(t)] = &entry{t: t, p: p, delay: delay}
}

// Name is "local".
func (d *Driver) Name() string { return "local" }

// NeedsExecute is false: the local topology is the chaos runner's own.
func (d *Driver) NeedsExecute() bool { return false }

func (d *Driver) get(t target.Target) (*entry, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	e, ok := d.procs[key(t)]
	if !ok {
		return nil, fmt.Errorf("%w: %s (the local driver knows %d processes)", driver.ErrUnknownTarget, t, len(d.procs))
	}
	return e, nil
}

// lock serialises operations on one process (a restart must not race a recovery).
func (d *Driver) lock(t target.Target) func() {
	d.opMuMu.Lock()
	m := d.opMu[key(t)]
	if m == nil {
		m = &sync.Mutex{}
		d.opMu[key(t)] = m
	}
	d.opMuMu.Unlock()
	m.Lock()
	return m.Unlock
}

// Kill stops the process and tells the supervisor when to start it again.
func (d *Driver) Kill(ctx context.Context, t target.Target, o driver.KillOptions) error {
	e, err := d.get(t)
	if err != nil {
		return err
	}
	defer d.lock(t)()
	if !e.p.Running() {
		return fmt.Errorf("killing %s: %w", t, errNotRunning)
	}
	d.mu.Lock()
	switch {
	case o.NoRestart:
		e.hold = true
	case o.Immediate:
		z := time.Duration(0)
		e.once = &z
	case o.RestartAfter > 0:
		r := o.RestartAfter
		e.once = &r
	}
	e.paused = false
	d.mu.Unlock()
	sig := syscall.SIGKILL
	if o.Graceful {
		sig = syscall.SIGTERM
	}
	if err := e.p.Stop(sig); err != nil {
		return fmt.Errorf("killing %s: %w", t, err)
	}
	d.poke()
	return nil
}

var errNotRunning = errors.New("process is not running")

// Pause sends SIGSTOP.
func (d *Driver) Pause(ctx context.Context, t target.Target) error {
	e, err := d.get(t)
	if err != nil {
		return err
	}
	defer d.lock(t)()
	if err := e.p.Signal(syscall.SIGSTOP); err != nil {
		return fmt.Errorf("pausing %s: %w", t, err)
	}
	d.mu.Lock()
	e.paused = true
	d.mu.Unlock()
	return nil
}

// Resume sends SIGCONT.
func (d *Driver) Resume(ctx context.Context, t target.Target) error {
	e, err := d.get(t)
	if err != nil {
		return err
	}
	defer d.lock(t)()
	return d.resumeLocked(e)
}

func (d *Driver) resumeLocked(e *entry) error {
	if !e.p.Running() {
		d.mu.Lock()
		e.paused = false
		d.mu.Unlock()
		return nil
	}
	if err := e.p.Signal(syscall.SIGCONT); err != nil {
		return fmt.Errorf("resuming %s: %w", e.t, err)
	}
	d.mu.Lock()
	e.paused = false
	d.mu.Unlock()
	return nil
}

// Restart stops the process, waits o.Delay and starts it again; the supervisor keeps
// off in between.
func (d *Driver) Restart(ctx context.Context, t target.Target, o driver.RestartOptions) error {
	e, err := d.get(t)
	if err != nil {
		return err
	}
	defer d.lock(t)()
	if bare(e.p) {
		return fmt.Errorf("restarting %s: %w: the process is known by its PID only (it was not stopped)", t, driver.ErrUnsupported)
	}
	d.mu.Lock()
	e.hold = true
	e.paused = false
	d.mu.Unlock()
	defer func() {
		d.mu.Lock()
		e.hold = false
		d.mu.Unlock()
	}()
	sig := syscall.SIGKILL
	if o.Graceful {
		sig = syscall.SIGTERM
	}
	if e.p.Running() {
		if err := e.p.Stop(sig); err != nil {
			return fmt.Errorf("restarting %s: stop: %w", t, err)
		}
	}
	if o.Delay > 0 {
		select {
		case <-ctx.Done():
			return fmt.Errorf("restarting %s: %w (it stays stopped until recovery)", t, ctx.Err())
		case <-time.After(o.Delay):
		}
	}
	sctx, cancel := context.WithTimeout(ctx, d.o.StartTimeout)
	defer cancel()
	if err := e.p.Start(sctx, o.Wipe, o.Config); err != nil {
		return fmt.Errorf("restarting %s: start: %w", t, err)
	}
	return nil
}

// RestoreConfig writes the declared configuration back.
func (d *Driver) RestoreConfig(ctx context.Context, t target.Target) ([][2]string, error) {
	e, err := d.get(t)
	if err != nil {
		return nil, err
	}
	defer d.lock(t)()
	return e.p.RestoreConfig()
}

// EnsureRunning resumes a paused process and starts a stopped one; the supervisor
// takes over again.
func (d *Driver) EnsureRunning(ctx context.Context, t target.Target) error {
	e, err := d.get(t)
	if err != nil {
		return err
	}
	defer d.lock(t)()
	d.mu.Lock()
	paused := e.paused
	e.hold, e.once = false, nil
	d.mu.Unlock()
	if paused {
		if err := d.resumeLocked(e); err != nil {
			return err
		}
	}
	if e.p.Running() {
		return nil
	}
	sctx, cancel := context.WithTimeout(ctx, d.o.StartTimeout)
	defer cancel()
	if err := e.p.Start(sctx, false, nil); err != nil {
		return fmt.Errorf("starting %s again: %w", t, err)
	}
	return nil
}

// Instances lists the registered instances of a service.
func (d *Driver) Instances(ctx context.Context, service string) ([]target.Target, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	var out []target.Target
	for _, e := range d.procs {
		if e.t.Kind == target.Service && e.t.Service == service {
			out = append(out, e.t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Instance < out[j].Instance })
	return out, nil
}

// Running reports whether the process behind t runs (tests, health checks).
func (d *Driver) Running(t target.Target) bool {
	e, err := d.get(t)
	return err == nil && e.p.Running()
}

func (d *Driver) poke() {
	select {
	case d.wake <- struct{}{}:
	default:
	}
}

// Supervise restarts dead processes until ctx is done.
func (d *Driver) Supervise(ctx context.Context) {
	t := time.NewTicker(d.o.Poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-d.wake:
		}
		d.sweep(ctx)
	}
}

func (d *Driver) sweep(ctx context.Context) {
	now := time.Now()
	d.mu.Lock()
	var due []*entry
	for _, e := range d.procs {
		if e.hold || bare(e.p) || e.delay < 0 && e.once == nil {
			e.deadAt = time.Time{}
			continue
		}
		if e.p.Running() {
			e.deadAt = time.Time{}
			continue
		}
		if e.deadAt.IsZero() {
			e.deadAt = now
		}
		delay := e.delay
		if e.once != nil {
			delay = *e.once
		}
		if now.Sub(e.deadAt) >= delay {
			due = append(due, e)
		}
	}
	d.mu.Unlock()
	for _, e := range due {
		d.restartDead(ctx, e)
	}
}

func (d *Driver) restartDead(ctx context.Context, e *entry) {
	unlock := d.lock(e.t)
	defer unlock()
	d.mu.Lock()
	if e.hold || e.p.Running() {
		d.mu.Unlock()
		return
	}
	e.once, e.deadAt, e.paused = nil, time.Time{}, false
	e.starts++
	d.mu.Unlock()
	sctx, cancel := context.WithTimeout(ctx, d.o.StartTimeout)
	err := e.p.Start(sctx, false, nil)
	cancel()
	at := time.Now()
	d.mu.Lock()
	e.lastErr = err
	d.mu.Unlock()
	if err != nil {
		d.o.Log.Error().Err(err).Str("target", e.t.String()).Str("process", e.p.Name()).
			Msg("supervisor could not start the process again; retrying at the next poll")
	} else {
		d.o.Log.Warn().Str("target", e.t.String()).Str("process", e.p.Name()).Int("pid", e.p.PID()).
			Msg("supervisor started the dead process again")
	}
	if d.o.OnRestart != nil {
		d.o.OnRestart(e.t, at, err)
	}
}

// SetRestart tells the supervisor how to restart t the next time it finds it dead.
func (d *Driver) SetRestart(t target.Target, o driver.KillOptions) error {
	e, err := d.get(t)
	if err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	switch {
	case o.NoRestart:
		e.hold = true
	case o.Immediate:
		z := time.Duration(0)
		e.once = &z
	case o.RestartAfter > 0:
		r := o.RestartAfter
		e.once = &r
	}
	return nil
}

// StartAll starts every registered process that is down and resumes every paused one
// (the start_stopped rollback). The supervisor's holds are lifted.
func (d *Driver) StartAll(ctx context.Context) error {
	d.mu.Lock()
	list := make([]target.Target, 0, len(d.procs))
	for _, e := range d.procs {
		list = append(list, e.t)
	}
	d.mu.Unlock()
	var errs []error
	for _, t := range list {
		e, err := d.get(t)
		if err != nil {
			continue
		}
		if bare(e.p) && !e.p.Running() {
			errs = append(errs, fmt.Errorf("%s (pid only) is down and cannot be started here", t))
			continue
		}
		if err := d.EnsureRunning(ctx, t); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// bare reports whether p is known by its PID only (it cannot be started).
func bare(p Proc) bool {
	switch p.(type) {
	case *PID, *PIDFile:
		return true
	}
	return false
}
