package cli

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/lazarus/internal/redisops"
	"github.com/heartline/heartline/services/lazarus/internal/worker"
	"github.com/heartline/heartline/shared/config"
	"github.com/heartline/heartline/shared/connect"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/memstream"
	"github.com/heartline/heartline/shared/topology"
)

type fixture struct {
	kv  *memkv.Store
	srv *memstream.Server
}

func newFixture() *fixture {
	return &fixture{kv: memkv.New(), srv: memstream.NewServer(memstream.Options{})}
}

func (f *fixture) env(out *logging.Buffer) Env {
	return Env{Getenv: func(string) string { return "" }, Stdout: out, Stderr: out,
		Open: func(context.Context, connect.Config, zerolog.Logger) (*connect.Platform, error) {
			return &connect.Platform{Stream: f.srv.New(), KV: f.kv}, nil
		}}
}

func (f *fixture) run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out logging.Buffer
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	err := Run(ctx, args, f.env(&out))
	return out.String(), err
}

var t0 = time.Date(2026, 3, 4, 15, 4, 5, 0, time.UTC)

func sampleTimeline() []events.Event {
	src := events.Source{Service: "lazarus", Instance: "l1"}
	mk := func(k events.Kind, at time.Duration, epoch uint64, p events.Payload) events.Event {
		e := events.New(k, src, "shard-1", p)
		e.Time, e.CorrelationID, e.Epoch = t0.Add(at), "01a2b3c4-hb", epoch
		return e
	}
	ph := events.Phases{Detected: t0.Add(-600 * time.Millisecond), Alerted: t0.Add(-20 * time.Millisecond), Decided: t0,
		Promoted: t0.Add(12 * time.Millisecond), Routed: t0.Add(30 * time.Millisecond), Verified: t0.Add(45 * time.Millisecond)}
	fo := func(step, detail string) *events.Failover {
		return &events.Failover{FailoverID: "fo-123456789", Decision: events.DecisionFailover, Reason: "PRIMARY_DOWN", Step: step,
			Detail: detail, OldPrimary: "10.0.0.1:6379", NewPrimary: "10.0.0.2:6379", FromEpoch: 1, ToEpoch: 2, LossWindow: 0, Phases: ph}
	}
	return []events.Event{
		mk(events.KindFailoverDecision, -time.Hour, 1, &events.Failover{Decision: events.DecisionHold, Reason: "COOLDOWN", LossWindow: -1,
			Detail: "the shard failed over less than the cooldown ago", Override: "wait until 14:05:00Z, or run `lazarus resume --shard shard-1`"}),
		mk(events.KindFailoverStarted, 0, 2, fo("decided", "")),
		mk(events.KindFailoverStep, 12*time.Millisecond, 2, fo("promote", "REPLICAOF NO ONE on 10.0.0.2:6379 at offset 99")),
		mk(events.KindTopologyChanged, 30*time.Millisecond, 2, &events.TopologyChanged{Primary: "10.0.0.2:6379", Replicas: []string{"10.0.0.3:6379", "10.0.0.1:6379"}, Reason: "failover"}),
		mk(events.KindFailoverCompleted, 45*time.Millisecond, 2, fo("", "")),
	}
}

func TestTimelineReadsLikeAnIncident(t *testing.T) {
	var b bytes.Buffer
	WriteTimeline(&b, sampleTimeline())
	got := b.String()
	for _, want := range []string{
		"2026-03-04T14:04:05.000Z  shard-1    e1   [01a2b3c4]  decision HOLD COOLDOWN",
		"override: wait until 14:05:00Z, or run `lazarus resume --shard shard-1`",
		"FAILOVER STARTED PRIMARY_DOWN: 10.0.0.1:6379 -> 10.0.0.2:6379, epoch 1 -> 2, loss window 0 B (failover fo-12345)",
		"step promote            ok",
		"REPLICAOF NO ONE on 10.0.0.2:6379 at offset 99",
		"topology changed (failover): primary 10.0.0.2:6379, replicas 10.0.0.3:6379,10.0.0.1:6379",
		"FAILOVER COMPLETED: 10.0.0.2:6379 is primary at epoch 2, loss window 0 B; detected, alerted +580ms, decided +20ms, promoted +12ms, routed +18ms, verified +15ms (detected to routed 630ms)",
	} {
		if !strings.Contains(got, want) {
			t.Errorf("timeline lacks %q:\n%s", want, got)
		}
	}
}

func publish(t *testing.T, f *fixture, evs []events.Event) {
	t.Helper()
	c := f.srv.New()
	for _, e := range evs {
		b, err := events.Encode(e)
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Publish(context.Background(), events.TopicFailovers, stream.Message{Key: e.Shard, ID: e.ID, Data: b}); err != nil {
			t.Fatal(err)
		}
	}
	// A stranger's garbage on the topic is skipped, not fatal.
	if err := c.Publish(context.Background(), events.TopicFailovers, stream.Message{Key: "shard-1", ID: "junk", Data: []byte("{junk")}); err != nil {
		t.Fatal(err)
	}
}

func TestEventsCommand(t *testing.T) {
	f := newFixture()
	evs := sampleTimeline()
	other := evs[1]
	other.ID, other.Shard = events.NewID(), "shard-2"
	publish(t, f, append(evs, other))
	out, err := f.run(t, "events", "-shard", "shard-1", "-idle", "300ms")
	if err != nil {
		t.Fatal(err)
	}
	if n := strings.Count(out, "shard-1 "); n != 5 || strings.Contains(out, "shard-2") || !strings.Contains(out, "1 undecodable") {
		t.Fatalf("events output:\n%s", out)
	}
	// Sorted by time: the hold an hour earlier comes first.
	if strings.Index(out, "HOLD") > strings.Index(out, "STARTED") {
		t.Fatalf("not sorted:\n%s", out)
	}
	out, err = f.run(t, "events", "-json", "-since", t0.Add(-time.Minute).Format(time.RFC3339), "-idle", "300ms")
	if err != nil {
		t.Fatal(err)
	}
	sc := bufio.NewScanner(strings.NewReader(out))
	n := 0
	for sc.Scan() {
		if strings.HasPrefix(sc.Text(), "(") {
			continue
		}
		if _, err := events.Decode(sc.Bytes()); err != nil {
			t.Fatalf("json line %q: %v", sc.Text(), err)
		}
		n++
	}
	if n != 5 { // 4 of shard-1 after the hold, and shard-2's
		t.Fatalf("%d json events:\n%s", n, out)
	}
	if _, err := f.run(t, "events", "-since", "yesterday", "-shard", "a b"); !errors.Is(err, config.ErrInvalid) || !strings.Contains(err.Error(), "2 problems") {
		t.Fatalf("bad flags: %v", err)
	}
}

func seedShard(t *testing.T, f *fixture, primary string, replicas ...string) {
	t.Helper()
	m := topology.Map{Shards: []topology.Shard{{ID: "shard-1", Epoch: 1, Primary: primary, Replicas: replicas}}}
	if _, err := (topology.Store{KV: f.kv}).Seed(context.Background(), m); err != nil {
		t.Fatal(err)
	}
}

func TestPauseResumeAndStatus(t *testing.T) {
	f := newFixture()
	seedShard(t, f, "10.0.0.1:6379", "10.0.0.2:6379")
	if out, err := f.run(t, "pause", "-shard", "shard-1", "-reason", "disk swap", "-by", "alice"); err != nil || !strings.Contains(out, "paused for shard shard-1") {
		t.Fatalf("pause: %v %s", err, out)
	}
	if _, err := f.run(t, "pause", "-shard", "shard-9"); !errors.Is(err, topology.ErrUnknownShard) {
		t.Fatalf("pause of an unknown shard: %v", err)
	}
	if _, err := f.run(t, "pause", "-by", "bob"); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	recs := worker.Records{KV: f.kv}
	done := &worker.Record{ID: "01a2b3c4-done", Shard: "shard-1", CorrelationID: "c", State: worker.StateCompleted, Outcome: "completed",
		Reason: "PRIMARY_DOWN", FromEpoch: 1, ToEpoch: 2, Created: t0, Finished: t0.Add(time.Second), LossWindow: 0, Verified: true}
	if err := recs.Create(ctx, done); err != nil {
		t.Fatal(err)
	}
	if err := (worker.Control{KV: f.kv}).SetHold(ctx, "shard-1", worker.HoldRecord{Reason: "COOLDOWN", Detail: "d", Override: "wait until 15:05:00Z", Since: t0}); err != nil {
		t.Fatal(err)
	}
	out, err := f.run(t, "status")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"FLEET PAUSED by bob", "shard-1  1      10.0.0.1:6379  10.0.0.2:6379", "PAUSED by alice",
		"completed PRIMARY_DOWN 01a2b3c4 e1->2 loss 0 B", "override: wait until 15:05:00Z", "disk swap"} {
		if !strings.Contains(out, want) {
			t.Errorf("status lacks %q:\n%s", want, out)
		}
	}
	if out, err := f.run(t, "resume", "-shard", "shard-1"); err != nil || !strings.Contains(out, "cooldown of shard-1 lifted") {
		t.Fatalf("resume: %v %s", err, out)
	}
	if _, err := f.run(t, "resume"); err != nil {
		t.Fatal(err)
	}
	out, err = f.run(t, "status", "-json")
	if err != nil || strings.Contains(out, "fleet_paused") || !strings.Contains(out, `"cooldown_lifted": true`) {
		t.Fatalf("status json after resume: %v\n%s", err, out)
	}
}

func TestUsageAndConfigErrors(t *testing.T) {
	f := newFixture()
	if _, err := f.run(t); !errors.Is(err, ErrUsage) {
		t.Fatalf("no command: %v", err)
	}
	if _, err := f.run(t, "explode"); !errors.Is(err, ErrUsage) {
		t.Fatalf("unknown command: %v", err)
	}
	_, err := f.run(t, "run", "-lease-ttl", "0", "-listen", "nowhere", "-max-concurrent", "0", "-log-format", "xml")
	var ce *config.Error
	if !errors.As(err, &ce) || len(ce.Problems) != 5 {
		t.Fatalf("want 5 problems, got %v", err)
	}
	if _, err := f.run(t, "switchover"); !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("switchover without shard: %v", err)
	}
	if _, err := f.run(t, "seed"); !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("seed without file: %v", err)
	}
	out, err := f.run(t, "status", "-h")
	if err != nil || !strings.Contains(out, "HEARTLINE_STREAM") {
		t.Fatalf("help: %v %s", err, out)
	}
	if _, err := ParseSince("90m", t0); err != nil {
		t.Fatal(err)
	}
}

// Seeding with real Redis: the topology is stored at epoch 1 and each primary stamped;
// a second seed leaves stored shards alone.
func TestSeedStampsPrimaries(t *testing.T) {
	sh := redistest.StartShard(t, "seed", 1)
	f := newFixture()
	file := filepath.Join(t.TempDir(), "topology.json")
	doc := `{"shards":[{"id":"shard-1","index":0,"primary":"` + sh.Primary.Addr() + `","replicas":["` + sh.Replicas[0].Addr() + `"]}]}`
	if err := os.WriteFile(file, []byte(doc), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := f.run(t, "seed", "-topology", file)
	if err != nil || !strings.Contains(out, "shard-1: stored at epoch 1") {
		t.Fatalf("seed: %v %s", err, out)
	}
	ep, err := redisops.Ops{}.Epoch(context.Background(), sh.Primary.Addr())
	if err != nil || ep != 1 {
		t.Fatalf("stamp: %d %v", ep, err)
	}
	if out, err := f.run(t, "seed", "-topology", file); err != nil || !strings.Contains(out, "already stored at epoch 1") {
		t.Fatalf("second seed: %v %s", err, out)
	}
	if err := os.WriteFile(file, []byte(`{"shards":[{"id":"bad id","primary":""}],"x":1}`), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := f.run(t, "seed", "-topology", file); !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("bad seed file: %v", err)
	}
}

// The switchover command against a real shard.
func TestSwitchoverCommand(t *testing.T) {
	sh := redistest.StartShard(t, "sw", 1, [2]string{"min-replicas-to-write", "1"})
	f := newFixture()
	seedShard(t, f, sh.Primary.Addr(), sh.Replicas[0].Addr())
	if err := (redisops.Ops{}).StampEpoch(context.Background(), sh.Primary.Addr(), 1); err != nil {
		t.Fatal(err)
	}
	out, err := f.run(t, "switchover", "-shard", "shard-1", "-to", sh.Replicas[0].Addr(), "-log-level", "warn")
	if err != nil || !strings.Contains(out, "completed") || !strings.Contains(out, "catch_up") {
		t.Fatalf("switchover: %v\n%s", err, out)
	}
	cur, _, err := topology.Store{KV: f.kv}.Get(context.Background(), "shard-1")
	if err != nil || cur.Primary != sh.Replicas[0].Addr() || cur.Epoch != 2 {
		t.Fatalf("topology %+v %v", cur, err)
	}
	// The failover command refuses a healthy primary: that is a switchover's job.
	if out, err := f.run(t, "failover", "-shard", "shard-1", "-log-level", "error"); !errors.Is(err, worker.ErrNoFailover) {
		t.Fatalf("failover of a healthy shard: %v\n%s", err, out)
	}
	out, _ = f.run(t, "events", "-idle", "300ms")
	for _, want := range []string{"SWITCHOVER STARTED PLANNED_SWITCHOVER", "step pause_writes", "step unpause_writes", "decision NO_ACTION PRIMARY_HEALTHY"} {
		if !strings.Contains(out, want) {
			t.Errorf("events lack %q:\n%s", want, out)
		}
	}
}
