package lifecycle

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

var ok = http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") })

// The endpoints answer while the service runs; a clean stop returns the service's
// result and closes them.
func TestServesWhileRunningAndStopsOnCancel(t *testing.T) {
	addr := freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() {
		served <- Run(ctx, Options{Name: "the test service", Listen: addr, Handler: ok, ShutdownTimeout: time.Second, Log: zerolog.Nop()},
			func(ctx context.Context) error { <-ctx.Done(); return nil })
	}()
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get("http://" + addr + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("endpoint never answered: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	cancel()
	if err := <-served; err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get("http://" + addr + "/healthz"); err == nil {
		t.Fatal("endpoint still served after the stop")
	}
}

// A service that does not stop within the timeout is reported, not waited for forever;
// a service that fails by itself returns its error; a busy address is a clear error.
func TestStuckFailedAndBusy(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	block := make(chan struct{})
	defer close(block)
	err := Run(ctx, Options{Name: "the stuck service", ShutdownTimeout: 50 * time.Millisecond, Log: zerolog.Nop()},
		func(context.Context) error { <-block; return nil })
	if err == nil || !strings.Contains(err.Error(), "the stuck service did not stop within the shutdown timeout") {
		t.Fatalf("stuck: %v", err)
	}
	boom := errors.New("boom")
	if err := Run(context.Background(), Options{Log: zerolog.Nop()}, func(context.Context) error { return boom }); !errors.Is(err, boom) {
		t.Fatalf("failed: %v", err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	err = Run(context.Background(), Options{Listen: ln.Addr().String(), Handler: ok, Log: zerolog.Nop()}, func(context.Context) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "not serving /healthz") {
		t.Fatalf("busy address: %v", err)
	}
}
