package topology

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/heartline/heartline/shared/kv"
)

// KeyPrefix is where shard entries live in the kv store.
const KeyPrefix = "topology"

// Key is the kv key of a shard's entry.
func Key(shardID string) string { return kv.Key(KeyPrefix, shardID) }

// Store reads and writes the topology in a kv store.
type Store struct{ KV kv.Store }

// Load returns the whole map (ErrEmpty when no shard is stored).
func (s Store) Load(ctx context.Context) (Map, error) {
	entries, err := s.KV.List(ctx, KeyPrefix)
	if err != nil {
		return Map{}, err
	}
	var m Map
	for _, e := range entries {
		sh, err := decodeShard(e)
		if err != nil {
			return Map{}, err
		}
		m.Shards = append(m.Shards, sh)
	}
	if len(m.Shards) == 0 {
		return Map{}, ErrEmpty
	}
	m.Sort()
	return m, nil
}

// Get returns a shard's entry and its revision, for a conditional update.
func (s Store) Get(ctx context.Context, id string) (Shard, uint64, error) {
	e, err := s.KV.Get(ctx, Key(id))
	if errors.Is(err, kv.ErrNotFound) {
		return Shard{}, 0, fmt.Errorf("%w: %q", ErrUnknownShard, id)
	}
	if err != nil {
		return Shard{}, 0, err
	}
	sh, err := decodeShard(e)
	return sh, e.Revision, err
}

// Seed stores every shard of m that is not stored yet and leaves existing ones alone
// (their epochs may have moved on). It returns the ids it created.
func (s Store) Seed(ctx context.Context, m Map) ([]string, error) {
	if err := m.Validate(); err != nil {
		return nil, err
	}
	var created []string
	for _, sh := range m.Shards {
		b, _ := json.Marshal(sh)
		_, err := s.KV.Create(ctx, Key(sh.ID), b)
		if errors.Is(err, kv.ErrExists) {
			continue
		}
		if err != nil {
			return created, err
		}
		created = append(created, sh.ID)
	}
	return created, nil
}

// Advance replaces shard cur (read at revision rev) with next. next.Epoch must be above
// cur.Epoch; the write fails with kv.ErrConflict if anyone wrote the shard since rev.
func (s Store) Advance(ctx context.Context, cur Shard, rev uint64, next Shard) (uint64, error) {
	if next.ID != cur.ID || next.Index != cur.Index {
		return 0, fmt.Errorf("%w: a shard's id and index never change", ErrInvalid)
	}
	if next.Epoch <= cur.Epoch {
		return 0, fmt.Errorf("%w: new epoch %d is not above %d", ErrStaleEpoch, next.Epoch, cur.Epoch)
	}
	if next.UpdatedAt.IsZero() {
		next.UpdatedAt = time.Now().UTC()
	}
	b, _ := json.Marshal(next)
	return s.KV.Update(ctx, Key(cur.ID), b, rev)
}

// Annotate replaces shard cur (read at revision rev) with next when only annotations
// differ (Degraded, DegradedSince, Durability and the provenance fields): the epoch,
// the primary and the replicas must stay, so no client's route changes. The write fails
// with kv.ErrConflict if anyone wrote the shard since rev.
func (s Store) Annotate(ctx context.Context, cur Shard, rev uint64, next Shard) (uint64, error) {
	if next.ID != cur.ID || next.Index != cur.Index || next.Epoch != cur.Epoch || next.Primary != cur.Primary ||
		strings.Join(next.Replicas, ",") != strings.Join(cur.Replicas, ",") {
		return 0, fmt.Errorf("%w: an annotation never changes a shard's id, index, epoch, primary or replicas", ErrInvalid)
	}
	if !ValidDurability(next.Durability) {
		return 0, fmt.Errorf("%w: durability %q: want strict or degrade", ErrInvalid, next.Durability)
	}
	if next.UpdatedAt.IsZero() {
		next.UpdatedAt = time.Now().UTC()
	}
	b, _ := json.Marshal(next)
	return s.KV.Update(ctx, Key(cur.ID), b, rev)
}

// Put writes a shard unconditionally; for repairs by an operator only.
func (s Store) Put(ctx context.Context, sh Shard) error {
	b, _ := json.Marshal(sh)
	_, err := s.KV.Put(ctx, Key(sh.ID), b)
	return err
}

func decodeShard(e kv.Entry) (Shard, error) {
	var sh Shard
	if err := json.Unmarshal(e.Value, &sh); err != nil {
		return Shard{}, fmt.Errorf("%w: %s: %v", ErrInvalid, e.Key, err)
	}
	if want := strings.TrimPrefix(e.Key, KeyPrefix+"."); sh.ID != want {
		return Shard{}, fmt.Errorf("%w: %s holds shard %q", ErrInvalid, e.Key, sh.ID)
	}
	return sh, nil
}
