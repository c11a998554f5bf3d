package cli

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func env(vars map[string]string) (Env, *bytes.Buffer, *bytes.Buffer) {
	var out, errb bytes.Buffer
	return Env{Getenv: func(k string) string { return vars[k] }, Stdout: &out, Stderr: &errb}, &out, &errb
}

func code(err error) int {
	if err == nil {
		return 0
	}
	var ee *ExitError
	if errors.As(err, &ee) {
		return ee.Code
	}
	return 1
}

func TestValidate(t *testing.T) {
	files, _ := filepath.Glob("../../experiments/*.yaml")
	e, out, _ := env(nil)
	if err := Run(context.Background(), append([]string{"validate"}, files...), e); err != nil {
		t.Fatalf("the game-day pack must validate: %v", err)
	}
	if strings.Count(out.String(), "ok  ") != len(files) {
		t.Fatalf("output:\n%s", out)
	}
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	os.WriteFile(bad, []byte("title: x\nhypothesis: {lost: 0}\nmethod:\n  - fault: kill\n    target: shard:s1/primary\n    duraton: 5s\n"), 0o644)
	e, _, errb := env(nil)
	err := Run(context.Background(), []string{"validate", files[0], bad}, e)
	if code(err) != 1 || !strings.Contains(errb.String(), bad+`:6:5: method[0].duraton: unknown field "duraton" (did you mean "duration"?)`) {
		t.Fatalf("exit %d, stderr:\n%s", code(err), errb)
	}
	if code(Run(context.Background(), []string{"validate"}, e)) != 2 {
		t.Fatal("validate without files: exit 2")
	}
}

func TestBadConfigurationExits2WithEveryProblem(t *testing.T) {
	cases := []struct {
		args []string
		vars map[string]string
		want []string
	}{
		{[]string{"serve"}, nil, []string{"token must be at least 16"}},
		{[]string{"serve", "-driver", "docker", "-allow", "*", "-token", "0123456789abcdef"}, nil,
			[]string{"allowing every target is only possible with the local driver", "-compose-project"}},
		{[]string{"run", "-driver", "kubernetes", "x.yaml"}, nil, []string{"the kubernetes driver needs an explicit allowlist"}},
		{[]string{"run", "-driver", "moon", "x.yaml"}, nil, []string{`-driver "moon"`}},
		{[]string{"schedule", "-every", "0s", "x.yaml"}, nil, []string{"-every must be positive"}},
		{[]string{"run", "-local-pids", "nonsense", "x.yaml"}, nil, []string{"want ADDR=PIDFILE"}},
		{[]string{"run"}, nil, []string{"needs at least one experiment file"}},
		{[]string{"serve", "-token", "0123456789abcdef"}, map[string]string{"CHAOS_MAX_SHARDS": "zero"}, []string{"CHAOS_MAX_SHARDS"}},
		{[]string{"frobnicate"}, nil, []string{"unknown command"}},
	}
	for _, c := range cases {
		e, _, _ := env(c.vars)
		err := Run(context.Background(), c.args, e)
		if code(err) != 2 {
			t.Errorf("%v: exit %d (%v), want 2", c.args, code(err), err)
			continue
		}
		for _, w := range c.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: error lacks %q: %v", c.args, w, err)
			}
		}
	}
}

func TestFlagsTable(t *testing.T) {
	e, out, _ := env(nil)
	if err := Run(context.Background(), []string{"flags-table", "serve"}, e); err != nil {
		t.Fatal(err)
	}
	for _, w := range []string{"`-token`", "`CHAOS_TOKEN`", "`HEARTLINE_STREAM`", "`-allow`"} {
		if !strings.Contains(out.String(), w) {
			t.Fatalf("table lacks %s:\n%s", w, out)
		}
	}
}

// serve, wired end to end on the embedded stream: unauthenticated calls are refused,
// an attack on a fleet with no topology is refused with a clear error, halt answers,
// and a signal (ctx) stops it cleanly.
func TestServeWiring(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	token := "test-token-0123456789"
	// A service instance known by its pid file: the signal-halt path must resume it.
	sleeper := exec.Command("sleep", "300")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	go sleeper.Wait()
	t.Cleanup(func() { _ = sleeper.Process.Kill() })
	pidFile := filepath.Join(t.TempDir(), "rq.pid")
	os.WriteFile(pidFile, []byte(fmt.Sprint(sleeper.Process.Pid)), 0o644)
	e, _, _ := env(map[string]string{"HEARTLINE_DATA_DIR": t.TempDir(), "CHAOS_TOKEN": token, "CHAOS_LISTEN": addr, "HEARTLINE_LOG_LEVEL": "warn",
		"CHAOS_LOCAL_PIDS": "ratequeue/1=" + pidFile})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- Run(ctx, []string{"serve"}, e) }()
	stopped := false
	t.Cleanup(func() {
		if !stopped {
			cancel()
			<-done
		}
	})
	base := "http://" + addr
	deadline := time.Now().Add(30 * time.Second)
	for {
		resp, err := http.Get(base + "/healthz")
		if err == nil {
			resp.Body.Close()
			break
		}
		select {
		case err := <-done:
			t.Fatalf("serve exited: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("serve did not come up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	call := func(method, path, auth, body string) int {
		req, _ := http.NewRequest(method, base+path, strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", "Bearer "+auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := call("POST", "/v1/halt", "", ""); c != 401 {
		t.Fatalf("unauthenticated halt: %d", c)
	}
	if c := call("POST", "/v1/attacks", token, `{"fault":"kill","target":"shard:s1/primary"}`); c != 422 {
		t.Fatalf("attack with no topology: %d", c)
	}
	if c := call("POST", "/v1/halt", token, ""); c != 200 {
		t.Fatalf("halt: %d", c)
	}
	if c := call("POST", "/v1/attacks", token, `{"fault":"pause","target":"ratequeue:instance:1","duration":"1h"}`); c != 201 {
		t.Fatalf("pause of ratequeue/1: %d", c)
	}
	waitState(t, sleeper.Process.Pid, true)
	if c := call("GET", "/metrics", "", ""); c != 200 {
		t.Fatalf("metrics: %d", c)
	}
	cancel()
	stopped = true
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("serve did not stop")
	}
	waitState(t, sleeper.Process.Pid, false)
}

func procState(t *testing.T, pid int) string {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	i := strings.LastIndex(s, ")")
	return strings.Fields(s[i+1:])[0]
}

// waitState polls until the process is stopped (or not).
func waitState(t *testing.T, pid int, stopped bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for (procState(t, pid) == "T") != stopped {
		if time.Now().After(deadline) {
			t.Fatalf("process %d: state %s, want stopped=%v", pid, procState(t, pid), stopped)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
