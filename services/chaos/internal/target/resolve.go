package target

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sort"
	"strconv"
	"strings"

	"github.com/heartline/heartline/shared/topology"
)

// Inventory is what resolution reads: the live shard map, the service instances and
// the links the chaos runner owns.
type Inventory interface {
	// Topology returns the current shard map.
	Topology(ctx context.Context) (topology.Map, error)
	// Instances lists the instances of a service (Kind Service), by instance number.
	Instances(ctx context.Context, service string) ([]Target, error)
	// Links lists every link (Kind Link, with Link and, where it applies, Shard set).
	Links() []Target
}

// Binding carries what one run has chosen so far: the shard "random" stands for. The
// first selector with "random" picks it; later selectors of the same run reuse it.
type Binding struct {
	Shard string
}

// Resolver turns selectors into targets.
type Resolver struct {
	Inv Inventory
	// Intn returns a random number in [0, n); nil uses math/rand.
	Intn func(n int) int
	// Eligible says whether "random" may pick a shard (healthy, allowlisted, no open
	// alert); nil allows every shard. Its error says why not.
	Eligible func(ctx context.Context, shard string) error
}

func (r Resolver) intn(n int) int {
	if r.Intn != nil {
		return r.Intn(n)
	}
	return rand.IntN(n)
}

// Resolve returns the targets sel stands for now. b may be nil (no sharing).
func (r Resolver) Resolve(ctx context.Context, sel Selector, b *Binding) ([]Target, error) {
	if b == nil {
		b = &Binding{}
	}
	switch sel.Kind {
	case Node:
		return r.nodes(ctx, sel, b)
	case Service:
		inst, err := r.Inv.Instances(ctx, sel.Service)
		if err != nil {
			return nil, fmt.Errorf("listing %s instances: %w", sel.Service, err)
		}
		sort.Slice(inst, func(i, j int) bool { return inst[i].Instance < inst[j].Instance })
		return r.pick(inst, sel.Which, sel.Raw)
	case Link:
		return r.links(ctx, sel, b)
	}
	return nil, fmt.Errorf("%w: %q: unknown kind %q", ErrBadSelector, sel.Raw, sel.Kind)
}

func (r Resolver) nodes(ctx context.Context, sel Selector, b *Binding) ([]Target, error) {
	m, err := r.Inv.Topology(ctx)
	if errors.Is(err, topology.ErrEmpty) {
		return nil, fmt.Errorf("%w: %q: the topology has no shard", ErrNoTarget, sel.Raw)
	}
	if err != nil {
		return nil, fmt.Errorf("reading the topology: %w", err)
	}
	if sel.Addr != "" {
		sh, ok := m.ShardOfNode(sel.Addr)
		if !ok {
			return nil, fmt.Errorf("%w: %q: node %s is in no shard of the topology", ErrNoTarget, sel.Raw, sel.Addr)
		}
		role := RoleReplica
		if sh.Primary == sel.Addr {
			role = RolePrimary
		}
		return []Target{{Kind: Node, Shard: sh.ID, Role: role, Addr: sel.Addr}}, nil
	}
	shards, err := r.shards(ctx, m, sel.Shard, b, sel.Raw)
	if err != nil {
		return nil, err
	}
	var out []Target
	for _, sh := range shards {
		if sel.Role == RolePrimary {
			out = append(out, Target{Kind: Node, Shard: sh.ID, Role: RolePrimary, Addr: sh.Primary})
			continue
		}
		var reps []Target
		for _, a := range sh.Replicas {
			reps = append(reps, Target{Kind: Node, Shard: sh.ID, Role: RoleReplica, Addr: a})
		}
		picked, err := r.pick(reps, sel.Which, sel.Raw+" (shard "+sh.ID+")")
		if err != nil {
			return nil, err
		}
		out = append(out, picked...)
	}
	return out, nil
}

// shards returns the shards a shard word stands for.
func (r Resolver) shards(ctx context.Context, m topology.Map, word string, b *Binding, raw string) ([]topology.Shard, error) {
	switch word {
	case "all":
		return m.Shards, nil
	case "random":
		if b.Shard != "" {
			sh, err := m.Shard(b.Shard)
			if err != nil {
				return nil, fmt.Errorf("%w: %q: the run's shard %s: %v", ErrNoTarget, raw, b.Shard, err)
			}
			return []topology.Shard{sh}, nil
		}
		var ok []topology.Shard
		var why []string
		for _, sh := range m.Shards {
			if r.Eligible != nil {
				if err := r.Eligible(ctx, sh.ID); err != nil {
					why = append(why, sh.ID+": "+err.Error())
					continue
				}
			}
			ok = append(ok, sh)
		}
		if len(ok) == 0 {
			return nil, fmt.Errorf("%w: %q: no eligible shard (%s)", ErrNoTarget, raw, strings.Join(why, "; "))
		}
		sh := ok[r.intn(len(ok))]
		b.Shard = sh.ID
		return []topology.Shard{sh}, nil
	default:
		sh, err := m.Shard(word)
		if err != nil {
			return nil, fmt.Errorf("%w: %q: %v", ErrNoTarget, raw, err)
		}
		return []topology.Shard{sh}, nil
	}
}

func (r Resolver) links(ctx context.Context, sel Selector, b *Binding) ([]Target, error) {
	base := sel.From + "->" + sel.To
	var all []Target
	for _, l := range r.Inv.Links() {
		name, _, _ := strings.Cut(l.Link, "@")
		if name == base {
			all = append(all, l)
		}
	}
	if len(all) == 0 {
		return nil, fmt.Errorf("%w: %q: the environment routes no %s link through the chaos proxies", ErrNoTarget, sel.Raw, base)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].Link < all[j].Link })
	if sel.Shard == "" {
		// An unsharded link, or every shard's link when the link is per shard.
		return all, nil
	}
	m, err := r.Inv.Topology(ctx)
	if err != nil {
		return nil, fmt.Errorf("reading the topology: %w", err)
	}
	// Only shards that have this link are candidates.
	has := map[string]bool{}
	for _, l := range all {
		has[l.Shard] = true
	}
	var cand topology.Map
	for _, sh := range m.Shards {
		if has[sh.ID] {
			cand.Shards = append(cand.Shards, sh)
		}
	}
	shards, err := r.shards(ctx, cand, sel.Shard, b, sel.Raw)
	if err != nil {
		return nil, err
	}
	var out []Target
	for _, sh := range shards {
		for _, l := range all {
			if l.Shard == sh.ID {
				out = append(out, l)
			}
		}
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrNoTarget, sel.Raw)
	}
	return out, nil
}

func (r Resolver) pick(list []Target, which, raw string) ([]Target, error) {
	if len(list) == 0 {
		return nil, fmt.Errorf("%w: %q", ErrNoTarget, raw)
	}
	switch which {
	case "all":
		return list, nil
	case "", "any", "random":
		return []Target{list[r.intn(len(list))]}, nil
	}
	n, err := strconv.Atoi(which)
	if err != nil {
		return nil, fmt.Errorf("%w: %q: %q", ErrBadSelector, raw, which)
	}
	for _, t := range list {
		if t.Kind == Service && t.Instance == n {
			return []Target{t}, nil
		}
	}
	if list[0].Kind != Service && n >= 1 && n <= len(list) {
		return []Target{list[n-1]}, nil
	}
	return nil, fmt.Errorf("%w: %q: no instance %d (have %d)", ErrNoTarget, raw, n, len(list))
}

// IsNoTarget reports whether err says that nothing matched.
func IsNoTarget(err error) bool { return errors.Is(err, ErrNoTarget) }
