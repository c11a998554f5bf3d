package config

import (
	"errors"
	"strings"
	"testing"
	"time"
)

type testConfig struct {
	Interval time.Duration
	Shards   []string
	Name     string
	Stream   string
}

func (c testConfig) Validate() error {
	var p Problems
	p.Positive("interval", c.Interval)
	p.Check(len(c.Shards) == 0, "shards: at least one shard is required")
	p.Check(c.Name == "", "name is required")
	return p.Err()
}

func load(t *testing.T, args []string, env map[string]string) (testConfig, error) {
	t.Helper()
	var c testConfig
	l := NewLoader("agent", "AGENT")
	l.Duration(&c.Interval, "check-interval", 250*time.Millisecond, "probe interval")
	l.List(&c.Shards, "shards", nil, "shard ids")
	l.String(&c.Name, "name", "", "name")
	l.String(&c.Stream, "stream", "", "stream URL")
	l.Shared("stream")
	if err := l.Parse(args, func(k string) string { return env[k] }); err != nil {
		return c, err
	}
	return c, c.Validate()
}

func TestPrecedenceFlagEnvDefault(t *testing.T) {
	c, err := load(t, []string{"-name", "flag"}, map[string]string{
		"AGENT_NAME": "env", "AGENT_SHARDS": "a, b,,c", "HEARTLINE_STREAM": "nats://x",
	})
	if err != nil {
		t.Fatal(err)
	}
	if c.Name != "flag" || c.Interval != 250*time.Millisecond || strings.Join(c.Shards, "|") != "a|b|c" || c.Stream != "nats://x" {
		t.Fatalf("got %+v", c)
	}
}

func TestEveryProblemReported(t *testing.T) {
	_, err := load(t, nil, map[string]string{"AGENT_CHECK_INTERVAL": "-1s"})
	var ce *Error
	if !errors.As(err, &ce) || !errors.Is(err, ErrInvalid) {
		t.Fatalf("want *Error wrapping ErrInvalid, got %v", err)
	}
	if len(ce.Problems) != 3 {
		t.Fatalf("want 3 problems, got %q", ce.Problems)
	}
	_, err = load(t, nil, map[string]string{"AGENT_CHECK_INTERVAL": "soon"})
	if err == nil || !strings.Contains(err.Error(), "AGENT_CHECK_INTERVAL") {
		t.Fatalf("want an error naming the variable, got %v", err)
	}
	_, err = load(t, []string{"-nope"}, nil)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("unknown flag: want ErrInvalid, got %v", err)
	}
}
