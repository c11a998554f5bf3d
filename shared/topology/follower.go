package topology

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/kv"
)

// FollowerConfig configures Follow.
type FollowerConfig struct {
	// Store is the shared topology store (nil: the file only).
	Store kv.Store
	// File is the local fallback copy: read at start when the store is unreachable or
	// empty, and rewritten whenever the map changes. Empty: no file.
	File string
	// Poll is the polling interval for stores that do not push changes (default 200 ms).
	Poll time.Duration
	Log  zerolog.Logger
}

// Follower keeps an up-to-date copy of the map. A shard's entry only ever moves to a
// higher epoch: a delayed or replayed older entry is ignored.
type Follower struct {
	cfg     FollowerConfig
	mu      sync.RWMutex
	m       Map
	changed chan struct{} // closed and replaced on every change
	source  string
}

// Follow loads the map (from the store, else the file) and keeps following the store
// until ctx is done. It fails only when neither source has a valid map.
func Follow(ctx context.Context, cfg FollowerConfig) (*Follower, error) {
	if cfg.Poll <= 0 {
		cfg.Poll = 200 * time.Millisecond
	}
	f := &Follower{cfg: cfg, changed: make(chan struct{})}
	var storeErr error
	if cfg.Store != nil {
		m, err := Store{KV: cfg.Store}.Load(ctx)
		if err == nil {
			f.m, f.source = m, "store"
		}
		storeErr = err
	}
	if f.source == "" && cfg.File != "" {
		m, err := LoadFile(cfg.File)
		if err != nil {
			return nil, fmt.Errorf("no topology: store: %v; file: %w", storeErr, err)
		}
		f.m, f.source = m, "file"
		if storeErr != nil {
			cfg.Log.Warn().Err(storeErr).Str("file", cfg.File).Msg("topology store unavailable; using the local copy until it returns")
		}
	}
	if f.source == "" {
		if storeErr == nil {
			storeErr = ErrEmpty
		}
		return nil, fmt.Errorf("no topology: %w", storeErr)
	}
	if cfg.Store != nil {
		go f.follow(ctx)
	}
	return f, nil
}

// Static returns a follower that serves m and never changes (tests, tools).
func Static(m Map) *Follower {
	m.Sort()
	return &Follower{m: m, changed: make(chan struct{}), source: "static"}
}

// Map returns the current map. Callers must not modify it.
func (f *Follower) Map() Map {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.m
}

// Shard returns a shard's current entry.
func (f *Follower) Shard(id string) (Shard, error) { return f.Map().Shard(id) }

// ShardOfNode returns the shard that has addr as a node (false: none, such as a spare).
func (f *Follower) ShardOfNode(addr string) (Shard, bool) { return f.Map().ShardOfNode(addr) }

// Changed returns a channel that is closed at the next change of the map.
func (f *Follower) Changed() <-chan struct{} {
	f.mu.RLock()
	defer f.mu.RUnlock()
	return f.changed
}

// Apply installs sh if its epoch is at least the known one (an equal epoch may carry
// corrected nodes, or a changed durability state: degraded or not). It reports
// whether the map changed. Followers call it for every
// watched entry; tests and tools may call it directly.
func (f *Follower) Apply(sh Shard) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	shards := append([]Shard(nil), f.m.Shards...)
	found := false
	for i, cur := range shards {
		if cur.ID != sh.ID {
			continue
		}
		found = true
		if sh.Epoch < cur.Epoch || (sh.Epoch == cur.Epoch && sh.Primary == cur.Primary && equal(sh.Replicas, cur.Replicas) &&
			sh.Degraded == cur.Degraded && sh.Durability == cur.Durability) {
			return false
		}
		shards[i] = sh
	}
	if !found {
		shards = append(shards, sh)
	}
	m := Map{Shards: shards}
	m.Sort()
	f.m = m
	close(f.changed)
	f.changed = make(chan struct{})
	if f.cfg.File != "" {
		if err := WriteFile(f.cfg.File, m); err != nil {
			f.cfg.Log.Warn().Err(err).Str("file", f.cfg.File).Msg("topology fallback file not updated")
		}
	}
	return true
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Refresh reloads every shard from the store now (for example after a node answered
// with a newer epoch than ours).
func (f *Follower) Refresh(ctx context.Context) error {
	if f.cfg.Store == nil {
		return errors.New("topology: no store to refresh from")
	}
	m, err := Store{KV: f.cfg.Store}.Load(ctx)
	if err != nil {
		return err
	}
	for _, sh := range m.Shards {
		f.Apply(sh)
	}
	return nil
}

func (f *Follower) follow(ctx context.Context) {
	for ctx.Err() == nil {
		ch, err := kv.Watch(ctx, f.cfg.Store, KeyPrefix, f.cfg.Poll)
		if err != nil {
			f.cfg.Log.Warn().Err(err).Msg("topology watch failed; retrying")
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
			continue
		}
		for e := range ch {
			if e.Value == nil {
				continue // a deleted shard entry is an operator's repair; keep the last one
			}
			sh, err := decodeShard(e)
			if err != nil {
				f.cfg.Log.Error().Err(err).Msg("ignoring a bad topology entry")
				continue
			}
			if f.Apply(sh) {
				f.cfg.Log.Info().Str("shard", sh.ID).Uint64("epoch", sh.Epoch).Str("primary", sh.Primary).Msg("topology changed")
			}
		}
	}
}
