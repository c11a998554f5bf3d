// Package lease implements expiring leases on a kv.Store: at most one owner holds a
// lease at a time, until it releases it or stops renewing it for longer than its TTL.
// Consumer groups use leases to own stream partitions; lazarus uses them so that only
// one worker acts on a shard.
//
// Expiry is judged on the clock of the process that wants the lease, so clocks of the
// machines sharing a store must agree to well within a TTL (NTP gives milliseconds;
// TTLs are seconds). Every write is conditional on the revision read, so two processes
// can never both believe they acquired the same lease.
package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/heartline/heartline/shared/kv"
)

var (
	// ErrHeld: another owner holds an unexpired lease (the error is a *HeldError).
	ErrHeld = errors.New("lease held by another owner")
	// ErrLost: the lease expired and was taken, or was deleted, since it was acquired.
	ErrLost = errors.New("lease lost")
)

// HeldError says who holds a lease, and until when.
type HeldError struct {
	Key     string
	Owner   string
	Expires time.Time
}

func (e *HeldError) Error() string {
	return fmt.Sprintf("lease %s held by %s until %s", e.Key, e.Owner, e.Expires.UTC().Format(time.RFC3339Nano))
}

func (e *HeldError) Unwrap() error { return ErrHeld }

// Record is what a lease key holds.
type Record struct {
	Owner    string    `json:"owner"`
	Acquired time.Time `json:"acquired"`
	Expires  time.Time `json:"expires"`
	// Note is free text for operators ("failing over", "partition 3").
	Note string `json:"note,omitempty"`
}

// Lease is a held lease.
type Lease struct {
	Key      string
	Owner    string
	Revision uint64
	Acquired time.Time
	Expires  time.Time
	Note     string
}

// Clock returns the current time; tests replace it.
type Clock func() time.Time

// Manager acquires, renews and releases leases in one store.
type Manager struct {
	Store kv.Store
	Now   Clock // defaults to time.Now
}

// Time returns the manager's current time.
func (m Manager) Time() time.Time { return m.now() }

func (m Manager) now() time.Time {
	if m.Now != nil {
		return m.Now()
	}
	return time.Now()
}

// Acquire takes the lease at key for owner, for ttl. An owner re-acquiring its own lease
// extends it. It returns a *HeldError when someone else holds it.
func (m Manager) Acquire(ctx context.Context, key, owner string, ttl time.Duration, note string) (Lease, error) {
	now := m.now()
	rec := Record{Owner: owner, Acquired: now, Expires: now.Add(ttl), Note: note}
	e, err := m.Store.Get(ctx, key)
	switch {
	case errors.Is(err, kv.ErrNotFound):
		b, _ := json.Marshal(rec)
		rev, err := m.Store.Create(ctx, key, b)
		if errors.Is(err, kv.ErrExists) {
			return Lease{}, m.heldBy(ctx, key)
		}
		if err != nil {
			return Lease{}, err
		}
		return lease(key, rev, rec), nil
	case err != nil:
		return Lease{}, err
	}
	var cur Record
	if json.Unmarshal(e.Value, &cur) == nil && cur.Owner != owner && now.Before(cur.Expires) {
		return Lease{}, &HeldError{Key: key, Owner: cur.Owner, Expires: cur.Expires}
	}
	if cur.Owner == owner && now.Before(cur.Expires) {
		rec.Acquired = cur.Acquired
	}
	b, _ := json.Marshal(rec)
	rev, err := m.Store.Update(ctx, key, b, e.Revision)
	if errors.Is(err, kv.ErrConflict) {
		return Lease{}, m.heldBy(ctx, key)
	}
	if err != nil {
		return Lease{}, err
	}
	return lease(key, rev, rec), nil
}

func (m Manager) heldBy(ctx context.Context, key string) error {
	rec, _, err := m.Read(ctx, key)
	if err != nil {
		return &HeldError{Key: key, Owner: "(unknown)"}
	}
	return &HeldError{Key: key, Owner: rec.Owner, Expires: rec.Expires}
}

// Renew extends a held lease by ttl from now. It returns ErrLost when the lease changed
// hands (or was deleted) since l was obtained.
func (m Manager) Renew(ctx context.Context, l Lease, ttl time.Duration) (Lease, error) {
	// Even when l expired on our clock, the conditional update tells whether someone
	// took it in between.
	now := m.now()
	rec := Record{Owner: l.Owner, Acquired: l.Acquired, Expires: now.Add(ttl), Note: l.Note}
	b, _ := json.Marshal(rec)
	rev, err := m.Store.Update(ctx, l.Key, b, l.Revision)
	if errors.Is(err, kv.ErrConflict) || errors.Is(err, kv.ErrNotFound) {
		return Lease{}, fmt.Errorf("%w: %s", ErrLost, l.Key)
	}
	if err != nil {
		return Lease{}, err
	}
	return lease(l.Key, rev, rec), nil
}

// Release gives a held lease up. Releasing a lease that was already lost is not an error.
func (m Manager) Release(ctx context.Context, l Lease) error {
	err := m.Store.Delete(ctx, l.Key, l.Revision)
	if errors.Is(err, kv.ErrConflict) {
		return nil
	}
	return err
}

// Read returns the record at key, whoever holds it, and whether it is still live.
func (m Manager) Read(ctx context.Context, key string) (Record, bool, error) {
	e, err := m.Store.Get(ctx, key)
	if err != nil {
		return Record{}, false, err
	}
	var rec Record
	if err := json.Unmarshal(e.Value, &rec); err != nil {
		return Record{}, false, fmt.Errorf("lease %s: %w", key, err)
	}
	return rec, m.now().Before(rec.Expires), nil
}

// List returns every lease record under prefix with its key, live or not.
func (m Manager) List(ctx context.Context, prefix string) ([]Lease, error) {
	entries, err := m.Store.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make([]Lease, 0, len(entries))
	for _, e := range entries {
		var rec Record
		if json.Unmarshal(e.Value, &rec) != nil {
			continue
		}
		out = append(out, lease(e.Key, e.Revision, rec))
	}
	return out, nil
}

// Live reports whether l is unexpired at now.
func (l Lease) Live(now time.Time) bool { return now.Before(l.Expires) }

func lease(key string, rev uint64, r Record) Lease {
	return Lease{Key: key, Owner: r.Owner, Revision: rev, Acquired: r.Acquired, Expires: r.Expires, Note: r.Note}
}
