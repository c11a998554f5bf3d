package localenv

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/driver/local"
	"github.com/heartline/heartline/services/chaos/internal/experiment"
	"github.com/heartline/heartline/services/chaos/internal/runner"
	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/stream/memstream"
	"github.com/heartline/heartline/shared/testbin"
	"github.com/heartline/heartline/shared/topology"
)

// stamp sets a primary's failover epoch (the fence Ratequeue's scripts check), waiting
// until min-replicas-to-write lets the write through.
func stamp(t *testing.T, n *redistest.Node, epoch uint64) {
	t.Helper()
	c := n.Client()
	redistest.WaitFor(t, 20*time.Second, "stamping "+n.Name(), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return c.Set(ctx, "heartline:epoch", fmt.Sprint(epoch), 0).Err() == nil
	})
}

// The end-to-end run: a local topology of two real shards (a primary and one replica,
// min-replicas-to-write 1), the real `ratequeue load` and `ratequeue check`, the local
// driver's supervisor, and kill -9 of a replica. There is no lazarus here, so no
// failover can happen, and none is expected: writes to the attacked shard stall while
// its only replica is down (ack=replica), resume once the supervisor restarted it, and
// nothing acknowledged is lost.
func TestKillReplicaEndToEndWithRatequeue(t *testing.T) {
	bin := testbin.Build(t, "ratequeue")
	ctx := context.Background()
	dirs := [][2]string{{"min-replicas-to-write", "1"}, {"min-replicas-max-lag", "10"}}
	drv := local.New(local.Options{RedisRestartDelay: time.Second, Log: zerolog.Nop()})
	var m topology.Map
	var shards []*redistest.Shard
	for i := 0; i < 2; i++ {
		id := fmt.Sprintf("shard-%d", i)
		sh := redistest.StartShard(t, id, 1, dirs...)
		stamp(t, sh.Primary, 1)
		shards = append(shards, sh)
		m.Shards = append(m.Shards, topology.Shard{ID: id, Index: i, Epoch: 1, Primary: sh.Primary.Addr(), Replicas: []string{sh.Replicas[0].Addr()}})
		for _, n := range sh.Nodes() {
			drv.AddRedis(n.Addr(), local.NewRedis(n.Process))
		}
	}
	kvs := memkv.New()
	if _, err := (topology.Store{KV: kvs}).Seed(ctx, m); err != nil {
		t.Fatal(err)
	}
	topoFile := filepath.Join(t.TempDir(), "topology.json")
	if err := topology.WriteFile(topoFile, m); err != nil {
		t.Fatal(err)
	}
	env := &Env{Streams: memstream.New(), Store: kvs, Driver: drv,
		Ratequeue: &Ratequeue{Bin: bin, LoadArgs: []string{"-direct", "-topology-file", topoFile, "-drain-timeout", "60s", "-log-level", "warn"},
			Env: []string{"HEARTLINE_STREAM=", "HEARTLINE_KV="}, Log: zerolog.Nop()}}
	kit := NewKit(env, KitOptions{Allow: []string{"shard-*/replica"}, Reports: t.TempDir(), Poll: 100 * time.Millisecond, Log: zerolog.Nop()})
	kctx, kcancel := context.WithCancel(ctx)
	t.Cleanup(func() { kcancel(); _ = kit.Halt(10 * time.Second) })
	kit.Start(kctx)
	r := kit.Runner

	x, err := experiment.Parse("kill-replica-e2e.yaml", []byte(`title: kill -9 of a replica (end to end)
steady_state:
  warmup: 2s
  probes:
    - probe: shards_healthy
    - probe: no_open_alerts
    - probe: enqueue_success_rate
      min: 0.99
load:
  queues: 20
  rate: 100
  consumers: 4
method:
  - fault: kill
    target: shard:random/replica:any
    duration: 5s
    params:
      restart_after: 1s
observe: 3s
hypothesis:
  no_failover: true
  writes_resumed_within: 30s
  lost: 0
  unexpected: 0
  rate_limit_violations: 0
  healthy_within: 45s
abort:
  max_duration: 3m
`))
	if err != nil {
		t.Fatal(err)
	}
	rep := r.Run(ctx, x, runner.Options{})
	b, _ := json.MarshalIndent(rep.Hypotheses, "", "  ")
	if !rep.Passed {
		log, _ := os.ReadFile(filepath.Join(rep.Dir, "load.log"))
		full, _ := json.MarshalIndent(rep, "", "  ")
		t.Fatalf("the run did not pass: %s %s\n%s\nload.log:\n%s", rep.Error, rep.AbortReason, full, log)
	}
	t.Logf("hypotheses: %s", b)
	if rep.Check == nil || rep.Check.Lost != 0 || rep.Check.Acknowledged < 100 || !rep.Check.Drained {
		t.Fatalf("check: %+v", rep.Check)
	}
	if len(rep.Attacks) != 1 || rep.Attacks[0].Targets[0].Role != "replica" {
		t.Fatalf("attacks: %+v", rep.Attacks)
	}
	// The attacked shard is the experiment group, the other one the control.
	var attacked, control int
	for _, c := range rep.Control {
		if c.Attacked {
			attacked++
		} else {
			control++
		}
	}
	if attacked != 1 || control != 1 {
		t.Fatalf("control vs experiment: %+v", rep.Control)
	}
	html, err := os.ReadFile(filepath.Join(rep.Dir, "report.html"))
	if err != nil || !strings.Contains(string(html), "PASSED") {
		t.Fatalf("report.html: %v", err)
	}
	for _, sh := range shards {
		for _, n := range sh.Nodes() {
			if !n.Running() {
				t.Fatalf("%s is down after the run", n.Name())
			}
		}
	}
}
