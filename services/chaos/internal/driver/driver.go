// Package driver is the port through which process faults reach the place a target
// lives: local processes (the game day's own topology), Docker containers (docker
// compose, through the Docker Engine API) or Kubernetes pods (the staging driver).
// Redis-level and network faults do not go through a driver: they talk to Redis and to
// the chaos runner's proxies directly.
package driver

import (
	"context"
	"errors"
	"time"

	"github.com/heartline/heartline/services/chaos/internal/target"
)

// Errors.
var (
	// ErrUnsupported: this driver cannot apply this fault (a Kubernetes pod cannot be
	// paused, a PID without a handle cannot be restarted).
	ErrUnsupported = errors.New("not supported by this driver")
	// ErrUnknownTarget: the driver does not know where the target lives.
	ErrUnknownTarget = errors.New("target unknown to the driver")
)

// KillOptions tune Kill.
type KillOptions struct {
	// Graceful sends SIGTERM (and waits for the exit) instead of SIGKILL.
	Graceful bool
	// RestartAfter overrides the supervisor's restart delay for this kill, where the
	// driver models one (the local driver); 0 with Immediate means at once.
	RestartAfter time.Duration
	// Immediate asks for a restart without delay (RestartAfter is ignored).
	Immediate bool
	// NoRestart keeps the supervisor from restarting the target until EnsureRunning.
	NoRestart bool
}

// RestartOptions tune Restart.
type RestartOptions struct {
	// Graceful stops with SIGTERM instead of SIGKILL.
	Graceful bool
	// Delay between the stop and the start.
	Delay time.Duration
	// Wipe deletes the node's data files before the start: it comes back empty.
	Wipe bool
	// Config overrides configuration directives for this start (name, value; an empty
	// value removes the directive): the wrong-configuration restart.
	Config [][2]string
}

// Driver acts on processes, containers or pods.
type Driver interface {
	// Name is "local", "docker" or "kubernetes".
	Name() string
	// NeedsExecute reports whether acting needs an explicit --execute: outside the
	// local topology the default is a dry run.
	NeedsExecute() bool
	// Kill stops the target with SIGKILL (SIGTERM when graceful).
	Kill(ctx context.Context, t target.Target, o KillOptions) error
	// Pause freezes the target (SIGSTOP, docker pause); Resume continues it.
	Pause(ctx context.Context, t target.Target) error
	Resume(ctx context.Context, t target.Target) error
	// Restart stops the target and starts it again.
	Restart(ctx context.Context, t target.Target, o RestartOptions) error
	// RestoreConfig undoes a wrong-configuration restart: the declared configuration
	// is written back and returned (name, value) so that the caller can apply it at
	// run time without another restart.
	RestoreConfig(ctx context.Context, t target.Target) ([][2]string, error)
	// EnsureRunning starts the target if it is not running and resumes it if it is
	// paused (recovery of any process fault).
	EnsureRunning(ctx context.Context, t target.Target) error
	// Instances lists the instances of a service the driver knows about.
	Instances(ctx context.Context, service string) ([]target.Target, error)
}

// Supervisor is implemented by drivers that model a process supervisor (the local
// driver): a fault that makes a process exit by other means than Kill (SHUTDOWN
// NOSAVE) tells it first how to restart the process.
type Supervisor interface {
	SetRestart(t target.Target, o KillOptions) error
}
