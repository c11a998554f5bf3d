package alerter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/heartline/heartline/services/alerter/detector"
	"github.com/heartline/heartline/shared/kv"
)

// Key prefixes in the kv store.
const (
	incidentPrefix = "alerter.incident"
	ownerPrefix    = "alerter.owner"
)

func incidentKey(shard string) string { return kv.Key(incidentPrefix, shard) }
func ownerKey(shard string) string    { return kv.Key(ownerPrefix, shard) }

// record is the value of alerter.incident.<shard>: the shard's persisted detector state
// and the alert events decided but not yet known to be published.
type record struct {
	Shard string `json:"shard"`
	detector.Persisted
	// Pending holds encoded alert events to publish (again) before anything else is
	// decided for the shard. Their ids are fixed, so publishing twice is harmless.
	Pending   []json.RawMessage `json:"pending,omitempty"`
	UpdatedBy string            `json:"updated_by"`
	UpdatedAt time.Time         `json:"updated_at"`
}

// owner is the value of alerter.owner.<shard>.
type owner struct {
	Instance  string    `json:"instance"`
	ClaimedAt time.Time `json:"claimed_at"`
}

// getRecord reads a shard's record; a missing one is the zero record at revision 0.
func (s *Service) getRecord(ctx context.Context, shard string) (record, uint64, error) {
	e, err := s.kv.Get(ctx, incidentKey(shard))
	if errors.Is(err, kv.ErrNotFound) {
		return record{Shard: shard}, 0, nil
	}
	if err != nil {
		s.m.kvErrors.WithLabelValues("get").Inc()
		return record{}, 0, fmt.Errorf("reading the incident record of shard %s: %w", shard, err)
	}
	r, err := decodeRecord(e.Value)
	if err != nil {
		return record{}, 0, fmt.Errorf("%s: %w", e.Key, err)
	}
	return r, e.Revision, nil
}

func decodeRecord(b []byte) (record, error) {
	var r record
	if err := json.Unmarshal(b, &r); err != nil {
		return record{}, fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	return r, nil
}

// putRecord writes a shard's record conditionally on rev (0: it must not exist yet).
func (s *Service) putRecord(ctx context.Context, r record, rev uint64) (uint64, error) {
	r.UpdatedBy, r.UpdatedAt = s.instance, s.now().UTC()
	b, err := json.Marshal(r)
	if err != nil {
		return 0, fmt.Errorf("encoding the incident record of shard %s: %w", r.Shard, err)
	}
	if rev == 0 {
		rev, err = s.kv.Create(ctx, incidentKey(r.Shard), b)
	} else {
		rev, err = s.kv.Update(ctx, incidentKey(r.Shard), b, rev)
	}
	if err != nil && !errors.Is(err, kv.ErrConflict) && !errors.Is(err, kv.ErrExists) {
		s.m.kvErrors.WithLabelValues("write").Inc()
	}
	return rev, err
}

// claim records this instance as the one handling the shard.
func (s *Service) claim(ctx context.Context, shard string) error {
	b, _ := json.Marshal(owner{Instance: s.instance, ClaimedAt: s.now().UTC()})
	if _, err := s.kv.Put(ctx, ownerKey(shard), b); err != nil {
		s.m.kvErrors.WithLabelValues("claim").Inc()
		return fmt.Errorf("claiming shard %s: %w", shard, err)
	}
	return nil
}

// owns reports whether this instance may take timer decisions for a shard it last heard
// from at lastHeard: it does when no other instance claimed the shard after that.
func (s *Service) owns(ctx context.Context, shard string, lastHeard time.Time) (bool, error) {
	e, err := s.kv.Get(ctx, ownerKey(shard))
	if errors.Is(err, kv.ErrNotFound) {
		return true, s.claim(ctx, shard)
	}
	if err != nil {
		s.m.kvErrors.WithLabelValues("get").Inc()
		return false, fmt.Errorf("reading the owner of shard %s: %w", shard, err)
	}
	var o owner
	if err := json.Unmarshal(e.Value, &o); err != nil {
		return true, s.claim(ctx, shard) // unreadable: ours to repair
	}
	if o.Instance == s.instance {
		return true, nil
	}
	if o.ClaimedAt.Before(lastHeard) {
		// We heard from the shard after the other instance claimed it: it came back to us.
		return true, s.claim(ctx, shard)
	}
	return false, nil
}
