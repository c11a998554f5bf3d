package proc

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestStartSignalRestart(t *testing.T) {
	log := filepath.Join(t.TempDir(), "p.log")
	p := New(Spec{Name: "sleeper", Path: "/bin/sh", Args: []string{"-c", "echo started; trap 'echo bye; exit 0' TERM; while :; do sleep 0.05; done"}, Log: log})
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	waitLog := func(n int) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for {
			b, _ := os.ReadFile(log)
			if strings.Count(string(b), "started") >= n {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("process did not start: %q", b)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitLog(1)
	if !p.Running() || p.PID() == 0 {
		t.Fatal("not running after Start")
	}
	if err := p.Start(); err == nil {
		t.Fatal("starting a running process must fail")
	}
	if err := p.Pause(); err != nil {
		t.Fatal(err)
	}
	if err := p.Resume(); err != nil {
		t.Fatal(err)
	}
	if err := p.Terminate(5 * time.Second); err != nil {
		t.Fatal(err)
	}
	if p.Running() {
		t.Fatal("running after Terminate")
	}
	select {
	case <-p.Exited():
	default:
		t.Fatal("Exited not closed")
	}
	if err := p.Signal(syscall.SIGTERM); err == nil {
		t.Fatal("signalling a stopped process must fail")
	}
	if err := p.Start(); err != nil {
		t.Fatal(err)
	}
	waitLog(2)
	if err := p.Kill(); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(log)
	if strings.Count(string(b), "started") != 2 || !strings.Contains(string(b), "bye") {
		t.Fatalf("log: %q", b)
	}
}
