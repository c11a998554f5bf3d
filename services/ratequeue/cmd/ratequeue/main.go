// Command ratequeue is the sharded, rate-limited Redis queue that Heartline keeps
// alive, and its tools:
//
//	ratequeue serve [flags]            the HTTP API (enqueue, dequeue, ack, depth, health, metrics)
//	ratequeue load  [flags]            a bounded workload that writes a history file
//	ratequeue check [flags] HISTORY    the total-queue check of a history file
//	ratequeue bench [flags]            throughput/latency against redis-benchmark
//	ratequeue flags-table COMMAND      the command's flags as a Markdown table
//
// Exit codes: 0 success; 1 the check found an anomaly (or a command failed at run
// time); 2 bad usage or configuration; 3 the history file is unreadable or malformed.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// exitError carries a process exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

func usageErr(err error) error { return &exitError{code: 2, err: err} }

const usage = `usage: ratequeue COMMAND [flags]

commands:
  serve        run the HTTP API
  load         drive a bounded workload and write a history file
  check        check a history file (exit 1 on loss or unexpected messages)
  bench        benchmark enqueue/dequeue against redis-benchmark on one shard
  flags-table  print a command's flags as a Markdown table

Run "ratequeue COMMAND -h" for a command's flags and environment variables.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr)
	stop()
	if err != nil {
		code := 1
		var ee *exitError
		if errors.As(err, &ee) {
			code = ee.code
		}
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "ratequeue:", err)
		} else {
			code = 0
		}
		os.Exit(code)
	}
}

func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return usageErr(errors.New("no command"))
	}
	cmd, rest := args[0], args[1:]
	switch cmd {
	case "serve":
		return serve(ctx, rest, getenv, stdout, stderr)
	case "load":
		return load(ctx, rest, getenv, stdout, stderr)
	case "check":
		return check(ctx, rest, getenv, stdout, stderr)
	case "bench":
		return bench(ctx, rest, getenv, stdout, stderr)
	case "flags-table":
		return flagsTable(rest, stdout)
	case "-h", "-help", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	}
	fmt.Fprint(stderr, usage)
	return usageErr(fmt.Errorf("unknown command %q", cmd))
}
