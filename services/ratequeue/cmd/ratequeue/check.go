package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"time"

	"github.com/heartline/heartline/services/ratequeue/checker"
	"github.com/heartline/heartline/shared/config"
)

type checkConfig struct {
	JSON          string
	RateTolerance time.Duration
	FailOn        []string
	MaxListed     int
	History       string
}

func checkLoader() (*config.Loader, *checkConfig) {
	c := &checkConfig{}
	l := config.NewLoader("ratequeue check", "RATEQUEUE_CHECK")
	l.String(&c.JSON, "json", "", "write the report as JSON to this file")
	l.Duration(&c.RateTolerance, "rate-tolerance", time.Millisecond, "allowance subtracted from every rate window (clock differences between a shard's nodes)")
	l.List(&c.FailOn, "fail-on", nil, "extra anomalies that make the check fail: duplicated, duplicated_after_ack, reordered, rate, failed_delivered, undrained")
	l.Int(&c.MaxListed, "max-listed", 20, "ids and examples listed per anomaly")
	return l, c
}

// Validate reports every problem with the configuration.
func (c *checkConfig) Validate() error {
	var p config.Problems
	p.Check(c.History == "", "usage: ratequeue check [flags] HISTORY")
	p.Check(c.RateTolerance < 0, "-rate-tolerance must be >= 0")
	p.Check(c.MaxListed <= 0, "-max-listed must be positive")
	for _, f := range c.FailOn {
		p.Check(!slices.Contains(checker.FailOnNames, f), "-fail-on %q: want one of %v", f, checker.FailOnNames)
	}
	return p.Err()
}

func check(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	l, cfg := checkLoader()
	// Accept the history path before or after the flags.
	if len(args) > 0 && len(args[0]) > 0 && args[0][0] != '-' {
		cfg.History, args = args[0], args[1:]
	}
	if err := parse(l, args, getenv, stderr); err != nil {
		return err
	}
	rest := l.FlagSet().Args()
	if cfg.History == "" && len(rest) == 1 {
		cfg.History = rest[0]
	} else if len(rest) > 0 {
		return usageErr(fmt.Errorf("unexpected arguments %v", rest))
	}
	if err := cfg.Validate(); err != nil {
		return usageErr(err)
	}
	f, err := os.Open(cfg.History)
	if err != nil {
		return &exitError{code: 3, err: fmt.Errorf("not checking %s: %w", cfg.History, err)}
	}
	defer f.Close()
	rep, err := checker.CheckReader(f, checker.Options{RateTolerance: cfg.RateTolerance, MaxListed: cfg.MaxListed, FailOn: cfg.FailOn})
	if err != nil {
		return &exitError{code: 3, err: fmt.Errorf("not checking %s: %w", cfg.History, err)}
	}
	rep.WriteTable(stdout)
	if cfg.JSON != "" {
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(cfg.JSON, append(b, '\n'), 0o644); err != nil {
			return fmt.Errorf("writing the report: %w", err)
		}
	}
	if !rep.Valid {
		return &exitError{code: 1, err: errors.New("check failed: " + fmt.Sprint(rep.Problems))}
	}
	return nil
}
