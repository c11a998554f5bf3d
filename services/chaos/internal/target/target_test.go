package target

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/heartline/heartline/shared/topology"
)

func TestParse(t *testing.T) {
	good := map[string]Selector{
		"shard:random/primary":          {Kind: Node, Shard: "random", Role: RolePrimary},
		"shard:any/primary":             {Kind: Node, Shard: "random", Role: RolePrimary},
		"shard:shard-1/replica:any":     {Kind: Node, Shard: "shard-1", Role: RoleReplica, Which: "any"},
		"shard:shard-1/replica":         {Kind: Node, Shard: "shard-1", Role: RoleReplica},
		"shard:all/replicas":            {Kind: Node, Shard: "all", Role: RoleReplica, Which: "all"},
		"shard:s2/replica:2":            {Kind: Node, Shard: "s2", Role: RoleReplica, Which: "2"},
		"node:127.0.0.1:7000":           {Kind: Node, Addr: "127.0.0.1:7000"},
		"ratequeue:instance:2":          {Kind: Service, Service: "ratequeue", Which: "2"},
		"agent:instance:any":            {Kind: Service, Service: "agent", Which: "any"},
		"ratequeue:all":                 {Kind: Service, Service: "ratequeue", Which: "all"},
		"link:replica->primary@shard-1": {Kind: Link, From: "replica", To: "primary", Shard: "shard-1"},
		"link:client->ratequeue":        {Kind: Link, From: "client", To: "ratequeue"},
		"link:agents->stream":           {Kind: Link, From: "agents", To: "stream"},
	}
	for in, want := range good {
		got, err := Parse(in)
		if err != nil {
			t.Errorf("%s: %v", in, err)
			continue
		}
		want.Raw = in
		if got != want {
			t.Errorf("%s: got %+v, want %+v", in, got, want)
		}
	}
	bad := map[string]string{
		"":                          "empty",
		"shard":                     "no ':'",
		"shard:s1":                  "missing /primary",
		"shard:s1/leader":           `node role "leader"`,
		"shard:s 1/primary":         `shard "s 1"`,
		"shard:s1/primary:2":        "one primary",
		"shard:s1/replica:zero":     `"zero"`,
		"shard:s1/replica:0":        `"0"`,
		"node:localhost":            "want host:port",
		"ratequeue:2":               "ratequeue:instance",
		"postgres:instance:1":       `unknown target type "postgres"`,
		"link:replica-primary":      "<from>-><to>",
		"link:replica->moon":        `link part "moon"`,
		"link:client->client":       "two different",
		"link:replica->primary@x y": `shard "x y"`,
	}
	for in, frag := range bad {
		_, err := Parse(in)
		if !errors.Is(err, ErrBadSelector) || !strings.Contains(err.Error(), frag) {
			t.Errorf("%q: want ErrBadSelector mentioning %q, got %v", in, frag, err)
		}
	}
}

type inv struct {
	m     topology.Map
	inst  []Target
	links []Target
}

func (i inv) Topology(context.Context) (topology.Map, error) { return i.m, nil }
func (i inv) Instances(_ context.Context, svc string) ([]Target, error) {
	var out []Target
	for _, t := range i.inst {
		if t.Service == svc {
			out = append(out, t)
		}
	}
	return out, nil
}
func (i inv) Links() []Target { return i.links }

func TestResolve(t *testing.T) {
	m := topology.Map{Shards: []topology.Shard{
		{ID: "s0", Index: 0, Epoch: 1, Primary: "h:1", Replicas: []string{"h:2", "h:3"}},
		{ID: "s1", Index: 1, Epoch: 1, Primary: "h:4", Replicas: []string{"h:5"}},
	}}
	iv := inv{m: m,
		inst:  []Target{{Kind: Service, Service: "ratequeue", Instance: 1}, {Kind: Service, Service: "ratequeue", Instance: 2}},
		links: []Target{{Kind: Link, Link: "replica->primary@s0", Shard: "s0"}, {Kind: Link, Link: "replica->primary@s1", Shard: "s1"}, {Kind: Link, Link: "client->ratequeue"}},
	}
	ctx := context.Background()
	r := Resolver{Inv: iv, Intn: func(n int) int { return n - 1 },
		Eligible: func(_ context.Context, s string) error {
			if s == "s1" {
				return errors.New("degraded")
			}
			return nil
		}}
	names := func(ts []Target) string {
		var s []string
		for _, t := range ts {
			s = append(s, t.String())
		}
		return strings.Join(s, ",")
	}
	b := &Binding{}
	cases := []struct{ sel, want string }{
		{"shard:random/primary", "s0/primary(h:1)"}, // s1 is not eligible
		{"shard:random/replica:all", "s0/replica(h:2),s0/replica(h:3)"},
		{"shard:s1/replica:1", "s1/replica(h:5)"},
		{"shard:all/primary", "s0/primary(h:1),s1/primary(h:4)"},
		{"node:h:3", "s0/replica(h:3)"},
		{"ratequeue:instance:2", "ratequeue/2"},
		{"ratequeue:instance:all", "ratequeue/1,ratequeue/2"},
		{"link:replica->primary@random", "link/replica->primary@s0"},
		{"link:replica->primary@all", "link/replica->primary@s0,link/replica->primary@s1"},
		{"link:client->ratequeue", "link/client->ratequeue"},
	}
	for _, c := range cases {
		sel, err := Parse(c.sel)
		if err != nil {
			t.Fatal(err)
		}
		got, err := r.Resolve(ctx, sel, b)
		if err != nil {
			t.Errorf("%s: %v", c.sel, err)
			continue
		}
		if names(got) != c.want {
			t.Errorf("%s: got %s, want %s", c.sel, names(got), c.want)
		}
	}
	if b.Shard != "s0" {
		t.Fatalf("binding = %q", b.Shard)
	}
	for _, s := range []string{"shard:s9/primary", "ratequeue:instance:3", "node:h:99", "link:agents->stream"} {
		sel, _ := Parse(s)
		if _, err := r.Resolve(ctx, sel, nil); !errors.Is(err, ErrNoTarget) {
			t.Errorf("%s: want ErrNoTarget, got %v", s, err)
		}
	}
	r.Eligible = func(context.Context, string) error { return errors.New("open alert") }
	sel, _ := Parse("shard:random/primary")
	if _, err := r.Resolve(ctx, sel, nil); !errors.Is(err, ErrNoTarget) || !strings.Contains(err.Error(), "open alert") {
		t.Fatalf("no eligible shard: %v", err)
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"shard:random/primary", "link:replica->primary@s1", "ratequeue:instance:2", "node:a:1", "shard:x/replica:3"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		sel, err := Parse(s)
		if err != nil {
			if !errors.Is(err, ErrBadSelector) {
				t.Fatalf("error does not wrap ErrBadSelector: %v", err)
			}
			return
		}
		again, err := Parse(sel.Raw)
		if err != nil || again != sel {
			t.Fatalf("re-parse of %q: %+v %v", sel.Raw, again, err)
		}
	})
}
