// Package schedule is Ratequeue Chaos: it runs experiments on a schedule, each time
// against a random healthy shard, skips the slot while a real incident is open,
// records every slot (kv chaos.runs.<id> and a JSON-lines log next to the reports),
// and keeps going after a failed run. It is bounded by its context.
package schedule

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/experiment"
	"github.com/heartline/heartline/services/chaos/internal/injector"
	"github.com/heartline/heartline/services/chaos/internal/runner"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/topology"
)

// RunsPrefix is the kv prefix of the schedule's records.
const RunsPrefix = "chaos.runs"

// Clock is time, replaceable in tests.
type Clock interface {
	Now() time.Time
	After(d time.Duration) <-chan time.Time
}

type realClock struct{}

func (realClock) Now() time.Time                         { return time.Now() }
func (realClock) After(d time.Duration) <-chan time.Time { return time.After(d) }

// Runner runs one experiment (runner.Runner).
type Runner interface {
	Run(ctx context.Context, x *experiment.Experiment, o runner.Options) *runner.Report
}

// Health is what the schedule asks of the fleet.
type Health interface {
	AnyOpenAlert(ctx context.Context) ([]string, error)
	Check(ctx context.Context, shard string) error
}

// Outcomes of a slot.
const (
	OutcomeRan             = "ran"
	OutcomeSkippedIncident = "skipped_incident"
	OutcomeSkippedNoShard  = "skipped_no_shard"
	OutcomeError           = "error"
)

// Record is one slot of the schedule.
type Record struct {
	ID         string    `json:"id"`
	Slot       int       `json:"slot"`
	Experiment string    `json:"experiment"`
	File       string    `json:"file"`
	Shard      string    `json:"shard,omitempty"`
	Outcome    string    `json:"outcome"`
	Passed     bool      `json:"passed"`
	Aborted    bool      `json:"aborted,omitempty"`
	Reason     string    `json:"reason,omitempty"`
	Report     string    `json:"report,omitempty"`
	Started    time.Time `json:"started"`
	Ended      time.Time `json:"ended"`
}

// Scheduler runs experiments every interval.
type Scheduler struct {
	Every       time.Duration
	Experiments []*experiment.Experiment
	Runner      Runner
	Health      Health
	KV          kv.Store
	// Eligible filters shards before the health check (the allowlist); nil: all.
	Eligible func(shard string) bool
	// Log file of records (JSON lines); empty: kv only.
	LogFile string
	// StartNow runs the first slot at once instead of after one interval.
	StartNow bool
	// MaxRuns stops after that many slots (0: until ctx ends).
	MaxRuns int
	Clock   Clock
	Intn    func(n int) int
	Metrics *injector.Metrics
	Log     zerolog.Logger

	mu sync.Mutex
}

// Run runs slots until ctx is done (or MaxRuns slots ran). A failed run is recorded
// and the schedule goes on; only ctx ends it.
func (s *Scheduler) Run(ctx context.Context) error {
	if s.Every <= 0 {
		return errors.New("schedule: the interval must be positive")
	}
	if len(s.Experiments) == 0 {
		return errors.New("schedule: no experiment")
	}
	if s.Clock == nil {
		s.Clock = realClock{}
	}
	if s.Intn == nil {
		s.Intn = rand.IntN
	}
	wait := s.Every
	if s.StartNow {
		wait = 0
	}
	for slot := 0; s.MaxRuns == 0 || slot < s.MaxRuns; slot++ {
		if wait > 0 {
			select {
			case <-ctx.Done():
				return nil
			case <-s.Clock.After(wait):
			}
		} else if ctx.Err() != nil {
			return nil
		}
		wait = s.Every
		rec := s.slot(ctx, slot)
		s.record(ctx, rec)
		if s.Metrics != nil {
			s.Metrics.Schedule.WithLabelValues(rec.Outcome).Inc()
		}
		ev := s.Log.Info()
		if rec.Outcome != OutcomeRan || !rec.Passed {
			ev = s.Log.Warn()
		}
		ev.Int("slot", slot).Str("experiment", rec.Experiment).Str("shard", rec.Shard).Str("outcome", rec.Outcome).
			Bool("passed", rec.Passed).Str("reason", rec.Reason).Str("report", rec.Report).Msg("chaos schedule slot done")
	}
	return nil
}

func (s *Scheduler) slot(ctx context.Context, slot int) Record {
	x := s.Experiments[slot%len(s.Experiments)]
	rec := Record{ID: events.NewID(), Slot: slot, Experiment: x.Title, File: x.File, Started: s.Clock.Now().UTC()}
	defer func() { rec.Ended = s.Clock.Now().UTC() }()
	open, err := s.Health.AnyOpenAlert(ctx)
	if err != nil {
		rec.Outcome, rec.Reason = OutcomeError, "cannot tell whether an incident is open: "+err.Error()
		return rec
	}
	if len(open) > 0 {
		sort.Strings(open)
		rec.Outcome, rec.Reason = OutcomeSkippedIncident, "a real incident is open on "+strings.Join(open, ", ")
		return rec
	}
	shard, why, err := s.pick(ctx)
	if err != nil {
		rec.Outcome, rec.Reason = OutcomeError, err.Error()
		return rec
	}
	if shard == "" {
		rec.Outcome, rec.Reason = OutcomeSkippedNoShard, "no healthy shard: "+why
		return rec
	}
	rec.Shard = shard
	rep := s.Runner.Run(ctx, x, runner.Options{RunID: rec.ID, Shard: shard})
	rec.Outcome = OutcomeRan
	rec.Passed, rec.Aborted = rep.Passed, rep.Aborted
	rec.Report = filepath.Join(rep.Dir, "report.html")
	switch {
	case rep.Error != "":
		rec.Reason = rep.Error
	case rep.Aborted:
		rec.Reason = rep.AbortReason
	case !rep.Passed:
		var broken []string
		for _, h := range rep.Hypotheses {
			if !h.Held {
				broken = append(broken, fmt.Sprintf("%s: expected %s, got %s", h.Name, h.Expected, h.Actual))
			}
		}
		rec.Reason = strings.Join(broken, "; ")
	}
	return rec
}

// pick chooses a random healthy, eligible shard ("" and the reasons when none is).
func (s *Scheduler) pick(ctx context.Context) (string, string, error) {
	m, err := topology.Store{KV: s.KV}.Load(ctx)
	if err != nil {
		return "", "", fmt.Errorf("reading the topology: %w", err)
	}
	var ok, why []string
	for _, sh := range m.Shards {
		if s.Eligible != nil && !s.Eligible(sh.ID) {
			why = append(why, sh.ID+": not allowed")
			continue
		}
		if err := s.Health.Check(ctx, sh.ID); err != nil {
			why = append(why, err.Error())
			continue
		}
		ok = append(ok, sh.ID)
	}
	if len(ok) == 0 {
		return "", strings.Join(why, "; "), nil
	}
	return ok[s.Intn(len(ok))], "", nil
}

func (s *Scheduler) record(ctx context.Context, rec Record) {
	b, _ := json.Marshal(rec)
	if s.KV != nil {
		if _, err := s.KV.Put(ctx, kv.Key(RunsPrefix, rec.ID), b); err != nil {
			s.Log.Warn().Err(err).Str("id", rec.ID).Msg("could not record the schedule slot in kv")
		}
	}
	if s.LogFile == "" {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := os.MkdirAll(filepath.Dir(s.LogFile), 0o755); err != nil {
		s.Log.Warn().Err(err).Msg("schedule log")
		return
	}
	f, err := os.OpenFile(s.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		s.Log.Warn().Err(err).Msg("schedule log")
		return
	}
	defer f.Close()
	_, _ = f.Write(append(b, '\n'))
}
