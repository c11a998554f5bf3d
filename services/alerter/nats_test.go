package alerter

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/natsstream"
	"github.com/heartline/heartline/shared/stream/natsstream/natstest"
)

// TestNATSTwoInstancesAndRestart runs the restart and hand-over guarantees on the real
// stream: an embedded NATS server with JetStream, incidents in NATS KV. Two alerters
// share eight shards; one stops half-way through the incidents, a third (a restarted
// instance) joins; every shard gets exactly one opened and one resolved alert, and a
// malformed heartbeat lands in the dead-letter topic.
func TestNATSTwoInstancesAndRestart(t *testing.T) {
	srv := natstest.Start(t)
	clock := &fakeClock{t: t0}
	open := func(name string) *natsstream.Backend {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b, err := natsstream.New(ctx, natsstream.Options{URL: srv.ClientURL(), Name: name, Partitions: 8,
			LeaseTTL: 2 * time.Second, Log: logging.Test(nopWriter{})})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = b.Close() })
		return b
	}
	type inst struct {
		svc    *Service
		cancel context.CancelFunc
		done   chan struct{}
	}
	start := func(name string) *inst {
		t.Helper()
		b := open(name)
		cfg := DefaultConfig()
		cfg.Instance = name
		svc, err := New(Options{Config: cfg, Consumer: b, Publisher: b, KV: b.KV(), Log: logging.Test(nopWriter{}),
			Registry: prometheus.NewRegistry(), Now: clock.Now, StartOldest: true, ManualTick: true})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		i := &inst{svc: svc, cancel: cancel, done: make(chan struct{})}
		go func() { defer close(i.done); _ = svc.Run(ctx) }()
		t.Cleanup(func() { cancel(); <-i.done })
		return i
	}
	handled := func(is ...*inst) int {
		n := 0
		for _, i := range is {
			n += (&testService{Service: i.svc}).handled()
		}
		return n
	}

	pub := open("publisher")
	var mu sync.Mutex
	alerts := map[string][]events.Event{}
	var dead []stream.DeadLetter
	marks := map[string]bool{}
	rctx, rcancel := context.WithCancel(context.Background())
	t.Cleanup(rcancel)
	reader := open("reader")
	go func() {
		_ = reader.Consume(rctx, stream.Subscription{Topic: events.TopicAlerts, Group: "test-reader", Start: stream.StartOldest},
			func(_ context.Context, d stream.Delivery) error {
				if string(d.Data) == "mark" {
					mu.Lock()
					marks[d.Key] = true
					mu.Unlock()
					return nil
				}
				e, err := events.Decode(d.Data)
				if err != nil {
					return stream.Permanent(err)
				}
				mu.Lock()
				alerts[e.Shard] = append(alerts[e.Shard], e)
				mu.Unlock()
				return nil
			})
	}()
	go func() {
		_ = reader.Consume(rctx, stream.Subscription{Topic: stream.DeadLetterTopic, Group: "test-dl", Start: stream.StartOldest},
			func(_ context.Context, d stream.Delivery) error {
				var dl stream.DeadLetter
				_ = json.Unmarshal(d.Data, &dl)
				mu.Lock()
				dead = append(dead, dl)
				mu.Unlock()
				return nil
			})
	}()

	a, b := start("alerter-a"), start("alerter-b")
	shards := []string{"s0", "s1", "s2", "s3", "s4", "s5", "s6", "s7"}
	seqs := map[string][]events.Event{}
	for _, s := range shards {
		seqs[s] = killSequence(s, "agent")
	}
	ctx := context.Background()
	if err := pub.Publish(ctx, events.TopicHeartbeats, stream.Message{Key: "s0", ID: "garbage", Data: []byte("{]")}); err != nil {
		t.Fatal(err)
	}
	sent, offset := 1, 0
	live := []*inst{a, b}
	var c *inst
	for step := 0; step < 11; step++ {
		if step == 5 {
			// Half-way: a stops (its partitions move to b), c starts like a restarted
			// instance and takes its share.
			offset = handled(a)
			a.cancel()
			<-a.done
			c = start("alerter-c")
			live = []*inst{b, c}
		}
		clock.Set(t0.Add(time.Duration(step) * 250 * time.Millisecond))
		for _, s := range shards {
			publish(t, pub, seqs[s][step])
			sent++
		}
		waitFor(t, 60*time.Second, fmt.Sprintf("step %d handled", step), func() bool { return offset+handled(live...) >= sent })
	}
	// A marker after the last alert of each shard: once read, every alert is.
	for _, s := range shards {
		if err := pub.Publish(ctx, events.TopicAlerts, stream.Message{Key: s, ID: "mark-" + s, Data: []byte("mark")}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, 30*time.Second, "alerts and dead letters read", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(marks) == len(shards) && len(dead) >= 1
	})
	mu.Lock()
	defer mu.Unlock()
	for _, s := range shards {
		if got := summary(alerts[s]); !slices.Equal(got, []string{"alert.opened PRIMARY_DOWN #1", "alert.resolved PRIMARY_DOWN #1"}) {
			t.Errorf("shard %s: %v", s, got)
		}
	}
	if len(dead) != 1 || dead[0].ID != "garbage" || dead[0].Group != "alerter" {
		t.Errorf("dead letters: %+v", dead)
	}
	_ = c
}
