// Package proc runs and controls child processes: start with a log file, signal, kill,
// pause (SIGSTOP), resume, restart. Redis nodes (redisproc) and the game day's service
// processes (localstack) are both run through it, and the chaos injector's process
// faults act on it.
package proc

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// ErrNotRunning: the process is not running.
var ErrNotRunning = errors.New("process not running")

// Spec says how to run a process.
type Spec struct {
	Name string
	Path string
	Args []string
	Env  []string // added to the parent's environment
	Dir  string
	// Log receives stdout and stderr (appended); empty: discarded.
	Log string
}

// Process is a child process that can be started again after it exited.
type Process struct {
	spec Spec
	mu   sync.Mutex
	cmd  *exec.Cmd
	done chan struct{}
}

// New returns a process that is not started yet.
func New(s Spec) *Process { return &Process{spec: s} }

// Spec returns the process's spec.
func (p *Process) Spec() Spec { return p.spec }

// Name is the process's label.
func (p *Process) Name() string { return p.spec.Name }

// Start starts the process (again). It is an error to start a running process.
func (p *Process) Start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.runningLocked() {
		return fmt.Errorf("proc: %s is already running", p.spec.Name)
	}
	cmd := exec.Command(p.spec.Path, p.spec.Args...)
	cmd.Dir = p.spec.Dir
	cmd.Env = append(os.Environ(), p.spec.Env...)
	// Its own process group: a Ctrl-C in the terminal reaches the parent only, which
	// then stops its children in order.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var logf *os.File
	if p.spec.Log != "" {
		f, err := os.OpenFile(p.spec.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return fmt.Errorf("proc: %s: log: %w", p.spec.Name, err)
		}
		logf = f
		cmd.Stdout, cmd.Stderr = f, f
	}
	if err := cmd.Start(); err != nil {
		if logf != nil {
			logf.Close()
		}
		return fmt.Errorf("proc: start %s: %w", p.spec.Name, err)
	}
	done := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		if logf != nil {
			logf.Close()
		}
		close(done)
	}()
	p.cmd, p.done = cmd, done
	return nil
}

func (p *Process) runningLocked() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Running reports whether the process is alive (a paused process is alive).
func (p *Process) Running() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.runningLocked()
}

// Exited returns a channel closed when the current run ends (closed already when the
// process is not running).
func (p *Process) Exited() <-chan struct{} {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.done == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	return p.done
}

// PID is the running process's id, or 0.
func (p *Process) PID() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.runningLocked() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.runningLocked() {
		return fmt.Errorf("%w: %s", ErrNotRunning, p.spec.Name)
	}
	return p.cmd.Process.Signal(sig)
}

// Pause stops the process with SIGSTOP.
func (p *Process) Pause() error { return p.Signal(syscall.SIGSTOP) }

// Resume continues a paused process with SIGCONT.
func (p *Process) Resume() error { return p.Signal(syscall.SIGCONT) }

// Kill sends SIGKILL and waits until the process is gone. A process that is not running
// is not an error.
func (p *Process) Kill() error { return p.Stop(syscall.SIGKILL, 15*time.Second) }

// Terminate sends SIGTERM and waits up to grace, then kills.
func (p *Process) Terminate(grace time.Duration) error { return p.Stop(syscall.SIGTERM, grace) }

// Stop sends sig (after SIGCONT, so that a paused process can act on it), waits up to
// grace for the exit, then kills.
func (p *Process) Stop(sig syscall.Signal, grace time.Duration) error {
	p.mu.Lock()
	if !p.runningLocked() {
		p.mu.Unlock()
		return nil
	}
	cmd, done := p.cmd, p.done
	p.mu.Unlock()
	_ = cmd.Process.Signal(syscall.SIGCONT)
	if err := cmd.Process.Signal(sig); err != nil && !errors.Is(err, os.ErrProcessDone) {
		return err
	}
	select {
	case <-done:
		return nil
	case <-time.After(grace):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("proc: %s did not exit within %s of %s; killed", p.spec.Name, grace, sig)
	}
}
