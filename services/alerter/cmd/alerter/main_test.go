package main

import (
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/heartline/heartline/shared/config"
)

// TestRunRejectsBadConfig: bad flags or environment end in config.ErrInvalid (exit code
// 2) listing every problem, before anything is opened.
func TestRunRejectsBadConfig(t *testing.T) {
	env := map[string]string{"ALERTER_DOWN_AFTER": "-1s", "HEARTLINE_STREAM": "smoke-signals://"}
	err := run([]string{"-fail-threshold", "0"}, func(k string) string { return env[k] }, io.Discard, io.Discard)
	if !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("run: %v, want config.ErrInvalid", err)
	}
	for _, want := range []string{"fail-threshold", "down-after", "stream"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
	if err := run([]string{"-no-such-flag"}, nil, io.Discard, io.Discard); !errors.Is(err, config.ErrInvalid) {
		t.Errorf("unknown flag: %v", err)
	}
}
