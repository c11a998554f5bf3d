// Package lifecycle runs a long-lived service beside its HTTP endpoints (/healthz,
// /readyz, /metrics) and stops both under a timeout: the part every service's main
// shares after it has built its one component.
package lifecycle

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"github.com/rs/zerolog"
)

// Options describe the service being run.
type Options struct {
	// Name names the service in errors ("the agent").
	Name string
	// Listen is the HTTP address; "" serves nothing.
	Listen  string
	Handler http.Handler
	// ShutdownTimeout bounds, once ctx ends, the wait for the service's Run to return,
	// and then the HTTP server's shutdown.
	ShutdownTimeout time.Duration
	Log             zerolog.Logger
}

// Run serves o.Handler on o.Listen and calls run(ctx). It returns run's error when run
// returns by itself; when ctx ends it waits up to o.ShutdownTimeout for run to return
// and reports a run that did not. The HTTP server is shut down last, so /healthz
// answers while the service drains.
func Run(ctx context.Context, o Options, run func(context.Context) error) error {
	var srv *http.Server
	if o.Listen != "" {
		ln, err := net.Listen("tcp", o.Listen)
		if err != nil {
			return fmt.Errorf("not serving /healthz, /readyz and /metrics: %w", err)
		}
		srv = &http.Server{Handler: o.Handler, ReadHeaderTimeout: 5 * time.Second}
		go func() {
			if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
				o.Log.Error().Err(err).Msg("HTTP server stopped")
			}
		}()
		o.Log.Info().Str("addr", ln.Addr().String()).Msg("serving /healthz, /readyz and /metrics")
	}
	done := make(chan error, 1)
	go func() { done <- run(ctx) }()
	var runErr error
	select {
	case runErr = <-done:
	case <-ctx.Done():
		o.Log.Info().Msg("shutting down")
		t := time.NewTimer(o.ShutdownTimeout)
		defer t.Stop()
		select {
		case runErr = <-done:
		case <-t.C:
			runErr = fmt.Errorf("%s did not stop within the shutdown timeout %s", o.Name, o.ShutdownTimeout)
		}
	}
	if srv != nil {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ShutdownTimeout)
		defer cancel()
		_ = srv.Shutdown(sctx)
	}
	return runErr
}
