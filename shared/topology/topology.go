// Package topology is the shard map: which node is the primary of each shard, its
// replicas, and the shard's failover epoch. Lazarus maintains it in the kv store (under
// "topology.<shard>"); Ratequeue clients, agents and the chaos runner follow it. Queue
// keys map to shards by a stable hash, so a key stays on its shard for the life of the
// fleet.
//
// Epochs only go up. A shard's epoch is incremented by every failover, and every
// write to it is conditional on the revision read, so two workers can never both
// install a new primary for the same epoch.
package topology

import (
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"path/filepath"
	"sort"
	"time"

	"github.com/heartline/heartline/shared/events"
)

// Errors.
var (
	ErrUnknownShard = errors.New("unknown shard")
	ErrInvalid      = errors.New("invalid topology")
	ErrStaleEpoch   = errors.New("stale epoch")
	ErrEmpty        = errors.New("no topology")
)

// Shard is one shard's entry.
type Shard struct {
	ID string `json:"id"`
	// Index is the shard's fixed place in the hash space (0..n-1).
	Index int `json:"index"`
	// Epoch is the failover epoch: 1 for a new shard, +1 per failover.
	Epoch    uint64   `json:"epoch"`
	Primary  string   `json:"primary"`  // host:port
	Replicas []string `json:"replicas"` // host:port, in promotion priority order
	// Durability is what the shard does while no replica is in sync: DurabilityStrict
	// (refuse writes until one is) or DurabilityDegrade (acknowledge on the primary
	// alone, and say so). Empty: the fleet default (lazarus -durability).
	Durability string `json:"durability,omitempty"`
	// Degraded is set by lazarus under DurabilityDegrade while no replica is in sync:
	// the primary's min-replicas-to-write is 0 and clients acknowledge writes the
	// primary applied, with "replicated": false. A second failure in that window loses
	// those writes.
	Degraded      bool      `json:"degraded,omitempty"`
	DegradedSince time.Time `json:"degraded_since,omitzero"`
	// Provenance, for on-call: who wrote this entry and why.
	UpdatedAt     time.Time `json:"updated_at,omitzero"`
	UpdatedBy     string    `json:"updated_by,omitempty"`
	Reason        string    `json:"reason,omitempty"`
	FailoverID    string    `json:"failover_id,omitempty"`
	CorrelationID string    `json:"correlation_id,omitempty"`
}

// Durability policies.
const (
	DurabilityStrict  = "strict"
	DurabilityDegrade = "degrade"
)

// ValidDurability reports whether d is a policy ("" counts: the fleet default).
func ValidDurability(d string) bool {
	return d == "" || d == DurabilityStrict || d == DurabilityDegrade
}

// Policy is the shard's durability policy, or def when the entry has none.
func (s Shard) Policy(def string) string {
	if s.Durability != "" {
		return s.Durability
	}
	if def == "" {
		return DurabilityStrict
	}
	return def
}

// Nodes returns the primary followed by the replicas.
func (s Shard) Nodes() []string { return append([]string{s.Primary}, s.Replicas...) }

// Has reports whether addr is one of the shard's nodes.
func (s Shard) Has(addr string) bool {
	for _, n := range s.Nodes() {
		if n == addr {
			return true
		}
	}
	return false
}

// Map is the whole fleet, ordered by shard index.
type Map struct {
	Shards []Shard `json:"shards"`
}

// Validate reports every problem with the map.
func (m Map) Validate() error {
	var problems []string
	if len(m.Shards) == 0 {
		problems = append(problems, "no shards")
	}
	ids := map[string]bool{}
	idx := map[int]bool{}
	nodes := map[string]string{}
	for i, s := range m.Shards {
		name := fmt.Sprintf("shards[%d]", i)
		if !events.ValidShardID(s.ID) {
			problems = append(problems, fmt.Sprintf("%s: id %q: want 1-64 of A-Z a-z 0-9 _ -", name, s.ID))
		}
		if ids[s.ID] {
			problems = append(problems, fmt.Sprintf("%s: duplicate id %q", name, s.ID))
		}
		ids[s.ID] = true
		if s.Index < 0 || s.Index >= len(m.Shards) || idx[s.Index] {
			problems = append(problems, fmt.Sprintf("%s (%s): index %d: indexes must be 0..%d, each once", name, s.ID, s.Index, len(m.Shards)-1))
		}
		idx[s.Index] = true
		if s.Epoch == 0 {
			problems = append(problems, fmt.Sprintf("%s (%s): epoch must be at least 1", name, s.ID))
		}
		if s.Primary == "" {
			problems = append(problems, fmt.Sprintf("%s (%s): no primary", name, s.ID))
		}
		if !ValidDurability(s.Durability) {
			problems = append(problems, fmt.Sprintf("%s (%s): durability %q: want strict or degrade", name, s.ID, s.Durability))
		}
		for _, n := range s.Nodes() {
			if n == "" {
				continue
			}
			if other, dup := nodes[n]; dup {
				problems = append(problems, fmt.Sprintf("%s (%s): node %s is also in shard %s", name, s.ID, n, other))
			}
			nodes[n] = s.ID
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %v", ErrInvalid, problems)
	}
	return nil
}

// Sort orders the shards by index.
func (m *Map) Sort() {
	sort.Slice(m.Shards, func(i, j int) bool { return m.Shards[i].Index < m.Shards[j].Index })
}

// Shard returns the shard with the given id.
func (m Map) Shard(id string) (Shard, error) {
	for _, s := range m.Shards {
		if s.ID == id {
			return s, nil
		}
	}
	return Shard{}, fmt.Errorf("%w: %q", ErrUnknownShard, id)
}

// ShardFor returns the shard that holds queueKey.
func (m Map) ShardFor(queueKey string) (Shard, error) {
	if len(m.Shards) == 0 {
		return Shard{}, ErrEmpty
	}
	i := Index(queueKey, len(m.Shards))
	for _, s := range m.Shards {
		if s.Index == i {
			return s, nil
		}
	}
	return Shard{}, fmt.Errorf("%w: no shard has index %d", ErrInvalid, i)
}

// ShardOfNode returns the shard that has addr as one of its nodes.
func (m Map) ShardOfNode(addr string) (Shard, bool) {
	for _, s := range m.Shards {
		if s.Has(addr) {
			return s, true
		}
	}
	return Shard{}, false
}

// Index maps a queue key to a shard index in [0, n) with Lamping and Veach's jump
// consistent hash over FNV-1a: stable for a given n, and moving only 1/n of the keys
// if a shard is ever added.
func Index(key string, n int) int {
	if n <= 1 {
		return 0
	}
	h := fnv.New64a()
	h.Write([]byte(key))
	k := h.Sum64()
	var b, j int64 = -1, 0
	for j < int64(n) {
		b = j
		k = k*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((k>>33)+1)))
	}
	return int(b)
}

// LoadFile reads a map from a JSON file (the seed file, or the local fallback copy).
func LoadFile(path string) (Map, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Map{}, fmt.Errorf("topology file: %w", err)
	}
	var m Map
	if err := json.Unmarshal(b, &m); err != nil {
		return Map{}, fmt.Errorf("%w: %s: %v", ErrInvalid, path, err)
	}
	m.Sort()
	if err := m.Validate(); err != nil {
		return Map{}, fmt.Errorf("%s: %w", path, err)
	}
	return m, nil
}

// WriteFile writes m to path atomically.
func WriteFile(path string, m Map) error {
	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, b, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
