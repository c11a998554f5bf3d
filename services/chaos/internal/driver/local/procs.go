package local

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/heartline/heartline/services/chaos/internal/driver"
	"github.com/heartline/heartline/shared/proc"
	"github.com/heartline/heartline/shared/redisproc"
)

// Redis adapts a shared/redisproc process.
type Redis struct {
	P *redisproc.Process

	mu         sync.Mutex
	overridden []string
}

// NewRedis wraps p.
func NewRedis(p *redisproc.Process) *Redis { return &Redis{P: p} }

func (r *Redis) Name() string                    { return r.P.Name() }
func (r *Redis) PID() int                        { return r.P.PID() }
func (r *Redis) Running() bool                   { return r.P.Running() }
func (r *Redis) Signal(sig syscall.Signal) error { return r.P.Signal(sig) }

// Stop kills (SIGKILL) or terminates (SIGTERM) the node and waits for the exit.
func (r *Redis) Stop(sig syscall.Signal) error {
	if sig == syscall.SIGTERM {
		return r.P.Terminate()
	}
	return r.P.Kill()
}

// Start starts the node again, empty with wipe, with override applied to its config
// file first (it stays there until RestoreConfig: a supervisor restart reads the file
// on disk, wrong or not).
func (r *Redis) Start(ctx context.Context, wipe bool, override [][2]string) error {
	if override != nil {
		if err := r.P.WriteConfig(override); err != nil {
			return fmt.Errorf("writing the overridden config: %w", err)
		}
		r.mu.Lock()
		for _, o := range override {
			r.overridden = append(r.overridden, o[0])
		}
		r.mu.Unlock()
	}
	return r.P.Restart(ctx, wipe)
}

// RestoreConfig writes the declared config file again and returns the declared values
// of the directives that were overridden (those the declared file sets).
func (r *Redis) RestoreConfig() ([][2]string, error) {
	if err := r.P.WriteConfig(nil); err != nil {
		return nil, err
	}
	r.mu.Lock()
	keys := r.overridden
	r.overridden = nil
	r.mu.Unlock()
	declared, err := ReadConf(r.P.ConfigPath())
	if err != nil {
		return nil, err
	}
	var out [][2]string
	seen := map[string]bool{}
	for _, k := range keys {
		if seen[k] {
			continue
		}
		seen[k] = true
		if v, ok := declared[k]; ok {
			out = append(out, [2]string{k, v})
		}
	}
	return out, nil
}

// ReadConf reads a redis.conf into name -> value, with surrounding quotes removed.
func ReadConf(path string) (map[string]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, _ := strings.Cut(line, " ")
		v = strings.TrimSpace(v)
		if len(v) >= 2 && v[0] == '"' && v[len(v)-1] == '"' {
			v = v[1 : len(v)-1]
		}
		out[strings.ToLower(k)] = v
	}
	return out, sc.Err()
}

// Service adapts a shared/proc process (a Heartline service instance).
type Service struct {
	P *proc.Process
	// Grace is how long a SIGTERM may take before SIGKILL (default 10 s).
	Grace time.Duration
}

func (s *Service) Name() string                    { return s.P.Name() }
func (s *Service) PID() int                        { return s.P.PID() }
func (s *Service) Running() bool                   { return s.P.Running() }
func (s *Service) Signal(sig syscall.Signal) error { return s.P.Signal(sig) }

func (s *Service) Stop(sig syscall.Signal) error {
	g := s.Grace
	if g <= 0 {
		g = 10 * time.Second
	}
	return s.P.Stop(sig, g)
}

func (s *Service) Start(ctx context.Context, wipe bool, override [][2]string) error {
	if wipe || override != nil {
		return fmt.Errorf("a service restart with wipe or a config override: %w", driver.ErrUnsupported)
	}
	return s.P.Start()
}

func (s *Service) RestoreConfig() ([][2]string, error) { return nil, driver.ErrUnsupported }

// PID adapts a process known only by its id (started by someone else): it can be
// signalled, not started again.
type PID struct {
	Label string
	Pid   int
}

func (p *PID) Name() string { return p.Label }

func (p *PID) PID() int {
	if p.Running() {
		return p.Pid
	}
	return 0
}

// Running reports whether the process exists (signal 0).
func (p *PID) Running() bool {
	if p.Pid <= 0 {
		return false
	}
	err := syscall.Kill(p.Pid, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}

func (p *PID) Signal(sig syscall.Signal) error {
	if !p.Running() {
		return fmt.Errorf("pid %d (%s): %w", p.Pid, p.Label, errNotRunning)
	}
	return syscall.Kill(p.Pid, sig)
}

// Stop signals the process and waits up to 15 s for it to disappear.
func (p *PID) Stop(sig syscall.Signal) error {
	if !p.Running() {
		return nil
	}
	_ = syscall.Kill(p.Pid, syscall.SIGCONT)
	if err := syscall.Kill(p.Pid, sig); err != nil {
		return err
	}
	deadline := time.Now().Add(15 * time.Second)
	for p.Running() {
		if time.Now().After(deadline) {
			return fmt.Errorf("pid %d (%s) still exists 15 s after %s", p.Pid, p.Label, sig)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

func (p *PID) Start(context.Context, bool, [][2]string) error {
	return fmt.Errorf("starting pid %d (%s) again: %w (register the process with a handle to restart it)", p.Pid, p.Label, driver.ErrUnsupported)
}

func (p *PID) RestoreConfig() ([][2]string, error) { return nil, driver.ErrUnsupported }

// PIDFile adapts a process whose id is in a pid file (a redis-server with "pidfile",
// a service started by someone else). The file is read at every call, so a restart by
// the process's own supervisor is followed. It can be signalled, not started.
type PIDFile struct {
	Label string
	Path  string
}

func (p *PIDFile) pid() *PID {
	b, err := os.ReadFile(p.Path)
	if err != nil {
		return &PID{Label: p.Label}
	}
	var n int
	_, _ = fmt.Sscanf(strings.TrimSpace(string(b)), "%d", &n)
	return &PID{Label: p.Label, Pid: n}
}

func (p *PIDFile) Name() string                    { return p.Label }
func (p *PIDFile) PID() int                        { return p.pid().PID() }
func (p *PIDFile) Running() bool                   { return p.pid().Running() }
func (p *PIDFile) Signal(sig syscall.Signal) error { return p.pid().Signal(sig) }
func (p *PIDFile) Stop(sig syscall.Signal) error   { return p.pid().Stop(sig) }
func (p *PIDFile) Start(ctx context.Context, wipe bool, o [][2]string) error {
	return p.pid().Start(ctx, wipe, o)
}
func (p *PIDFile) RestoreConfig() ([][2]string, error) { return nil, driver.ErrUnsupported }
