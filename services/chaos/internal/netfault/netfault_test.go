package netfault

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/fault"
	"github.com/heartline/heartline/shared/redisproc"
	"github.com/heartline/heartline/shared/redistest"
)

func TestLinksManageProxiesAndToxics(t *testing.T) {
	a := redistest.Start(t, redisproc.Config{Name: "a"})
	b := redistest.Start(t, redisproc.Config{Name: "b"})
	l := New(zerolog.Nop())
	t.Cleanup(l.Close)
	pa, err := l.Add("ratequeue", "shard", "s1", "", a.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Add("ratequeue", "moon", "", "", a.Addr()); err == nil {
		t.Fatal("a link with an unknown part was accepted")
	}
	if _, err := l.Add("replica", "primary", "all", "", a.Addr()); err == nil {
		t.Fatal("a link of shard 'all' was accepted")
	}
	tox := fault.Toxic{Name: "t-lat", Type: "latency", Stream: "downstream", Toxicity: 1, Attributes: map[string]any{"latency": 200}}
	if err := l.AddToxic("ratequeue->shard@s1", tox); err != nil {
		t.Fatal(err)
	}
	// A proxy added later gets the link's toxics.
	pb, err := l.Add("ratequeue", "shard", "s1", "", b.Addr())
	if err != nil {
		t.Fatal(err)
	}
	if got, ok := l.Proxy("ratequeue->shard@s1", b.Addr()); !ok || got != pb {
		t.Fatalf("Proxy lookup: %q %v", got, ok)
	}
	for _, addr := range []string{pa, pb} {
		if rtt := pingRTT(t, addr); rtt < 150*time.Millisecond {
			t.Fatalf("%s: rtt %v with 200ms latency", addr, rtt)
		}
	}
	ts := l.Targets()
	if len(ts) != 1 || ts[0].Name() != "link/ratequeue->shard@s1" || ts[0].Shard != "s1" {
		t.Fatalf("targets: %+v", ts)
	}
	if err := l.AddToxic("nope", tox); !errors.Is(err, ErrUnknownLink) || !strings.Contains(err.Error(), "ratequeue->shard@s1") {
		t.Fatalf("unknown link: %v", err)
	}
	if err := l.SetEnabled("ratequeue->shard@s1", false); err != nil {
		t.Fatal(err)
	}
	if _, err := net.DialTimeout("tcp", pa, time.Second); err == nil {
		t.Fatal("a disabled link accepted a connection")
	}
	// Reset: no toxic, every proxy listening again on the same address.
	if err := l.Reset(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, addr := range []string{pa, pb} {
		if rtt := pingRTT(t, addr); rtt > 150*time.Millisecond {
			t.Fatalf("%s after reset: rtt %v", addr, rtt)
		}
	}
	if err := l.RemoveToxic(context.Background(), "ratequeue->shard@s1", "t-lat"); err != nil {
		t.Fatalf("removing a toxic that is gone is not an error: %v", err)
	}
}

func pingRTT(t testing.TB, addr string) time.Duration {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, PoolSize: 1, ReadTimeout: 5 * time.Second})
	defer c.Close()
	ctx := context.Background()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping %s: %v", addr, err)
	}
	start := time.Now()
	if err := c.Ping(ctx).Err(); err != nil {
		t.Fatalf("ping %s: %v", addr, err)
	}
	return time.Since(start)
}

// BenchmarkProxyOverhead compares a Redis round trip through a chaos link (toxiproxy,
// no toxic) with the direct one, in the same run:
//
//	go test -run '^$' -bench ProxyOverhead ./internal/netfault/
func BenchmarkProxyOverhead(b *testing.B) {
	n := redistest.Start(b, redisproc.Config{Name: "bench"})
	l := New(zerolog.Nop())
	b.Cleanup(l.Close)
	proxied, err := l.Add("ratequeue", "shard", "s1", "", n.Addr())
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct{ name, addr string }{{"direct", n.Addr()}, {"via-toxiproxy", proxied}} {
		b.Run(c.name, func(b *testing.B) {
			cl := redis.NewClient(&redis.Options{Addr: c.addr, MaxRetries: -1, PoolSize: 1})
			defer cl.Close()
			ctx := context.Background()
			cl.Ping(ctx)
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				if err := cl.Ping(ctx).Err(); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
