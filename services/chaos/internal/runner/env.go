// Package runner runs chaos experiments: it checks the steady state, backs up the
// shards it will touch, drives Ratequeue load, injects the method's faults, watches
// the stream for the first failed heartbeat, the alert, the failover phases and the
// topology change, stops the load and lets it drain, runs the loss checker, checks
// every hypothesis bound, rolls back, and writes report.json and a self-contained
// report.html. The environment (where the shards, services and links are) is behind
// the Env interface, so the game day's local topology, a docker compose deployment or
// a staging cluster plug in the same way.
package runner

import (
	"context"
	"encoding/json"
	"time"

	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/stream"
)

// Env is where an experiment runs. The injector (with its driver, links and safety
// rules) is passed to the runner separately.
type Env interface {
	// Name says which environment this is ("local", "docker", "kubernetes").
	Name() string
	// Stream is the platform's stream: the runner watches it and publishes the result.
	Stream() stream.Backend
	// KV is the platform's kv store (topology, incidents, chaos records).
	KV() kv.Store
	// Load drives Ratequeue traffic; nil when the environment has none.
	Load() Load
	// StartStopped starts every process of the environment that is down (a rollback).
	StartStopped(ctx context.Context) error
	// ResetLinks removes every network fault from the links the chaos runner owns.
	ResetLinks(ctx context.Context) error
}

// LoadSpec is the workload of one run.
type LoadSpec struct {
	RunID string
	// Duration of the producing phase; the load then drains by itself.
	Duration  time.Duration
	Queues    int
	Rate      int
	Consumers int
	Args      []string
	// History is the file to write.
	History string
}

// Load starts `ratequeue load` runs and checks their histories with
// `ratequeue check`.
type Load interface {
	Start(ctx context.Context, spec LoadSpec) (LoadRun, error)
	// Check runs the loss checker on a history and writes its JSON report to jsonOut.
	Check(ctx context.Context, history, jsonOut string) (CheckReport, error)
}

// LoadRun is one running load.
type LoadRun interface {
	// Wait waits until the load finished producing and draining.
	Wait(ctx context.Context) error
	// Stop interrupts it (an aborted run); the history is still closed properly.
	Stop() error
	// Args is the command line, for the report.
	Args() []string
}

// CheckReport is what `ratequeue check` reported (its JSON, with the counts the
// hypotheses use pulled out).
type CheckReport struct {
	Valid          bool            `json:"valid"`
	Drained        bool            `json:"drained"`
	Acknowledged   int64           `json:"acknowledged"`
	Delivered      int64           `json:"delivered"`
	Lost           int64           `json:"lost"`
	Unexpected     int64           `json:"unexpected"`
	Corrupt        int64           `json:"corrupt"`
	Duplicated     int64           `json:"duplicated"`
	Reordered      int64           `json:"reordered"`
	RateViolations int64           `json:"rate_violations"`
	Problems       []string        `json:"problems,omitempty"`
	Raw            json.RawMessage `json:"raw,omitempty"`
	ExitCode       int             `json:"exit_code"`
}
