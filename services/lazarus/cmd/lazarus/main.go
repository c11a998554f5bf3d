// Command lazarus is Heartline's failover worker and its operator tools. See
// services/lazarus/README.md.
package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/redis/go-redis/v9"

	"github.com/heartline/heartline/services/lazarus/internal/cli"
	"github.com/heartline/heartline/shared/config"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "lazarus:", err)
		if errors.Is(err, config.ErrInvalid) || errors.Is(err, cli.ErrUsage) {
			os.Exit(2)
		}
		os.Exit(1)
	}
}

// quietRedis drops go-redis's own log lines (refused dials are expected during a
// failover and are reported by lazarus itself).
type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...any) {}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	redis.SetLogger(quietRedis{})
	return cli.Run(ctx, os.Args[1:], cli.Env{Getenv: os.Getenv, Stdout: os.Stdout, Stderr: os.Stderr})
}
