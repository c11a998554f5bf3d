package worker

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/heartline/heartline/services/lazarus/internal/decide"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
)

// PauseAll is the shard argument of the fleet-wide pause.
const PauseAll = ""

// PauseKey is the kv key of a shard's pause flag (lazarus.pause.all for PauseAll).
func PauseKey(shard string) string {
	if shard == PauseAll {
		return kv.Key("lazarus", "pause", "all")
	}
	return kv.Key("lazarus", "pause", shard)
}

// HoldKey is the kv key of a shard's current hold, kept for `lazarus status`.
func HoldKey(shard string) string { return kv.Key("lazarus", "hold", shard) }

// LeaseKey is the kv key of a shard's worker lease.
func LeaseKey(shard string) string { return kv.Key("lazarus", "lease", shard) }

// PauseFlag is what a pause key holds.
type PauseFlag struct {
	By     string    `json:"by"`
	At     time.Time `json:"at"`
	Reason string    `json:"reason,omitempty"`
}

// HoldRecord is what a hold key holds.
type HoldRecord struct {
	Reason     decide.Reason `json:"reason"`
	Detail     string        `json:"detail"`
	Override   string        `json:"override"`
	Since      time.Time     `json:"since"`
	IncidentID string        `json:"incident_id,omitempty"`
	Worker     string        `json:"worker,omitempty"`
}

// Control reads and writes the operator flags.
type Control struct{ KV kv.Store }

// Pause sets the pause flag of shard (PauseAll: the fleet).
func (c Control) Pause(ctx context.Context, shard, by, reason string, now time.Time) error {
	if shard != PauseAll && !events.ValidShardID(shard) {
		return fmt.Errorf("%w: %q", ErrBadShard, shard)
	}
	b, _ := json.Marshal(PauseFlag{By: by, At: now.UTC(), Reason: reason})
	_, err := c.KV.Put(ctx, PauseKey(shard), b)
	return err
}

// Resume clears the pause flag of shard (PauseAll: the fleet flag only).
func (c Control) Resume(ctx context.Context, shard string) error {
	if shard != PauseAll && !events.ValidShardID(shard) {
		return fmt.Errorf("%w: %q", ErrBadShard, shard)
	}
	return c.KV.Delete(ctx, PauseKey(shard), 0)
}

// Paused returns the pause in force for shard, shard flag first, or nil.
func (c Control) Paused(ctx context.Context, shard string) (*decide.Pause, error) {
	for _, k := range []string{PauseKey(shard), PauseKey(PauseAll)} {
		e, err := c.KV.Get(ctx, k)
		if errors.Is(err, kv.ErrNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		var f PauseFlag
		_ = json.Unmarshal(e.Value, &f) // an unreadable flag still pauses
		return &decide.Pause{All: k == PauseKey(PauseAll), By: f.By, At: f.At, Reason: f.Reason}, nil
	}
	return nil, nil
}

// SetHold records the shard's current hold; ClearHold removes it.
func (c Control) SetHold(ctx context.Context, shard string, h HoldRecord) error {
	b, _ := json.Marshal(h)
	_, err := c.KV.Put(ctx, HoldKey(shard), b)
	return err
}

// ClearHold removes the shard's hold record.
func (c Control) ClearHold(ctx context.Context, shard string) error {
	return c.KV.Delete(ctx, HoldKey(shard), 0)
}

// Hold returns the shard's hold record, or nil.
func (c Control) Hold(ctx context.Context, shard string) (*HoldRecord, error) {
	return readRecord[HoldRecord](ctx, c.KV, HoldKey(shard), "hold record of "+shard)
}

// readRecord reads the JSON record at key: nil when there is none.
func readRecord[T any](ctx context.Context, s kv.Store, key, what string) (*T, error) {
	e, err := s.Get(ctx, key)
	if errors.Is(err, kv.ErrNotFound) {
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	var v T
	if err := json.Unmarshal(e.Value, &v); err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return &v, nil
}

// NoReplicaKey is the kv key of a shard's standing NO_REPLICA condition.
func NoReplicaKey(shard string) string { return kv.Key("lazarus", "noreplica", shard) }

// NoReplicaRecord is the standing condition of a shard whose primary is fine and has
// no replica in sync: kept until a replica (or a spare) is in sync again, whatever
// became of the failover alert that led there.
type NoReplicaRecord struct {
	Since time.Time `json:"since"`
	// Decision is the last spare decision (NO_REPLICA_GRACE, NO_SPARE, ATTACH_SPARE,
	// REPLICA_RECOVERING) and Detail its explanation.
	Decision string    `json:"decision"`
	Detail   string    `json:"detail"`
	Updated  time.Time `json:"updated"`
	Worker   string    `json:"worker,omitempty"`
}

// SetNoReplica records the condition; ClearNoReplica removes it.
func (c Control) SetNoReplica(ctx context.Context, shard string, r NoReplicaRecord) error {
	b, _ := json.Marshal(r)
	_, err := c.KV.Put(ctx, NoReplicaKey(shard), b)
	return err
}

// ClearNoReplica removes the shard's NO_REPLICA record (absent is fine).
func (c Control) ClearNoReplica(ctx context.Context, shard string) error {
	err := c.KV.Delete(ctx, NoReplicaKey(shard), 0)
	if errors.Is(err, kv.ErrNotFound) {
		return nil
	}
	return err
}

// NoReplica returns the shard's NO_REPLICA record, or nil.
func (c Control) NoReplica(ctx context.Context, shard string) (*NoReplicaRecord, error) {
	return readRecord[NoReplicaRecord](ctx, c.KV, NoReplicaKey(shard), "no-replica record of "+shard)
}
