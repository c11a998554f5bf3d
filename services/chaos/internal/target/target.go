// Package target names what a chaos fault acts on. A Selector is what an operator or
// an experiment file writes ("shard:random/primary", "shard:shard-1/replica:any",
// "ratequeue:instance:2", "link:replica->primary@shard-1"); a Target is one concrete
// thing a selector resolved to (a Redis node with its address, a service instance, a
// network link owned by the chaos runner). Resolution reads the live topology, so a
// selector written before a failover still means "the primary" after it.
package target

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/heartline/heartline/shared/events"
)

// Errors.
var (
	// ErrBadSelector: the selector does not parse.
	ErrBadSelector = errors.New("bad target selector")
	// ErrNoTarget: the selector matches nothing in the current fleet.
	ErrNoTarget = errors.New("no target matches")
)

// Kind of target.
type Kind string

const (
	Node    Kind = "node"    // a Redis node of a shard
	Service Kind = "service" // an instance of a Heartline service (ratequeue, agent, ...)
	Link    Kind = "link"    // a network link routed through the chaos runner's proxies
)

// Roles of a Redis node.
const (
	RolePrimary = "primary"
	RoleReplica = "replica"
)

// Services whose instances can be targeted.
var Services = []string{"ratequeue", "agent", "alerter", "lazarus"}

// LinkParts are the named parts a link connects.
var LinkParts = []string{"client", "ratequeue", "shard", "primary", "replica", "agents", "stream"}

// Target is one concrete thing to act on.
type Target struct {
	Kind Kind `json:"kind"`
	// Shard is set for nodes and for links that belong to one shard.
	Shard string `json:"shard,omitempty"`
	// Role is primary or replica, for nodes (as the topology said at resolution).
	Role string `json:"role,omitempty"`
	// Addr is a node's host:port.
	Addr string `json:"addr,omitempty"`
	// Service and Instance (1-based) name a service instance.
	Service  string `json:"service,omitempty"`
	Instance int    `json:"instance,omitempty"`
	// Link is the link's name, such as "replica->primary@shard-1".
	Link string `json:"link,omitempty"`
}

// Name is the target's stable name, used by the allowlist and in events:
// "shard-1/primary", "shard-1/replica", "ratequeue/2", "link/replica->primary@shard-1".
func (t Target) Name() string {
	switch t.Kind {
	case Node:
		return t.Shard + "/" + t.Role
	case Service:
		return t.Service + "/" + strconv.Itoa(t.Instance)
	case Link:
		return "link/" + t.Link
	}
	return string(t.Kind)
}

// String is the name with the concrete address, for logs.
func (t Target) String() string {
	if t.Kind == Node && t.Addr != "" {
		return t.Name() + "(" + t.Addr + ")"
	}
	return t.Name()
}

// Selector is a parsed target selector.
type Selector struct {
	Raw  string `json:"raw"`
	Kind Kind   `json:"kind"`
	// Shard is a shard id, "random" (one healthy shard, the same for every selector of
	// one run) or "all". For node selectors given by address it is empty.
	Shard string `json:"shard,omitempty"`
	// Role for node selectors: primary or replica.
	Role string `json:"role,omitempty"`
	// Which picks among several matches: "any"/"random" (one, at random), "all", or a
	// 1-based index. Empty means "the one" (a primary) or "any".
	Which string `json:"which,omitempty"`
	// Addr is set by "node:host:port".
	Addr    string `json:"addr,omitempty"`
	Service string `json:"service,omitempty"`
	// From and To name the two parts of a link.
	From string `json:"from,omitempty"`
	To   string `json:"to,omitempty"`
}

// Syntax is a short description of the selector grammar, for error messages and docs.
const Syntax = `shard:<id|random|all>/primary, shard:<id|random|all>/replica[:<n|any|all>], ` +
	`node:<host:port>, <ratequeue|agent|alerter|lazarus>:instance:<n|any|all>, ` +
	`link:<from>-><to>[@<shard|random|all>]`

// Parse parses a selector. Errors wrap ErrBadSelector and say what was expected.
func Parse(s string) (Selector, error) {
	raw := s
	s = strings.TrimSpace(s)
	bad := func(format string, args ...any) (Selector, error) {
		return Selector{}, fmt.Errorf("%w: %q: %s (want %s)", ErrBadSelector, truncate(raw), fmt.Sprintf(format, args...), Syntax)
	}
	if s == "" {
		return bad("empty")
	}
	if len(s) > 256 {
		return bad("longer than 256 bytes")
	}
	head, rest, ok := strings.Cut(s, ":")
	if !ok {
		return bad("no ':'")
	}
	sel := Selector{Raw: s}
	switch head {
	case "shard":
		shard, node, ok := strings.Cut(rest, "/")
		if !ok {
			return bad("missing /primary or /replica after the shard")
		}
		if err := checkShard(shard); err != nil {
			return bad("%v", err)
		}
		sel.Kind, sel.Shard = Node, normShard(shard)
		role, which, hasWhich := strings.Cut(node, ":")
		switch role {
		case RolePrimary:
			if hasWhich {
				return bad("a shard has one primary: no ':%s' after primary", which)
			}
		case RoleReplica:
			if hasWhich {
				if err := checkWhich(which); err != nil {
					return bad("%v", err)
				}
				sel.Which = which
			}
		case "replicas":
			if hasWhich {
				return bad("replicas means every replica: no ':%s' after it", which)
			}
			role, sel.Which = RoleReplica, "all"
		default:
			return bad("node role %q: want primary or replica", role)
		}
		sel.Role = role
		return sel, nil
	case "node":
		if !validAddr(rest) {
			return bad("node address %q: want host:port", rest)
		}
		sel.Kind, sel.Addr = Node, rest
		return sel, nil
	case "link":
		spec, shard, hasShard := strings.Cut(rest, "@")
		from, to, ok := strings.Cut(spec, "->")
		if !ok {
			return bad("a link is <from>-><to>")
		}
		if !contains(LinkParts, from) {
			return bad("link part %q: want one of %s", from, strings.Join(LinkParts, ", "))
		}
		if !contains(LinkParts, to) {
			return bad("link part %q: want one of %s", to, strings.Join(LinkParts, ", "))
		}
		if from == to {
			return bad("a link joins two different parts")
		}
		if hasShard {
			if err := checkShard(shard); err != nil {
				return bad("%v", err)
			}
			sel.Shard = normShard(shard)
		}
		sel.Kind, sel.From, sel.To = Link, from, to
		return sel, nil
	default:
		if !contains(Services, head) {
			return bad("unknown target type %q", head)
		}
		word, which, ok := strings.Cut(rest, ":")
		if word == "all" && !ok {
			word, which, ok = "instance", "all", true
		}
		if word != "instance" || !ok {
			return bad("want %s:instance:<n|any|all>", head)
		}
		if err := checkWhich(which); err != nil {
			return bad("%v", err)
		}
		sel.Kind, sel.Service, sel.Which = Service, head, which
		return sel, nil
	}
}

// LinkName is the canonical name of a link between two parts, optionally of one shard.
func LinkName(from, to, shard string) string {
	n := from + "->" + to
	if shard != "" {
		n += "@" + shard
	}
	return n
}

// ShardBound reports whether the selector names a single, not yet chosen shard that a
// run binds ("random").
func (s Selector) ShardBound() bool { return s.Shard == "random" }

func normShard(s string) string {
	if s == "any" {
		return "random"
	}
	return s
}

func checkShard(s string) error {
	switch s {
	case "random", "all", "any":
		return nil
	}
	if !events.ValidShardID(s) {
		return fmt.Errorf("shard %q: want an id of 1-64 of A-Z a-z 0-9 _ -, random or all", s)
	}
	return nil
}

func checkWhich(w string) error {
	switch w {
	case "any", "random", "all":
		return nil
	}
	n, err := strconv.Atoi(w)
	if err != nil || n < 1 || n > 1000 {
		return fmt.Errorf("%q: want a 1-based index, any or all", w)
	}
	return nil
}

func validAddr(a string) bool {
	i := strings.LastIndex(a, ":")
	if i <= 0 || i == len(a)-1 {
		return false
	}
	p, err := strconv.Atoi(a[i+1:])
	return err == nil && p > 0 && p < 65536 && !strings.ContainsAny(a, " /\t")
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
