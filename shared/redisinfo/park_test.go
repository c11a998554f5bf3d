package redisinfo

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

func TestParsePark(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Park
		ok   bool
	}{
		{"", DefaultPark, true},
		{"127.0.0.1:1", Park{"127.0.0.1", 1}, true},
		{"127.8.9.10:7", Park{"127.8.9.10", 7}, true},
		{"[::1]:1", Park{"::1", 1}, true},
		{"192.0.2.1:1", Park{}, false}, // the legacy address: routed on real networks
		{"10.0.0.1:1", Park{}, false},
		{"localhost:1", Park{}, false}, // a name could resolve anywhere
		{"127.0.0.1", Park{}, false},
		{"127.0.0.1:0", Park{}, false},
		{"127.0.0.1:70000", Park{}, false},
		{"127.0.0.1:x", Park{}, false},
	} {
		got, err := ParsePark(tc.in)
		if tc.ok != (err == nil) || got != tc.want {
			t.Errorf("ParsePark(%q) = %v, %v; want %v ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && !errors.Is(err, ErrParkAddr) {
			t.Errorf("ParsePark(%q): error %v is not ErrParkAddr", tc.in, err)
		}
	}
}

func FuzzParsePark(f *testing.F) {
	for _, s := range []string{"", "127.0.0.1:1", "[::1]:1", "192.0.2.1:1", "a:b:c", "[", "127.0.0.1:-1"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := ParsePark(s)
		if err != nil {
			return
		}
		if ip := net.ParseIP(p.Host); ip == nil || !ip.IsLoopback() || p.Port < 1 || p.Port > 65535 {
			t.Fatalf("ParsePark(%q) accepted %v", s, p)
		}
	})
}

func TestParkHolds(t *testing.T) {
	custom := Park{"127.0.0.2", 9}
	slave := func(h string, p int) Node { return Node{Role: "slave", MasterHost: h, MasterPort: p} }
	for _, tc := range []struct {
		name string
		p    Park
		n    Node
		want bool
	}{
		{"default", DefaultPark, slave("127.0.0.1", 1), true},
		{"legacy address still parked", DefaultPark, slave("192.0.2.1", 1), true},
		{"custom", custom, slave("127.0.0.2", 9), true},
		{"default under a custom setting", custom, slave("127.0.0.1", 1), true},
		{"custom unknown to the default", DefaultPark, slave("127.0.0.2", 9), false},
		{"zero value is the default", Park{}, slave("127.0.0.1", 1), true},
		{"ipv6 spelled long", Park{"::1", 1}, slave("0:0:0:0:0:0:0:1", 1), true},
		{"a real primary", DefaultPark, slave("127.0.0.1", 7000), false},
		{"a primary is never parked", DefaultPark, Node{Role: "master", MasterHost: "127.0.0.1", MasterPort: 1}, false},
	} {
		if got := tc.p.Holds(tc.n); got != tc.want {
			t.Errorf("%s: Holds = %v, want %v", tc.name, got, tc.want)
		}
	}
	if !slave("192.0.2.1", 1).Parked() || !slave("127.0.0.1", 1).Parked() {
		t.Error("Node.Parked must recognise the default and the legacy park address")
	}
}

// TestParkCheck dials real sockets on loopback: a closed port passes, a listener fails.
func TestParkCheck(t *testing.T) {
	ctx := context.Background()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().(*net.TCPAddr)
	open := Park{"127.0.0.1", addr.Port}
	if err := open.Check(ctx, time.Second); !errors.Is(err, ErrParkAnswers) {
		t.Fatalf("listener at the park address: Check = %v, want ErrParkAnswers", err)
	}
	ln.Close()
	if err := open.Check(ctx, time.Second); err != nil {
		t.Fatalf("closed port: Check = %v, want nil", err)
	}
	if err := DefaultPark.Check(ctx, time.Second); err != nil {
		t.Fatalf("default park address 127.0.0.1:1 on this host: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := open.Check(cctx, time.Second); err == nil || errors.Is(err, ErrParkAnswers) {
		t.Fatalf("cancelled context: Check = %v, want the cancellation", err)
	}
}
