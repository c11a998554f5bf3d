package main

import (
	"bytes"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/heartline/heartline/shared/config"
)

// TestMain lets the test binary run main() itself, to check the process exit code.
func TestMain(m *testing.M) {
	if os.Getenv("AGENT_TEST_RUN_MAIN") == "1" {
		os.Args = append([]string{"agent"}, strings.Fields(os.Getenv("AGENT_TEST_ARGS"))...)
		main()
		return
	}
	os.Exit(m.Run())
}

var badArgs = []string{"-shard", "a b", "-replica", "localhost", "-interval", "100ms", "-probe-timeout", "1s",
	"-buffer", "1", "-desired", "save,min-replicas-to-write=1,min-replicas-to-write=2", "-stream", "carrier-pigeon"}

func TestBadConfigReportsEveryProblem(t *testing.T) {
	var out, errOut bytes.Buffer
	err := run(badArgs, func(string) string { return "" }, &out, &errOut)
	if !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("want ErrInvalid, got %v", err)
	}
	for _, want := range []string{"shard", "replica", "probe-timeout", "buffer", `"save"`, "declared twice", "stream"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q:\n%v", want, err)
		}
	}
	if code := exitCode(err, &errOut); code != 2 {
		t.Fatalf("exit code %d, want 2", code)
	}
	// Environment variables are read too, and reported under their names.
	err = run(nil, func(k string) string {
		return map[string]string{"AGENT_INTERVAL": "soon", "AGENT_SHARD": "s1", "AGENT_REPLICA": "127.0.0.1:1"}[k]
	}, &out, &errOut)
	if !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "AGENT_INTERVAL") {
		t.Fatalf("env problem: %v", err)
	}
	if exitCode(nil, &errOut) != 0 || exitCode(errors.New("boom"), &errOut) != 1 {
		t.Fatal("exit codes for success and failure")
	}
}

func TestMainExitsWithCode2OnBadConfig(t *testing.T) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "AGENT_TEST_RUN_MAIN=1", "AGENT_TEST_ARGS="+strings.Join([]string{"-shard", "s1", "-replica", "nohost"}, " "))
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	err := cmd.Run()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 {
		t.Fatalf("want exit code 2, got %v (stderr %q)", err, stderr.String())
	}
	if !strings.Contains(stderr.String(), "replica") {
		t.Fatalf("stderr %q does not name the problem", stderr.String())
	}
}
