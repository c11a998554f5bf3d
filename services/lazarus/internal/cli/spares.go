package cli

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heartline/heartline/services/lazarus/internal/redisops"
	"github.com/heartline/heartline/shared/config"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/topology"
)

// sparesCmd is `lazarus spares list|add|remove`.
func sparesCmd(ctx context.Context, args []string, env Env) error {
	if len(args) == 0 || strings.HasPrefix(args[0], "-") {
		fmt.Fprintln(env.Stderr, "usage: lazarus spares list|add|remove [flags]")
		return fmt.Errorf("%w: spares needs list, add or remove", ErrUsage)
	}
	sub, rest := args[0], args[1:]
	var c common
	var addr, zone, by string
	var asJSON, force bool
	l := config.NewLoader("lazarus spares "+sub, "LAZARUS")
	c.register(l)
	switch sub {
	case "list":
		l.Bool(&asJSON, "json", false, "print the pool as JSON")
	case "add":
		l.String(&addr, "addr", "", "host:port of the spare Redis node (required)")
		l.String(&zone, "zone", "", "zone or label of the node (informational)")
		l.String(&by, "by", os.Getenv("USER"), "who")
		l.Bool(&force, "force", false, "add a node that holds keys or does not answer (lazarus still never attaches a spare whose data a resync would wipe)")
	case "remove":
		l.String(&addr, "addr", "", "host:port of the spare to remove (required)")
	default:
		fmt.Fprintln(env.Stderr, "usage: lazarus spares list|add|remove [flags]")
		return fmt.Errorf("%w: unknown spares command %q", ErrUsage, sub)
	}
	if err := parse(l, rest, env, func(p *config.Problems) {
		c.validate(p)
		p.Check(sub != "list" && addr == "", "-addr host:port is required")
		if addr != "" {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				p.Addf("addr %q: want host:port", addr)
			}
		}
	}); err != nil || helpAsked(rest) {
		return err
	}
	log, err := c.logger(env, "lazarus-spares", "")
	if err != nil {
		return err
	}
	p, err := c.open(ctx, env, log)
	if err != nil {
		return err
	}
	defer p.Close()
	switch sub {
	case "add":
		return AddSpare(ctx, p.KV, redisops.Ops{}, topology.Spare{Addr: addr, Zone: zone, Added: env.now().UTC(), AddedBy: by}, force, env.Stdout)
	case "remove":
		return RemoveSpare(ctx, p.KV, addr, env.Stdout)
	}
	pool, _, err := topology.Store{KV: p.KV}.Pool(ctx)
	if err != nil {
		return err
	}
	if asJSON {
		b, _ := json.MarshalIndent(pool, "", "  ")
		fmt.Fprintln(env.Stdout, string(b))
		return nil
	}
	WriteSpares(env.Stdout, pool, env.now())
	return nil
}

// AddSpare checks the node (not a shard's node; reachable and empty unless force) and
// adds it to the pool.
func AddSpare(ctx context.Context, kvs kv.Store, ops redisops.Ops, s topology.Spare, force bool, out io.Writer) error {
	st := topology.Store{KV: kvs}
	m, err := st.Load(ctx)
	if err != nil && err != topology.ErrEmpty {
		return fmt.Errorf("not adding spare %s: reading the topology: %w", s.Addr, err)
	}
	if sh, ok := m.ShardOfNode(s.Addr); ok {
		return fmt.Errorf("not adding spare %s: %w: it is a node of shard %s", s.Addr, topology.ErrInvalid, sh.ID)
	}
	n := ops.Check(ctx, s.Addr)
	switch {
	case force:
	case !n.Reachable:
		return fmt.Errorf("not adding spare %s: it does not answer (%s); --force adds it anyway", s.Addr, n.Err)
	case n.Keys > 0:
		return fmt.Errorf("not adding spare %s: it holds %d keys, which attaching it would wipe; empty it (FLUSHALL) or --force", s.Addr, n.Keys)
	}
	if _, err := st.UpdatePool(ctx, func(p *topology.Pool) error { return p.Add(s) }); err != nil {
		return fmt.Errorf("not adding spare %s: %w", s.Addr, err)
	}
	fmt.Fprintf(out, "spare %s added to the pool (reachable %v, role %s, %d keys)\n", s.Addr, n.Reachable, orDash(n.Role), n.Keys)
	return nil
}

// RemoveSpare drops a spare from the pool; a spare claimed by a running attach is not
// removed.
func RemoveSpare(ctx context.Context, kvs kv.Store, addr string, out io.Writer) error {
	_, err := topology.Store{KV: kvs}.UpdatePool(ctx, func(p *topology.Pool) error {
		if i := p.Index(addr); i >= 0 && p.Spares[i].Claimed != "" {
			return fmt.Errorf("spare %s is being attached to shard %s; retry once the attach ended", addr, p.Spares[i].Claimed)
		}
		return p.Remove(addr)
	})
	if err != nil {
		return fmt.Errorf("not removing spare %s: %w", addr, err)
	}
	fmt.Fprintf(out, "spare %s removed from the pool\n", addr)
	return nil
}

// WriteSpares prints the pool as a table.
func WriteSpares(w io.Writer, p topology.Pool, now time.Time) {
	if len(p.Spares) == 0 {
		fmt.Fprintln(w, "no spares in the pool (lazarus spares add --addr HOST:PORT): a shard that loses its replica for good stays without one")
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SPARE\tZONE\tFROM\tADDED\tBY\tCLAIMED")
	for _, s := range p.Spares {
		claimed := "-"
		if s.Claimed != "" {
			claimed = fmt.Sprintf("%s (%s ago)", s.Claimed, now.Sub(s.ClaimedAt).Round(time.Second))
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", s.Addr, orDash(s.Zone), orDash(s.From), s.Added.UTC().Format(time.RFC3339), orDash(s.AddedBy), claimed)
	}
	tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
