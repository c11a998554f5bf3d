package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"time"

	"github.com/heartline/heartline/services/lazarus/internal/decide"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
)

// Step names, in the order a failover runs them.
const (
	StepDecided       = "decided"
	StepFence         = "fence_old_primary"
	StepPauseWrites   = "pause_writes" // switchover only
	StepCatchUp       = "catch_up"     // switchover only
	StepPromote       = "promote"
	StepStampEpoch    = "stamp_epoch"
	StepRepoint       = "repoint_replicas"
	StepRoute         = "route"
	StepUnpauseWrites = "unpause_writes" // switchover only
	StepVerify        = "verify"
)

// FailoverSteps is the sequence of an unplanned failover.
var FailoverSteps = []string{StepDecided, StepFence, StepPromote, StepStampEpoch, StepRepoint, StepRoute, StepVerify}

// SwitchoverSteps is the sequence of a planned switchover.
var SwitchoverSteps = []string{StepDecided, StepPauseWrites, StepCatchUp, StepPromote, StepStampEpoch, StepRoute, StepRepoint, StepUnpauseWrites, StepVerify}

// Record states.
const (
	StateRunning    = "running"
	StateCompleted  = "completed"
	StateAborted    = "aborted"
	StateRolledBack = "rolled_back"
)

// Step statuses.
const (
	StatusStarted  = "started"
	StatusDone     = "done"
	StatusSkipped  = "skipped"
	StatusFailed   = "failed"
	StatusDegraded = "degraded"
)

// StepRecord is one step of a failover as recorded before and after it ran.
type StepRecord struct {
	Name    string    `json:"name"`
	Status  string    `json:"status"`
	Detail  string    `json:"detail,omitempty"`
	Error   string    `json:"error,omitempty"`
	Started time.Time `json:"started"`
	Ended   time.Time `json:"ended,omitzero"`
	Worker  string    `json:"worker,omitempty"`
}

// Record is a failover as kept in kv under lazarus.failover.<shard>.<id>: the crash
// safety of lazarus. Every step is written before and after it runs, with a
// conditional write, so the next lease holder knows exactly where a dead worker
// stopped.
type Record struct {
	ID            string        `json:"id"`
	Shard         string        `json:"shard"`
	IncidentID    string        `json:"incident_id,omitempty"`
	CorrelationID string        `json:"correlation_id"`
	AlertCode     string        `json:"alert_code,omitempty"`
	Reason        decide.Reason `json:"reason"`
	Detail        string        `json:"detail,omitempty"`
	Planned       bool          `json:"planned,omitempty"`
	State         string        `json:"state"`
	// Outcome of a finished failover: the final reason (ROLLED_BACK, STEP_FAILED...).
	Outcome    string `json:"outcome,omitempty"`
	FromEpoch  uint64 `json:"from_epoch"`
	ToEpoch    uint64 `json:"to_epoch"`
	OldPrimary string `json:"old_primary"`
	NewPrimary string `json:"new_primary"`
	// Others are the shard's other replicas, to repoint, in priority order.
	Others []string `json:"others"`
	// TopologyRevision is the revision of the shard's topology entry read at decision
	// time: routing is conditional on it.
	TopologyRevision uint64 `json:"topology_revision"`
	ShardIndex       int    `json:"shard_index"`
	LossWindow       int64  `json:"loss_window_bytes"`
	Bound            int64  `json:"acked_bound"`
	// FenceSaved is the old primary's min-replicas-to-write before it was fenced.
	FenceSaved *int `json:"fence_saved,omitempty"`
	// PromotedOffset is the candidate's offset when it was promoted.
	PromotedOffset int64         `json:"promoted_offset"`
	Verified       bool          `json:"verified"`
	Degraded       string        `json:"degraded,omitempty"`
	Phases         events.Phases `json:"phases"`
	Steps          []StepRecord  `json:"steps"`
	Worker         string        `json:"worker"`
	Created        time.Time     `json:"created"`
	Finished       time.Time     `json:"finished,omitzero"`
	// CooldownLifted is set by `lazarus resume --shard`: the shard's cooldown after
	// this failover no longer holds.
	CooldownLifted bool `json:"cooldown_lifted,omitempty"`

	rev uint64
	// oldDown is why the old primary was unreachable at decision time (not stored: a
	// worker that resumes the record checks again). It spares a hung primary a second
	// check timeout before promotion and routing.
	oldDown string
}

// Unfinished reports whether the record needs to be finished or rolled back.
func (r *Record) Unfinished() bool { return r.State == StateRunning }

// Revision is the kv revision the record was read at.
func (r *Record) Revision() uint64 { return r.rev }

// Step returns the record of a step, or nil.
func (r *Record) Step(name string) *StepRecord {
	for i := range r.Steps {
		if r.Steps[i].Name == name {
			return &r.Steps[i]
		}
	}
	return nil
}

// Finished reports whether a step completed (done, skipped or degraded).
func (r *Record) finished(name string) bool {
	s := r.Step(name)
	return s != nil && (s.Status == StatusDone || s.Status == StatusSkipped || s.Status == StatusDegraded)
}

func (r *Record) started(name string) bool { return r.Step(name) != nil }

func (r *Record) steps() []string {
	if r.Planned {
		return SwitchoverSteps
	}
	return FailoverSteps
}

// RecordKey is the kv key of a failover record.
func RecordKey(shard, id string) string { return kv.Key("lazarus", "failover", shard, id) }

// Records reads and writes failover records.
type Records struct{ KV kv.Store }

// Create stores a new record.
func (s Records) Create(ctx context.Context, r *Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	rev, err := s.KV.Create(ctx, RecordKey(r.Shard, r.ID), b)
	if err != nil {
		return fmt.Errorf("creating failover record %s: %w", r.ID, err)
	}
	r.rev = rev
	return nil
}

// Save writes r conditionally on the revision it was read or last written at.
func (s Records) Save(ctx context.Context, r *Record) error {
	b, err := json.Marshal(r)
	if err != nil {
		return err
	}
	rev, err := s.KV.Update(ctx, RecordKey(r.Shard, r.ID), b, r.rev)
	if errors.Is(err, kv.ErrConflict) {
		return fmt.Errorf("%w: failover record %s changed under this worker", ErrRecordTaken, r.ID)
	}
	if err != nil {
		return fmt.Errorf("saving failover record %s: %w", r.ID, err)
	}
	r.rev = rev
	return nil
}

// List returns the records of one shard ("" for all shards), oldest first.
func (s Records) List(ctx context.Context, shard string) ([]*Record, error) {
	prefix := kv.Key("lazarus", "failover")
	if shard != "" {
		prefix = kv.Key(prefix, shard)
	}
	entries, err := s.KV.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]*Record, 0, len(entries))
	for _, e := range entries {
		var r Record
		if err := json.Unmarshal(e.Value, &r); err != nil || r.ID == "" {
			continue // not a record this build can read; leave it for an operator
		}
		r.rev = e.Revision
		out = append(out, &r)
	}
	sort.SliceStable(out, func(i, j int) bool {
		if !out[i].Created.Equal(out[j].Created) {
			return out[i].Created.Before(out[j].Created)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// Prune deletes finished records of a shard beyond the newest keep.
func (s Records) Prune(ctx context.Context, shard string, keep int) error {
	recs, err := s.List(ctx, shard)
	if err != nil {
		return err
	}
	var done []*Record
	for _, r := range recs {
		if !r.Unfinished() {
			done = append(done, r)
		}
	}
	for i := 0; i < len(done)-keep; i++ {
		if err := s.KV.Delete(ctx, RecordKey(shard, done[i].ID), done[i].rev); err != nil && !errors.Is(err, kv.ErrConflict) {
			return err
		}
	}
	return nil
}

// LiftCooldown marks the shard's newest completed failover so that its cooldown no
// longer holds. It reports whether a record was changed.
func (s Records) LiftCooldown(ctx context.Context, shard string) (bool, error) {
	recs, err := s.List(ctx, shard)
	if err != nil {
		return false, err
	}
	for i := len(recs) - 1; i >= 0; i-- {
		r := recs[i]
		if r.State != StateCompleted {
			continue
		}
		if r.CooldownLifted {
			return false, nil
		}
		r.CooldownLifted = true
		return true, s.Save(ctx, r)
	}
	return false, nil
}
