package main

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/connect"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/redisproc"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/natsstream"
	"github.com/heartline/heartline/shared/testbin"
	"github.com/heartline/heartline/shared/topology"
)

func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "HEARTLINE_") && !strings.HasPrefix(kv, "LAZARUS_") {
			env = append(env, kv)
		}
	}
	return env
}

func runCmd(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("lazarus %v: %v\n%s", args, err, out)
	}
	return string(out)
}

func get(url string) (int, string) {
	resp, err := http.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// The lazarus binary end to end on NATS (stream and kv): seed, run, an alert after
// kill -9 of the primary, the failover seen by status, events and metrics, and a clean
// shutdown on SIGTERM.
func TestLazarusBinaryOnNATS(t *testing.T) {
	bin := testbin.Build(t, "lazarus")
	emb, err := natsstream.StartEmbedded(natsstream.EmbeddedOptions{StoreDir: t.TempDir(), Port: -1, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	defer emb.Shutdown()
	url := emb.ClientURL()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	plat, err := connect.Open(ctx, connect.Config{Stream: url, Instance: "test"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer plat.Close()

	sh := redistest.StartShard(t, "bin", 2, [2]string{"min-replicas-to-write", "1"})
	file := filepath.Join(t.TempDir(), "topology.json")
	doc := fmt.Sprintf(`{"shards":[{"id":"shard-1","index":0,"primary":%q,"replicas":[%q,%q]}]}`, sh.Primary.Addr(), sh.Replicas[0].Addr(), sh.Replicas[1].Addr())
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	if out := runCmd(t, bin, "seed", "-stream", url, "-topology", file); !strings.Contains(out, "stored at epoch 1") {
		t.Fatalf("seed: %s", out)
	}

	port, err := redisproc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	listen := fmt.Sprintf("127.0.0.1:%d", port)
	logPath := filepath.Join(t.TempDir(), "lazarus.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer logf.Close()
	cmd := exec.Command(bin, "run", "-stream", url, "-listen", listen, "-instance", "l1", "-log-format", "json", "-reconcile-interval", "200ms")
	cmd.Env = cleanEnv()
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	defer func() {
		_ = cmd.Process.Kill()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("lazarus log:\n%s", b)
		}
	}()
	redistest.WaitFor(t, 30*time.Second, "lazarus ready", func() bool {
		code, _ := get("http://" + listen + "/readyz")
		return code == 200
	})
	if code, body := get("http://" + listen + "/healthz"); code != 200 || body != "ok\n" {
		t.Fatalf("healthz: %d %q", code, body)
	}

	oldP := sh.Primary.Addr()
	if err := sh.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	hb := events.New(events.KindHeartbeat, events.Source{Service: "agent"}, "shard-1", &events.Heartbeat{Seq: 1,
		Replica: events.ReplicaState{Addr: sh.Replicas[0].Addr()}, Primary: events.PrimaryProbe{Addr: oldP}})
	alert := events.Continue(events.KindAlertOpened, events.Source{Service: "alerter"}, hb, &events.Alert{IncidentID: "inc-1",
		Code: events.AlertPrimaryDown, Severity: events.SeverityCritical, State: events.StateHard, Primary: oldP,
		FailedProbes: 3, AgentsReporting: 2, AgentsDown: 2, FirstFailure: time.Now().Add(-500 * time.Millisecond)})
	alert.Epoch = 1
	data, err := events.Encode(alert)
	if err != nil {
		t.Fatal(err)
	}
	if err := plat.Stream.Publish(ctx, events.TopicAlerts, stream.Message{Key: "shard-1", ID: alert.ID, Data: data}); err != nil {
		t.Fatal(err)
	}
	store := topology.Store{KV: plat.KV}
	redistest.WaitFor(t, 30*time.Second, "failover routed", func() bool {
		cur, _, err := store.Get(ctx, "shard-1")
		return err == nil && cur.Epoch == 2 && cur.Primary != oldP
	})
	redistest.WaitFor(t, 30*time.Second, "failover completed in metrics", func() bool {
		_, body := get("http://" + listen + "/metrics")
		return strings.Contains(body, `lazarus_failovers_total{result="completed"} 1`)
	})
	if out := runCmd(t, bin, "status", "-stream", url); !strings.Contains(out, "completed PRIMARY_DOWN") {
		t.Fatalf("status:\n%s", out)
	}
	out := runCmd(t, bin, "events", "-stream", url, "-shard", "shard-1", "-idle", "2s")
	if !strings.Contains(out, "FAILOVER COMPLETED") || !strings.Contains(out, "["+alert.CorrelationID[:8]+"]") {
		t.Fatalf("events:\n%s", out)
	}
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-exited:
		if err != nil {
			t.Fatalf("lazarus exited with %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("lazarus did not stop on SIGTERM")
	}
}

// Bad configuration exits with code 2 and lists every problem.
func TestBadConfigExitsTwo(t *testing.T) {
	bin := testbin.Build(t, "lazarus")
	cmd := exec.Command(bin, "run", "-lease-ttl", "0", "-listen", "x")
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	ee, ok := err.(*exec.ExitError)
	if !ok || ee.ExitCode() != 2 || !strings.Contains(string(out), "3 problems") {
		t.Fatalf("exit %v:\n%s", err, out)
	}
}
