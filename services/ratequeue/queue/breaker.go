package queue

import (
	"sync"
	"time"

	"github.com/heartline/heartline/shared/topology"
)

// The per-shard circuit: a shard whose calls have failed for BreakerAfter without a
// single success is down, and calls to it fail at once (ErrShardDown) instead of
// holding their caller for the whole op timeout, so that one dead shard does not
// starve the callers of the healthy ones. One call per BreakerProbe goes through to
// find out whether the shard is back; a success closes the circuit, and so does any
// change of the shard's route in the topology (epoch, primary, degraded): a failover
// or a spare is exactly what brings a shard back. Failures shorter than BreakerAfter
// (a failover takes about a second) never open it.

// circuit is one shard's state, guarded by breakers.mu.
type circuit struct {
	failingSince time.Time // start of the current run of failures (zero: none)
	open         bool
	openedAt     time.Time
	probeAt      time.Time // when the next call may go through while open
	route        route     // the shard's route when it opened
}

type route struct {
	epoch    uint64
	primary  string
	degraded bool
}

func routeOf(sh topology.Shard) route {
	return route{epoch: sh.Epoch, primary: sh.Primary, degraded: sh.Degraded}
}

// breakers holds every shard's circuit.
type breakers struct {
	after, probe time.Duration // after <= 0: never open
	mu           sync.Mutex
	c            map[string]*circuit
}

func newBreakers(after, probe time.Duration) *breakers {
	return &breakers{after: after, probe: probe, c: map[string]*circuit{}}
}

// allow reports whether a call to sh may be attempted now; closed reports a circuit
// that closed because the route changed.
func (b *breakers) allow(sh topology.Shard, now time.Time) (ok, closed bool) {
	if b.after <= 0 {
		return true, false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.c[sh.ID]
	if c == nil || !c.open {
		return true, false
	}
	if routeOf(sh) != c.route {
		*c = circuit{}
		return true, true
	}
	if now.Before(c.probeAt) {
		return false, false
	}
	c.probeAt = now.Add(b.probe) // this call is the probe; the others wait for its answer
	return true, false
}

// success records a successful call; it reports whether the circuit was open.
func (b *breakers) success(shard string) (wasOpen bool) {
	if b.after <= 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.c[shard]
	if c == nil {
		return false
	}
	wasOpen = c.open
	delete(b.c, shard)
	return wasOpen
}

// failure records a failed attempt that says the shard is unavailable; it reports
// whether this failure opened the circuit.
func (b *breakers) failure(sh topology.Shard, now time.Time) (opened bool) {
	if b.after <= 0 {
		return false
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	c := b.c[sh.ID]
	if c == nil {
		c = &circuit{}
		b.c[sh.ID] = c
	}
	if c.failingSince.IsZero() || (c.open && routeOf(sh) != c.route) {
		*c = circuit{failingSince: now}
	}
	if !c.open && now.Sub(c.failingSince) >= b.after {
		c.open, c.openedAt, c.probeAt, c.route = true, now, now.Add(b.probe), routeOf(sh)
		return true
	}
	return false
}

// openShards lists the shards whose circuit is open, with when it opened.
func (b *breakers) openShards() map[string]time.Time {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := map[string]time.Time{}
	for id, c := range b.c {
		if c.open {
			out[id] = c.openedAt
		}
	}
	return out
}
