package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heartline/heartline/services/ratequeue/checker"
	"github.com/heartline/heartline/services/ratequeue/internal/rqtest"
	"github.com/heartline/heartline/shared/redisproc"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/testbin"
)

// startServe runs `ratequeue serve` as a process and returns its base URL.
func startServe(t *testing.T, bin string, args ...string) string {
	t.Helper()
	port, err := redisproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	logf, err := os.Create(filepath.Join(t.TempDir(), "serve.log"))
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, append([]string{"serve", "-listen", addr, "-log-format", "json"}, args...)...)
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(15 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
		_ = logf.Close()
	})
	url := "http://" + addr
	redistest.WaitFor(t, 20*time.Second, "ratequeue serve ready", func() bool {
		select {
		case err := <-exited:
			b, _ := os.ReadFile(logf.Name())
			t.Fatalf("serve exited: %v\n%s", err, b)
		default:
		}
		resp, err := http.Get(url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == 200
	})
	return url
}

// cleanEnv drops HEARTLINE_/RATEQUEUE_ settings of the caller's environment.
func cleanEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if !strings.HasPrefix(e, "HEARTLINE_STREAM=") && !strings.HasPrefix(e, "HEARTLINE_KV=") && !strings.HasPrefix(e, "RATEQUEUE") {
			env = append(env, e)
		}
	}
	return env
}

func runBin(t *testing.T, bin string, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return ee.ExitCode(), out.String()
	}
	if err != nil {
		t.Fatal(err)
	}
	return 0, out.String()
}

func readReport(t *testing.T, path string) checker.Report {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var r checker.Report
	if err := json.Unmarshal(b, &r); err != nil {
		t.Fatal(err)
	}
	return r
}

// The done-criterion: load then check on a local 3-shard topology (a primary and a
// replica each) with no faults: zero lost, zero rate violations.
func TestLoadThenCheckOnThreeShards(t *testing.T) {
	bin := testbin.Build(t, "ratequeue")
	cl := rqtest.Start(t, 3)
	dir := t.TempDir()
	// Queues fill faster (30/s each) than their rate (25/s): the rate limit is what
	// paces the consumers.
	a := startServe(t, bin, "-topology-file", cl.File, "-default-rate", "25")
	b := startServe(t, bin, "-topology-file", cl.File, "-default-rate", "25")

	hist := filepath.Join(dir, "http.jsonl")
	code, out := runBin(t, bin, "load", "-targets", a+","+b, "-queues", "10", "-enqueue-rate", "300", "-duration", "3s",
		"-concurrency", "8", "-consumers", "6", "-history", hist, "-run", "e2e", "-drain-timeout", "90s", "-log-level", "warn")
	if code != 0 {
		t.Fatalf("load exited %d:\n%s", code, out)
	}
	t.Logf("load (http):\n%s", out)
	rep := filepath.Join(dir, "http.json")
	code, out = runBin(t, bin, "check", hist, "-json", rep, "-fail-on", "rate,reordered,undrained,failed_delivered")
	if code != 0 {
		t.Fatalf("check exited %d:\n%s", code, out)
	}
	r := readReport(t, rep)
	if r.Lost != 0 || r.RateViolations != 0 || r.Unexpected != 0 || !r.Drained || r.Acknowledged < 500 || r.Delivered < r.Acknowledged {
		t.Fatalf("report %+v", r)
	}
	t.Logf("check (http):\n%s", out)

	// Directly with the Go client, with consumers that drop 5%% of their acks: the
	// dropped messages come back after their visibility timeout.
	hist = filepath.Join(dir, "direct.jsonl")
	code, out = runBin(t, bin, "load", "-direct", "-topology-file", cl.File, "-default-rate", "40", "-queues", "20",
		"-enqueue-rate", "200", "-duration", "2s", "-consumers", "4", "-history", hist, "-run", "direct", "-ack-drop", "0.05",
		"-load-visibility", "300ms", "-drain-timeout", "90s", "-log-level", "warn")
	if code != 0 {
		t.Fatalf("direct load exited %d:\n%s", code, out)
	}
	rep = filepath.Join(dir, "direct.json")
	code, out = runBin(t, bin, "check", "-json", rep, "-fail-on", "rate,undrained", hist)
	if code != 0 {
		t.Fatalf("check exited %d:\n%s", code, out)
	}
	r = readReport(t, rep)
	if r.Lost != 0 || r.RateViolations != 0 || r.Redeliveries == 0 {
		t.Fatalf("report %+v", r)
	}
}

func TestCheckExitCodes(t *testing.T) {
	dir := t.TempDir()
	write := func(name, s string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	header := `{"type":"header","version":1,"run":"r"}` + "\n"
	ok := write("ok.jsonl", header+`{"type":"enqueue","status":"ok","queue":"q","id":"a","attempt":1,"invoke_us":1,"complete_us":2,"shard":"s","epoch":1}`+"\n"+
		`{"type":"deliver","queue":"q","id":"a","server_us":5,"count":1}`+"\n"+`{"type":"end","drained":true}`+"\n")
	lost := write("lost.jsonl", header+`{"type":"enqueue","status":"ok","queue":"q","id":"a","attempt":1,"invoke_us":1,"complete_us":2,"shard":"s","epoch":1}`+"\n")
	bad := write("bad.jsonl", header+"{oops\n")
	for _, tc := range []struct {
		args []string
		code int
	}{
		{[]string{"check", ok}, 0},
		{[]string{"check", lost}, 1},
		{[]string{"check", bad}, 3},
		{[]string{"check", filepath.Join(dir, "missing.jsonl")}, 3},
		{[]string{"check"}, 2},
		{[]string{"check", "-fail-on", "nonsense", ok}, 2},
		{[]string{"check", "-nope", ok}, 2},
		{[]string{"serve"}, 2},
		{[]string{"serve", "-ack", "maybe", "-topology-file", ok, "-default-rate", "-1"}, 2},
		{[]string{"load"}, 2},
		{[]string{"bench", "-clients", "0"}, 2},
		{[]string{"frobnicate"}, 2},
		{[]string{}, 2},
	} {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), tc.args, func(string) string { return "" }, &stdout, &stderr)
		code := 0
		if err != nil {
			code = 1
			var ee *exitError
			if errors.As(err, &ee) {
				code = ee.code
			}
		}
		if code != tc.code {
			t.Errorf("%v: exit %d, want %d (%v)\n%s", tc.args, code, tc.code, err, stdout.String())
		}
	}
	// Every problem is reported at once.
	err := run(context.Background(), []string{"serve", "-ack", "maybe", "-default-rate", "-1"}, func(string) string { return "" }, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "ack") || !strings.Contains(err.Error(), "default-rate") || !strings.Contains(err.Error(), "topology") {
		t.Fatalf("want every problem listed, got %v", err)
	}
	// Environment variables configure too.
	err = run(context.Background(), []string{"serve"}, func(k string) string {
		if k == "RATEQUEUE_ACK" {
			return "sometimes"
		}
		return ""
	}, &bytes.Buffer{}, &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), "sometimes") {
		t.Fatalf("env not read: %v", err)
	}
}

// SIGINT in the middle of producing: the load stops producing, drains, and exits 1
// (interrupted) with a drained history that checks clean: an aborted chaos experiment
// leaves none of its messages in the queues for the next one.
func TestLoadInterruptedDrains(t *testing.T) {
	bin := testbin.Build(t, "ratequeue")
	cl := rqtest.Start(t, 1)
	hist := filepath.Join(t.TempDir(), "int.jsonl")
	cmd := exec.Command(bin, "load", "-direct", "-topology-file", cl.File, "-default-rate", "1000", "-queues", "5",
		"-enqueue-rate", "200", "-duration", "10m", "-consumers", "2", "-history", hist, "-run", "int",
		"-drain-timeout", "60s", "-log-level", "warn")
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { _ = cmd.Process.Kill() })
	redistest.WaitFor(t, 60*time.Second, "acknowledged enqueues", func() bool {
		b, _ := os.ReadFile(hist)
		return bytes.Count(b, []byte(`"status":"ok"`)) >= 100
	})
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(90 * time.Second):
		t.Fatalf("load still running 90 s after SIGINT:\n%s", out.String())
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || !strings.Contains(out.String(), "interrupted") {
		t.Fatalf("exit %v, want 1 (interrupted):\n%s", err, out.String())
	}
	rep := filepath.Join(t.TempDir(), "int.json")
	if code, o := runBin(t, bin, "check", "-json", rep, "-fail-on", "undrained", hist); code != 0 {
		t.Fatalf("check exited %d:\n%s", code, o)
	}
	if r := readReport(t, rep); r.Lost != 0 || !r.Drained || r.Acknowledged < 100 {
		t.Fatalf("report %+v", r)
	}
}
