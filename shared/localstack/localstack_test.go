package localstack

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/redisproc"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/testbin"
	"github.com/heartline/heartline/shared/topology"
)

func binaries(t *testing.T) Binaries {
	t.Helper()
	return Binaries{Agent: testbin.Build(t, Agent), Alerter: testbin.Build(t, Alerter), Lazarus: testbin.Build(t, Lazarus),
		Ratequeue: testbin.Build(t, Ratequeue)}
}

// alive reports whether pid still exists (a zombie counts as gone: it is only waiting
// to be reaped).
func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	out, err := exec.Command("ps", "-o", "stat=", "-p", fmt.Sprint(pid)).Output()
	return err == nil && !strings.HasPrefix(strings.TrimSpace(string(out)), "Z")
}

// pgrep lists the processes whose command line contains pattern.
func pgrep(t *testing.T, pattern string) string {
	t.Helper()
	out, err := exec.Command("pgrep", "-af", pattern).Output()
	var ee *exec.ExitError
	if err != nil && !(errors.As(err, &ee) && ee.ExitCode() == 1) {
		t.Fatalf("pgrep -af %q: %v", pattern, err)
	}
	return strings.TrimSpace(string(out))
}

// Two shards of a primary and a replica, an agent beside each of the four nodes, the
// alerter, two lazarus and two ratequeue serve instances over the embedded NATS
// server: everything answers /readyz, a link hook sees both links, kill -9 of a
// primary ends in a new primary at epoch 2 in the kv topology (the real detection and
// failover pipeline), and Stop leaves no process behind.
func TestStackFailsOverAndStopsClean(t *testing.T) {
	bins := binaries(t)
	logs := &logging.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	var linkMu sync.Mutex
	var links []string
	st, err := Start(ctx, Options{Dir: dir, Bins: bins, Shards: 2, Replicas: 1, RatequeueInstances: 2, Log: logging.Test(logs),
		Link: func(from, to, upstream string) (string, error) {
			linkMu.Lock()
			defer linkMu.Unlock()
			links = append(links, from+"->"+to)
			return upstream, nil // no proxy: the hook only has to be called
		}})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, logs.String())
	}
	stopped := false
	defer func() {
		if !stopped {
			_ = st.Stop()
		}
	}()
	if got := strings.Join(links, ","); got != "agents->stream,client->ratequeue,client->ratequeue" {
		t.Fatalf("links routed: %s", got)
	}
	if n := len(st.ServicesNamed(Agent)); n != 4 {
		t.Fatalf("%d agents, want one beside each of the 4 nodes", n)
	}
	for _, svc := range st.Services {
		resp, err := http.Get("http://" + svc.HTTP + "/readyz")
		if err != nil {
			t.Fatalf("%s-%d: %v", svc.Name, svc.Instance, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s-%d /readyz: %d %s", svc.Name, svc.Instance, resp.StatusCode, b)
		}
	}
	m, err := st.Topology(ctx)
	if err != nil || len(m.Shards) != 2 || m.Shards[0].Epoch != 1 {
		t.Fatalf("seeded topology: %+v %v", m, err)
	}

	victim := st.Node(m.Shards[0].Primary)
	if victim == nil {
		t.Fatalf("no node at %s", m.Shards[0].Primary)
	}
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	redistest.WaitFor(t, 90*time.Second, "shard-1 failed over in the kv topology", func() bool {
		cur, err := st.Topology(ctx)
		return err == nil && cur.Shards[0].Epoch == 2 && cur.Shards[0].Primary == m.Shards[0].Replicas[0]
	})
	t.Logf("kill -9 to the new topology: %s", time.Since(killed).Round(time.Millisecond))
	assertDialsStayedOnLoopback(t, st)

	pids := st.PIDs()
	if len(pids) != 3+len(st.Services) { // 3 Redis nodes left alive
		t.Fatalf("%d pids for 3 nodes and %d services", len(pids), len(st.Services))
	}
	if err := st.Stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	stopped = true
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("pid %d still alive after Stop", pid)
		}
	}
	if left := pgrep(t, dir); left != "" {
		t.Errorf("processes left behind:\n%s", left)
	}
	for _, n := range st.Nodes() {
		if left := pgrep(t, "redis-server "+n.Addr()); left != "" {
			t.Errorf("redis node left behind:\n%s", left)
		}
	}
}

// assertDialsStayedOnLoopback fails the test when any Redis node of the stack ever
// tried to reach a master outside 127.0.0.0/8, and when no replica was parked (the
// audit is about parking: it must have happened). It polls: Redis logs a dial when
// its replication cron runs, up to a second after REPLICAOF.
func assertDialsStayedOnLoopback(t *testing.T, st *Stack) {
	t.Helper()
	var all, off []redisproc.Dial
	park := redisinfo.DefaultPark.Addr()
	parked := func() bool {
		var err error
		all, off, err = st.AuditDials()
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range all {
			if d.Addr == park {
				return true
			}
		}
		return false
	}
	redistest.WaitFor(t, 10*time.Second, "a replica dialed the park address "+park+" (it was parked)", parked)
	if len(off) > 0 {
		t.Fatalf("Redis nodes dialed outside loopback: %v", off)
	}
	t.Logf("master dials, all on loopback: %v", all)
}

// Bad options are reported together, before anything starts.
func TestBadOptions(t *testing.T) {
	_, err := Start(context.Background(), Options{Shards: -1, Stream: "kafka", Bins: Binaries{Agent: "/nonexistent/agent"}})
	if !errors.Is(err, ErrBadOptions) {
		t.Fatalf("want ErrBadOptions, got %v", err)
	}
	for _, want := range []string{"Dir is required", "Shards -1", `Stream "kafka"`, "agent binary", "no alerter binary"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q: %v", want, err)
		}
	}
}

// One shard and a spare: the replica's host is gone for good, so lazarus attaches the
// spare (the shard's replica at epoch 2, the dead node in the pool), and the agent
// beside the spare, started without -shard, now reports for the shard.
func TestStackAttachesTheSpareWhenAReplicaIsGone(t *testing.T) {
	bins := binaries(t)
	logs := &logging.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	st, err := Start(ctx, Options{Dir: t.TempDir(), Bins: bins, Shards: 1, Replicas: 1, Spares: 1, LazarusInstances: 1, RatequeueInstances: 1,
		Log: logging.Test(logs)})
	if err != nil {
		t.Fatalf("start: %v\n%s", err, logs.String())
	}
	defer func() { _ = st.Stop() }()
	if len(st.SpareNodes) != 1 || len(st.ServicesNamed(Agent)) != 3 {
		t.Fatalf("%d spares, %d agents; want 1 spare and an agent beside each of the 3 nodes", len(st.SpareNodes), len(st.ServicesNamed(Agent)))
	}
	spare := st.SpareNodes[0]
	pool, _, err := topology.Store{KV: st.Platform.KV}.Pool(ctx)
	if err != nil || pool.Index(spare.Addr()) < 0 {
		t.Fatalf("pool after start: %+v %v", pool, err)
	}
	rep := st.Node(st.Seeded.Shards[0].Replicas[0])
	if err := rep.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	redistest.WaitFor(t, 60*time.Second, "the spare attached in the topology", func() bool {
		m, err := st.Topology(ctx)
		return err == nil && m.Shards[0].Epoch == 2 && len(m.Shards[0].Replicas) == 1 && m.Shards[0].Replicas[0] == spare.Addr()
	})
	t.Logf("replica kill -9 -> spare in the topology: %s", time.Since(killed).Round(time.Millisecond))
	var agent *Service
	for _, svc := range st.ServicesNamed(Agent) {
		if svc.Node == spare.Addr() {
			agent = svc
		}
	}
	redistest.WaitFor(t, 30*time.Second, "the spare's agent reports for shard-1", func() bool {
		resp, err := http.Get("http://" + agent.HTTP + "/readyz")
		if err != nil {
			return false
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == 200 && strings.Contains(string(b), `"shard":"shard-1"`)
	})
	pool, _, _ = topology.Store{KV: st.Platform.KV}.Pool(ctx)
	if pool.Index(rep.Addr()) < 0 || pool.Index(spare.Addr()) >= 0 {
		t.Fatalf("pool after the attach: %+v", pool.Spares)
	}
}
