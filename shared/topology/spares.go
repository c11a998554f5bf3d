package topology

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sort"
	"strconv"
	"time"

	"github.com/heartline/heartline/shared/kv"
)

// SparesKey is where the fleet's spare pool lives in the kv store (outside
// KeyPrefix, so Load never reads it as a shard).
const SparesKey = "spares"

// Spare is one Redis node held in reserve. Lazarus attaches a spare to a shard left
// without an in-sync replica (REPLICAOF its primary, wait for the sync, record it in
// the shard under a new epoch). A node replaced that way joins the pool with From set
// to its old shard, so that when it comes back it is checked (wipe-safe) and reused,
// never routed to as a primary.
type Spare struct {
	Addr string `json:"addr"`
	// Zone optionally labels where the node runs (lazarus prefers a spare of the
	// shard primary's zone when the shard entry says one; today: informational).
	Zone string `json:"zone,omitempty"`
	// From is the shard the node was replaced in ("" for a node an operator added).
	From    string    `json:"from,omitempty"`
	Added   time.Time `json:"added,omitzero"`
	AddedBy string    `json:"added_by,omitempty"`
	// Claimed is the shard a lazarus worker is attaching the spare to ("" when free).
	Claimed   string    `json:"claimed,omitempty"`
	ClaimedAt time.Time `json:"claimed_at,omitzero"`
}

// Pool is the spare pool.
type Pool struct {
	Spares    []Spare   `json:"spares"`
	UpdatedAt time.Time `json:"updated_at,omitzero"`
}

// Errors of the pool.
var (
	// ErrSpareExists: the node is already in the pool.
	ErrSpareExists = errors.New("node is already a spare")
	// ErrNotSpare: the node is not in the pool.
	ErrNotSpare = errors.New("node is not in the spare pool")
)

// Index returns the position of addr in the pool, or -1.
func (p Pool) Index(addr string) int {
	for i, s := range p.Spares {
		if s.Addr == addr {
			return i
		}
	}
	return -1
}

// Remove drops addr from the pool (ErrNotSpare when absent).
func (p *Pool) Remove(addr string) error {
	i := p.Index(addr)
	if i < 0 {
		return fmt.Errorf("%w: %s", ErrNotSpare, addr)
	}
	p.Spares = append(p.Spares[:i], p.Spares[i+1:]...)
	return nil
}

// Add puts s in the pool (ErrSpareExists when its address is there already).
func (p *Pool) Add(s Spare) error {
	if err := CheckAddr(s.Addr); err != nil {
		return fmt.Errorf("%w: spare %q: %v", ErrInvalid, s.Addr, err)
	}
	if p.Index(s.Addr) >= 0 {
		return fmt.Errorf("%w: %s", ErrSpareExists, s.Addr)
	}
	p.Spares = append(p.Spares, s)
	sort.SliceStable(p.Spares, func(i, j int) bool { return p.Spares[i].Added.Before(p.Spares[j].Added) })
	return nil
}

// Validate reports every problem with the pool, also against the shard map m: a node
// may not be a spare and a shard's node at once.
func (p Pool) Validate(m Map) error {
	var problems []string
	seen := map[string]bool{}
	for i, s := range p.Spares {
		if err := CheckAddr(s.Addr); err != nil {
			problems = append(problems, fmt.Sprintf("spares[%d] %q: %v", i, s.Addr, err))
		}
		if seen[s.Addr] {
			problems = append(problems, fmt.Sprintf("spares[%d]: %s listed twice", i, s.Addr))
		}
		seen[s.Addr] = true
		if sh, ok := m.ShardOfNode(s.Addr); ok {
			problems = append(problems, fmt.Sprintf("spares[%d]: %s is a node of shard %s", i, s.Addr, sh.ID))
		}
	}
	if len(problems) > 0 {
		return fmt.Errorf("%w: %v", ErrInvalid, problems)
	}
	return nil
}

// CheckAddr checks a node address: host:port with a host and a port of 1-65535.
func CheckAddr(a string) error {
	h, port, err := net.SplitHostPort(a)
	if err != nil {
		return fmt.Errorf("want host:port: %v", err)
	}
	if h == "" {
		return errors.New("want host:port: empty host")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("want host:port: port %q is not 1-65535", port)
	}
	return nil
}

// Pool reads the spare pool and its revision (an empty pool at revision 0 when none
// is stored).
func (s Store) Pool(ctx context.Context) (Pool, uint64, error) {
	e, err := s.KV.Get(ctx, SparesKey)
	if errors.Is(err, kv.ErrNotFound) {
		return Pool{}, 0, nil
	}
	if err != nil {
		return Pool{}, 0, fmt.Errorf("reading the spare pool: %w", err)
	}
	var p Pool
	if err := json.Unmarshal(e.Value, &p); err != nil {
		return Pool{}, 0, fmt.Errorf("%w: %s: %v", ErrInvalid, SparesKey, err)
	}
	return p, e.Revision, nil
}

// UpdatePool applies fn to the current pool and writes the result with a conditional
// write, retrying on conflict (another worker or operator changed the pool). fn may be
// called more than once; an error from it aborts the update and is returned.
func (s Store) UpdatePool(ctx context.Context, fn func(*Pool) error) (Pool, error) {
	for attempt := 0; ; attempt++ {
		p, rev, err := s.Pool(ctx)
		if err != nil {
			return Pool{}, err
		}
		if err := fn(&p); err != nil {
			return Pool{}, err
		}
		p.UpdatedAt = time.Now().UTC()
		b, _ := json.Marshal(p)
		if rev == 0 {
			_, err = s.KV.Create(ctx, SparesKey, b)
		} else {
			_, err = s.KV.Update(ctx, SparesKey, b, rev)
		}
		if err == nil {
			return p, nil
		}
		if !(errors.Is(err, kv.ErrConflict) || errors.Is(err, kv.ErrExists)) || attempt >= 20 {
			return Pool{}, fmt.Errorf("updating the spare pool: %w", err)
		}
		select {
		case <-ctx.Done():
			return Pool{}, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 5 * time.Millisecond):
		}
	}
}
