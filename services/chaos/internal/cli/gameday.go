package cli

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/heartline/heartline/services/chaos/internal/gameday"
	"github.com/heartline/heartline/shared/logging"
)

// runGameday is `chaos gameday`: the game day's own log goes to gameday.log in the
// report folder (the terminal gets the progress and the summary).
func runGameday(ctx context.Context, c Config, extra, args []string, env Env) error {
	if len(extra) > 0 {
		return &ExitError{2, fmt.Errorf("%w: chaos gameday takes no arguments (got %q); select experiments with -only", ErrUsage, strings.Join(extra, " "))}
	}
	pack, err := gameday.LoadPack(c.Pack, c.Only)
	if err != nil {
		return &ExitError{2, err}
	}
	out := c.Out
	if out == "" {
		out = filepath.Join("gameday-reports", time.Now().UTC().Format("20060102-150405"))
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return &ExitError{1, fmt.Errorf("creating the report folder: %w", err)}
	}
	logPath := filepath.Join(out, "gameday.log")
	lf, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return &ExitError{1, err}
	}
	defer lf.Close()
	format := c.LogFormat
	if format == "" {
		format = "json"
	}
	log, err := logging.New(logging.Options{Service: "chaos", Level: c.LogLevel, Format: format, Out: lf})
	if err != nil {
		return &ExitError{2, err}
	}
	fmt.Fprintf(env.Stdout, "chaos gameday: %d experiment(s) over %s; reports in %s (log: %s)\n", len(pack), c.Backend, out, logPath)
	_, err = gameday.Run(ctx, gameday.Options{BinDir: c.BinDir, Out: out, Stream: c.Backend, Shards: c.Shards, Replicas: c.Replicas, Spares: c.Spares, Degrade: c.Degrade,
		RedisRestartDelay: c.RedisRestartDelay, HealthyTimeout: c.HealthyTimeout, Poll: c.Poll,
		Command: "chaos gameday " + strings.Join(args, " "), Log: log, Stdout: env.Stdout}, pack)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, gameday.ErrInterrupted):
		return &ExitError{130, fmt.Errorf("%w: every fault was recovered and the topology stopped", err)}
	case errors.Is(err, gameday.ErrFailed):
		return &ExitError{1, err}
	default:
		return &ExitError{1, fmt.Errorf("%w (log: %s)", err, logPath)}
	}
}
