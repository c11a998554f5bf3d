// Package kv is Heartline's small key-value port for coordination state: the topology
// (shard map with failover epochs), leases, stream checkpoints, failover records and
// pause flags. Every write can be conditional on the revision last read, so two
// processes never overwrite each other's decision unseen.
//
// Backends: NATS JetStream KV (natskv) for the NATS profile, DynamoDB (dynamokv) for the
// AWS profile, a JSON file (filekv) for a local fallback, and memory (memkv) for unit
// tests. kvtest.Run proves they behave alike.
//
// Keys are dot-separated tokens of [A-Za-z0-9_=-], such as "topology.shard-1" or
// "lease.lazarus.shard-1"; List and Watch take a prefix of whole tokens.
package kv

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
)

// Errors every backend reports the same way.
var (
	ErrNotFound = errors.New("kv: key not found")
	ErrExists   = errors.New("kv: key already exists")
	// ErrConflict: the key's revision is not the one the write was conditional on.
	ErrConflict   = errors.New("kv: revision conflict")
	ErrInvalidKey = errors.New("kv: invalid key")
)

// Entry is a key's value at a revision. Revisions increase with every write of a key;
// a deleted key reads as ErrNotFound.
type Entry struct {
	Key      string
	Value    []byte
	Revision uint64
}

// Store is the key-value port.
type Store interface {
	// Get returns the current entry or ErrNotFound.
	Get(ctx context.Context, key string) (Entry, error)
	// Create writes key only if it does not exist (ErrExists otherwise).
	Create(ctx context.Context, key string, value []byte) (uint64, error)
	// Update writes key only if its revision is still rev (ErrConflict otherwise,
	// including when the key was deleted).
	Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error)
	// Put writes key unconditionally.
	Put(ctx context.Context, key string, value []byte) (uint64, error)
	// Delete removes key if its revision is rev (rev 0: whatever it is). Deleting a
	// missing key unconditionally is not an error.
	Delete(ctx context.Context, key string, rev uint64) error
	// List returns the entries under prefix (whole tokens; "" for all), sorted by key.
	List(ctx context.Context, prefix string) ([]Entry, error)
}

// Watcher is implemented by stores that push changes. Watch sends the current entries
// under prefix, then every change (a deleted key as an Entry with nil Value), until ctx
// is done.
type Watcher interface {
	Watch(ctx context.Context, prefix string) (<-chan Entry, error)
}

// ValidKey reports whether key is a valid key.
func ValidKey(key string) error {
	if key == "" || len(key) > 512 {
		return fmt.Errorf("%w: %q: want 1-512 bytes", ErrInvalidKey, key)
	}
	for _, tok := range strings.Split(key, ".") {
		if tok == "" {
			return fmt.Errorf("%w: %q: empty token", ErrInvalidKey, key)
		}
		for _, c := range tok {
			if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '=') {
				return fmt.Errorf("%w: %q: character %q not allowed", ErrInvalidKey, key, c)
			}
		}
	}
	return nil
}

// Key joins tokens into a key.
func Key(tokens ...string) string { return strings.Join(tokens, ".") }

// HasPrefix reports whether key lies under prefix (whole tokens).
func HasPrefix(key, prefix string) bool {
	return prefix == "" || key == prefix || strings.HasPrefix(key, prefix+".")
}

// Watch follows the entries under prefix: it uses the store's own Watch when it has one
// and polls List every interval otherwise. The channel closes when ctx is done.
func Watch(ctx context.Context, s Store, prefix string, interval time.Duration) (<-chan Entry, error) {
	if w, ok := s.(Watcher); ok {
		return w.Watch(ctx, prefix)
	}
	first, err := s.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	ch := make(chan Entry, 64)
	go func() {
		defer close(ch)
		seen := map[string]uint64{}
		send := func(e Entry) bool {
			select {
			case ch <- e:
				return true
			case <-ctx.Done():
				return false
			}
		}
		diff := func(entries []Entry) bool {
			now := map[string]bool{}
			for _, e := range entries {
				now[e.Key] = true
				if seen[e.Key] != e.Revision {
					seen[e.Key] = e.Revision
					if !send(e) {
						return false
					}
				}
			}
			var gone []string
			for k := range seen {
				if !now[k] {
					gone = append(gone, k)
				}
			}
			sort.Strings(gone)
			for _, k := range gone {
				delete(seen, k)
				if !send(Entry{Key: k}) {
					return false
				}
			}
			return true
		}
		if !diff(first) {
			return
		}
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				entries, err := s.List(ctx, prefix)
				if err != nil {
					continue // the store is unreachable for now; keep the last view
				}
				if !diff(entries) {
					return
				}
			}
		}
	}()
	return ch, nil
}
