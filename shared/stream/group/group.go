// Package group shares a topic's partitions among the live members of a consumer group,
// with a lease per partition in a kv.Store. Each partition is worked by at most one
// member at a time, which is what keeps per-key order across a group; a member that
// dies loses its partitions when its leases expire, and the others take them over.
//
// Both the JetStream and the Kinesis backends use it: JetStream partitions are subject
// buckets of the partition key's hash, Kinesis partitions are the stream's shards.
package group

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/lease"
)

// Config configures Run.
type Config struct {
	Leases lease.Manager
	// Prefix is the key prefix of this topic and group's leases, such as
	// "stream.heartbeats.alerter".
	Prefix string
	// Member names this instance; it must be a valid kv key token.
	Member string
	// TTL of partition leases (default 10 s). A dead member's partitions move after it.
	TTL time.Duration
	// Interval between renewals and rebalancing (default TTL/4).
	Interval time.Duration
	// Partitions lists the partitions that may be worked now.
	Partitions func(ctx context.Context) ([]string, error)
	// Work processes one partition while this member owns it. It must return soon
	// after its ctx is cancelled. When it returns on its own the lease is released.
	Work func(ctx context.Context, partition string)
	Log  zerolog.Logger
}

func (c *Config) defaults() error {
	if c.TTL <= 0 {
		c.TTL = 10 * time.Second
	}
	if c.Interval <= 0 {
		c.Interval = c.TTL / 4
	}
	if c.Interval >= c.TTL {
		return fmt.Errorf("group: interval %s must be below the lease TTL %s", c.Interval, c.TTL)
	}
	if c.Partitions == nil || c.Work == nil || c.Leases.Store == nil {
		return errors.New("group: Partitions, Work and Leases are required")
	}
	if err := kv.ValidKey(kv.Key(c.Prefix, "m", c.Member)); err != nil {
		return fmt.Errorf("group: prefix or member: %w", err)
	}
	return nil
}

// MemberID turns any instance name into a valid member token.
func MemberID(s string) string {
	var b strings.Builder
	for _, c := range s {
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '-' {
			b.WriteRune(c)
		} else {
			b.WriteByte('_')
		}
	}
	if b.Len() == 0 {
		return "member"
	}
	return b.String()
}

type owned struct {
	lease  lease.Lease
	cancel context.CancelFunc
	done   chan struct{}
	// expiry cancels Work when the lease runs out unrenewed (the store unreachable),
	// so that this member stops before another one may take the partition over.
	expiry *time.Timer
}

type balancer struct {
	Config
	mu     sync.Mutex
	owned  map[string]*owned
	member lease.Lease
}

// Run works this member's share of the partitions until ctx is cancelled, then stops
// every Work, waits for it, and releases the leases so others take over at once.
func Run(ctx context.Context, c Config) error {
	if err := c.defaults(); err != nil {
		return err
	}
	b := &balancer{Config: c, owned: map[string]*owned{}}
	defer b.shutdown()
	t := time.NewTicker(c.Interval)
	defer t.Stop()
	for {
		b.tick(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

func (b *balancer) partKey(p string) string { return kv.Key(b.Prefix, "p", p) }

func (b *balancer) tick(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	now := b.Leases.Time()
	// Announce membership, so that members owning nothing yet count for the share.
	var err error
	if b.member.Key != "" {
		b.member, err = b.Leases.Renew(ctx, b.member, b.TTL)
	}
	if b.member.Key == "" || err != nil {
		b.member, err = b.Leases.Acquire(ctx, kv.Key(b.Prefix, "m", b.Member), b.Member, b.TTL, "member")
		if err != nil {
			b.Log.Warn().Err(err).Msg("consumer group membership not renewed")
		}
	}
	// Renew what we hold; stop what we lost.
	for p, o := range b.snapshot() {
		select {
		case <-o.done: // Work returned on its own: give the partition up.
			b.stop(ctx, p, true)
			continue
		default:
		}
		l, err := b.Leases.Renew(ctx, o.lease, b.TTL)
		switch {
		case err == nil:
			b.mu.Lock()
			o.lease = l
			o.expiry.Reset(b.untilExpiry(l))
			b.mu.Unlock()
		case errors.Is(err, lease.ErrLost):
			b.Log.Warn().Str("partition", p).Msg("partition lease lost; stopping its consumer")
			b.stop(ctx, p, false)
		case !now.Before(o.lease.Expires):
			b.Log.Warn().Err(err).Str("partition", p).Msg("partition lease expired unrenewed; stopping its consumer")
			b.stop(ctx, p, false)
		}
	}
	parts, err := b.Partitions(ctx)
	if err != nil {
		if ctx.Err() == nil {
			b.Log.Warn().Err(err).Msg("listing partitions failed; keeping current assignment")
		}
		return
	}
	eligible := map[string]bool{}
	for _, p := range parts {
		eligible[p] = true
	}
	for p := range b.snapshot() {
		if !eligible[p] {
			b.stop(ctx, p, true)
		}
	}
	members, err := b.Leases.List(ctx, kv.Key(b.Prefix, "m"))
	if err != nil {
		return
	}
	live := 0
	for _, m := range members {
		switch {
		case m.Live(now) && m.Owner != b.Member:
			live++
		case !m.Live(now) && now.Sub(m.Expires) > b.TTL:
			// A member gone for a whole TTL (a crashed process, or one with a random
			// instance id): forget it so the store does not fill with dead members.
			_ = b.Leases.Store.Delete(ctx, m.Key, m.Revision)
		}
	}
	live++ // this member
	target := (len(parts) + live - 1) / live
	held := b.snapshot()
	if len(held) > target {
		// Give back the surplus so that newer members get their share.
		var mine []string
		for p := range held {
			mine = append(mine, p)
		}
		sort.Strings(mine)
		for _, p := range mine[target:] {
			b.stop(ctx, p, true)
		}
		return
	}
	// Take free partitions up to the target, starting at a member-specific offset so
	// that members do not all contend for the same ones.
	sort.Strings(parts)
	start := 0
	if len(parts) > 0 {
		h := fnv.New32a()
		h.Write([]byte(b.Member))
		start = int(h.Sum32() % uint32(len(parts)))
	}
	for i := 0; i < len(parts) && len(b.snapshot()) < target; i++ {
		p := parts[(start+i)%len(parts)]
		if _, mine := held[p]; mine {
			continue
		}
		l, err := b.Leases.Acquire(ctx, b.partKey(p), b.Member, b.TTL, "partition "+p)
		if err != nil {
			continue // held by another member, or the store is unreachable
		}
		b.start(ctx, p, l)
	}
}

func (b *balancer) snapshot() map[string]*owned {
	b.mu.Lock()
	defer b.mu.Unlock()
	out := make(map[string]*owned, len(b.owned))
	for k, v := range b.owned {
		out[k] = v
	}
	return out
}

func (b *balancer) start(ctx context.Context, p string, l lease.Lease) {
	wctx, cancel := context.WithCancel(ctx)
	o := &owned{lease: l, cancel: cancel, done: make(chan struct{})}
	o.expiry = time.AfterFunc(b.untilExpiry(l), func() {
		b.Log.Warn().Str("partition", p).Msg("partition lease expired unrenewed; stopping its consumer")
		cancel()
	})
	b.mu.Lock()
	b.owned[p] = o
	b.mu.Unlock()
	b.Log.Debug().Str("partition", p).Msg("partition acquired")
	go func() {
		defer close(o.done)
		b.Work(wctx, p)
	}()
}

// untilExpiry is how long Work may run on l without a renewal: until half an interval
// before the lease expires on our clock.
func (b *balancer) untilExpiry(l lease.Lease) time.Duration {
	d := time.Until(l.Expires) - b.Interval/2
	if d < 0 {
		return 0
	}
	return d
}

// stop cancels a partition's Work, waits for it, and (when release) gives the lease up.
func (b *balancer) stop(ctx context.Context, p string, release bool) {
	b.mu.Lock()
	o := b.owned[p]
	delete(b.owned, p)
	b.mu.Unlock()
	if o == nil {
		return
	}
	o.expiry.Stop()
	o.cancel()
	<-o.done
	if release {
		rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := b.Leases.Release(rctx, o.lease); err != nil {
			b.Log.Warn().Err(err).Str("partition", p).Msg("partition lease not released; it will expire")
		}
	}
	b.Log.Debug().Str("partition", p).Msg("partition given up")
}

func (b *balancer) shutdown() {
	// One deadline for the whole shutdown, and partitions released in parallel: with
	// the store unreachable, a member must not take 5 s per partition to exit.
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var wg sync.WaitGroup
	for p := range b.snapshot() {
		wg.Add(1)
		go func() {
			defer wg.Done()
			b.stop(ctx, p, true)
		}()
	}
	wg.Wait()
	if b.member.Key != "" {
		_ = b.Leases.Release(ctx, b.member)
	}
}
