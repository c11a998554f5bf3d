package gameday

import (
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/testbin"
	"github.com/heartline/heartline/shared/topology"
)

const pack = "../../experiments"

func TestLoadPackSelectsAndReportsEveryProblem(t *testing.T) {
	all, err := LoadPack(pack, nil)
	if err != nil {
		t.Fatal(err)
	}
	// In file name order ("kill-primary-immediate-restart.yaml" sorts before
	// "kill-primary.yaml").
	if len(all) < 9 || filepath.Base(all[0].X.File) > filepath.Base(all[1].X.File) {
		t.Fatalf("pack: %d entries, want the 9 game-day experiments in file name order", len(all))
	}
	sel, err := LoadPack(pack, []string{"pause-primary", "kill-primary.yaml"})
	if err != nil || len(sel) != 2 || sel[0].Name != "pause-primary" || sel[1].Name != "kill-primary" {
		t.Fatalf("selection: %+v %v", sel, err)
	}
	_, err = LoadPack(pack, []string{"kill-primray", "nope"})
	if !errors.Is(err, ErrPack) || !strings.Contains(err.Error(), `-only "kill-primray": no such experiment`) || !strings.Contains(err.Error(), `-only "nope"`) {
		t.Fatalf("unknown names: %v", err)
	}
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "bad.yaml"), []byte("title: x\nmethod: []\n"), 0o644)
	if _, err := LoadPack(dir, nil); !errors.Is(err, ErrPack) || !strings.Contains(err.Error(), "bad.yaml") {
		t.Fatalf("invalid file: %v", err)
	}
	if _, err := LoadPack(t.TempDir(), nil); !errors.Is(err, ErrPack) {
		t.Fatalf("empty folder: %v", err)
	}
}

// binDir builds the five binaries into one folder, as ./scripts/build does.
func binDir(t *testing.T) string {
	t.Helper()
	var dir string
	for _, s := range []string{"chaos", "agent", "alerter", "lazarus", "ratequeue"} {
		dir = filepath.Dir(testbin.Build(t, s))
	}
	return dir
}

// leftovers lists processes of a game day still running: anything whose command line
// names its folder (services, loads) and the Redis nodes of its topology.
func leftovers(t *testing.T, out string) string {
	t.Helper()
	var left []string
	pg := func(pattern string) {
		b, err := exec.Command("pgrep", "-af", pattern).Output()
		var ee *exec.ExitError
		if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
			t.Fatalf("pgrep: %v", err)
		}
		for _, l := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			if l != "" && !strings.Contains(l, "pgrep") {
				left = append(left, l)
			}
		}
	}
	pg(out)
	m, err := topology.LoadFile(filepath.Join(out, "stack", "topology.json"))
	if err != nil {
		t.Fatalf("the seeded topology: %v", err)
	}
	for _, sh := range m.Shards {
		for _, n := range sh.Nodes() {
			pg("redis-server " + n + "$")
		}
	}
	return strings.Join(left, "\n")
}

func gameday(bin string, args ...string) (*exec.Cmd, *logging.Buffer) {
	cmd := exec.Command(filepath.Join(bin, "chaos"), append([]string{"gameday", "-bin-dir", bin, "-pack", pack}, args...)...)
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "CHAOS_") && !strings.HasPrefix(kv, "HEARTLINE_") {
			env = append(env, kv)
		}
	}
	cmd.Env = env
	out := &logging.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	return cmd, out
}

// The smoke test of the main command, through the binary on a small stack: kill -9 of
// a primary on two shards, with every service a real process. It passes, prints the
// summary table, writes summary.json and index.html linking the report, and leaves no
// process behind.
func TestGamedayKillPrimaryThroughTheBinary(t *testing.T) {
	bin := binDir(t)
	out := filepath.Join(t.TempDir(), "gd")
	cmd, output := gameday(bin, "-only", "kill-primary", "-shards", "2", "-out", out)
	done := make(chan error, 1)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { done <- cmd.Wait() }()
	var err error
	select {
	case err = <-done:
	case <-time.After(4 * time.Minute):
		_ = cmd.Process.Signal(syscall.SIGINT)
		<-done
		t.Fatalf("chaos gameday did not finish:\n%s", output)
	}
	if err != nil {
		log, _ := os.ReadFile(filepath.Join(out, "gameday.log"))
		t.Fatalf("chaos gameday: %v\n%s\ngameday.log (tail):\n%s", err, output, tail(string(log), 6000))
	}
	t.Logf("\n%s", output)
	o := output.String()
	for _, want := range []string{"EXPERIMENT", "kill-primary  passed", "every hypothesis held", "summary.json",
		"network: no node dialed outside loopback"} {
		if !strings.Contains(o, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	var sum Summary
	b, err := os.ReadFile(filepath.Join(out, "summary.json"))
	if err != nil || json.Unmarshal(b, &sum) != nil {
		t.Fatalf("summary.json: %v %s", err, b)
	}
	if !sum.Passed || len(sum.Experiments) != 1 {
		t.Fatalf("summary: %+v", sum)
	}
	parkDials := 0
	for _, d := range sum.Network.Dials {
		if d.Addr == redisinfo.DefaultPark.Addr() {
			parkDials += d.Count
		}
	}
	if !sum.Network.Clean() || sum.Network.Nodes != 6 || parkDials == 0 { // 2 shards of 2 nodes and the 2 spares
		t.Fatalf("network audit: %+v (a killed primary's replica must have been parked on loopback)", sum.Network)
	}
	r := sum.Experiments[0]
	if r.Result != Passed || r.Lost == nil || *r.Lost != 0 || r.Acked == nil || *r.Acked < 100 || r.Detected == "-" || r.FailedOver == "-" {
		t.Fatalf("result: %+v", r)
	}
	if _, err := os.Stat(filepath.Join(out, r.Report)); err != nil {
		t.Fatalf("report: %v", err)
	}
	idx, err := os.ReadFile(filepath.Join(out, "index.html"))
	if err != nil || !strings.Contains(string(idx), `href="`+r.Report+`"`) {
		t.Fatalf("index.html does not link %s: %v", r.Report, err)
	}
	if left := leftovers(t, out); left != "" {
		t.Fatalf("processes left behind:\n%s", left)
	}
}

// Ctrl-C in the middle of an experiment: every fault is recovered, every process is
// stopped, the summary says interrupted, and the exit code is 130.
func TestGamedayInterruptedStopsEverything(t *testing.T) {
	bin := binDir(t)
	out := filepath.Join(t.TempDir(), "gd")
	cmd, output := gameday(bin, "-only", "kill-replica", "-shards", "1", "-out", out)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer func() {
		select {
		case <-done:
		default:
			_ = cmd.Process.Kill()
		}
	}()
	redistest.WaitFor(t, 3*time.Minute, "the experiment's fault injected", func() bool {
		b, _ := os.ReadFile(filepath.Join(out, "gameday.log"))
		return strings.Contains(string(b), `"fault":"kill"`)
	})
	if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
		t.Fatal(err)
	}
	var err error
	select {
	case err = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("chaos gameday did not stop within 2 min of SIGINT:\n%s", output)
	}
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 130 {
		t.Fatalf("exit: %v, want code 130\n%s", err, output)
	}
	if !strings.Contains(output.String(), "interrupted") {
		t.Errorf("output does not say interrupted:\n%s", output)
	}
	var sum Summary
	b, _ := os.ReadFile(filepath.Join(out, "summary.json"))
	if json.Unmarshal(b, &sum) != nil || !sum.Interrupted || sum.Passed {
		t.Fatalf("summary.json: %s", b)
	}
	if left := leftovers(t, out); left != "" {
		t.Fatalf("processes left behind:\n%s", left)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
