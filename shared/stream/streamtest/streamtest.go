// Package streamtest is the conformance suite of the stream port: every backend runs
// Run and so proves the guarantees package stream documents, against the real server
// where there is one.
package streamtest

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heartline/heartline/shared/stream"
)

// Harness gives the suite clients of one isolated stream system.
type Harness struct {
	// NewClient returns a new, independent client of the system, as a separate process
	// would have. The suite closes it (Close may be called twice).
	NewClient func(t *testing.T) stream.Backend
	// Takeover bounds how long the partitions of a member that died without cleaning up
	// take to move to another member (the lease TTL plus a margin).
	Takeover time.Duration
}

// Factory returns a harness for a fresh, isolated system (its own topics and groups).
type Factory func(t *testing.T) Harness

// Run runs the whole suite.
func Run(t *testing.T, newHarness Factory) {
	tests := []struct {
		name string
		f    func(*testing.T, Harness)
	}{
		{"PublishAndConsume", testPublishConsume},
		{"OrderPerKeyUnderConcurrentPublishers", testOrder},
		{"RedeliveryAfterHandlerError", testRedelivery},
		{"PermanentErrorGoesToDeadLetter", testDeadLetter},
		{"KilledConsumerResumesWithoutLoss", testKillRestart},
		{"CrashedMemberPartitionsTakenOver", testCrashTakeover},
		{"TwoInstancesShareAGroup", testSharing},
		{"SeparateGroupsEachSeeEverything", testSeparateGroups},
		{"StartLatestSkipsHistory", testStartLatest},
		{"OversizeAndInvalidRejected", testRejects},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) { tc.f(t, newHarness(t)) })
	}
}

// ---- helpers ----

type rec struct {
	member  string
	key     string
	id      string
	data    string
	attempt int
}

type recorder struct {
	mu   sync.Mutex
	list []rec
}

func (r *recorder) add(x rec) {
	r.mu.Lock()
	r.list = append(r.list, x)
	r.mu.Unlock()
}

func (r *recorder) snapshot() []rec {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]rec(nil), r.list...)
}

// distinct counts distinct message ids.
func (r *recorder) distinct() int {
	seen := map[string]bool{}
	for _, x := range r.snapshot() {
		seen[x.id] = true
	}
	return len(seen)
}

func newClient(t *testing.T, h Harness) stream.Backend {
	t.Helper()
	c := h.NewClient(t)
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	t.Cleanup(cancel)
	return ctx
}

func seqOf(data string) int {
	_, s, _ := strings.Cut(data, "|")
	n, _ := strconv.Atoi(s)
	return n
}

func publishAll(t *testing.T, ctx context.Context, p stream.Publisher, topic string, keys, perKey int) {
	t.Helper()
	for i := 0; i < perKey; i++ {
		for k := 0; k < keys; k++ {
			if err := p.Publish(ctx, topic, Msg(fmt.Sprintf("k%d", k), i)); err != nil {
				t.Fatalf("Publish: %v", err)
			}
		}
	}
}

// checkOrder fails when, for some key, a message was first delivered before an
// earlier message of the same key was delivered.
func checkOrder(t *testing.T, recs []rec) {
	t.Helper()
	last := map[string]int{}
	first := map[string]bool{}
	for _, x := range recs {
		if first[x.id] {
			continue // a redelivery of a message already seen may repeat older ones
		}
		first[x.id] = true
		s := seqOf(x.data)
		if prev, ok := last[x.key]; ok && s < prev {
			t.Fatalf("key %s: message %d delivered after %d", x.key, s, prev)
		}
		last[x.key] = s
	}
}

func handlerInto(r *recorder, member string) stream.Handler {
	return func(ctx context.Context, d stream.Delivery) error {
		r.add(rec{member: member, key: d.Key, id: d.ID, data: string(d.Data), attempt: d.Attempt})
		return nil
	}
}

// ---- tests ----

func testPublishConsume(t *testing.T, h Harness) {
	ctx := testCtx(t)
	c := newClient(t, h)
	m := stream.Message{Key: "shard-1", ID: "id-1", Data: []byte(`{"hello":"world"}`)}
	if err := c.Publish(ctx, "events", m); err != nil {
		t.Fatalf("Publish: %v", err)
	}
	got := make(chan stream.Delivery, 1)
	Consume(t, ctx, c, stream.Subscription{Topic: "events", Group: "g1"}, func(ctx context.Context, d stream.Delivery) error {
		select {
		case got <- d:
		default:
		}
		return nil
	})
	select {
	case d := <-got:
		if d.Key != m.Key || d.ID != m.ID || string(d.Data) != string(m.Data) || d.Topic != "events" || d.Attempt != 1 {
			t.Fatalf("delivery %+v does not match %+v", d, m)
		}
		if d.Published.IsZero() || d.Partition == "" {
			t.Fatalf("delivery lacks Published or Partition: %+v", d)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("message not delivered within 60s")
	}
}

func testOrder(t *testing.T, h Harness) {
	ctx := testCtx(t)
	const publishers, keysEach, perKey = 4, 5, 40
	var wg sync.WaitGroup
	for p := 0; p < publishers; p++ {
		c := newClient(t, h)
		wg.Add(1)
		go func(p int, c stream.Publisher) {
			defer wg.Done()
			for i := 0; i < perKey; i += 4 {
				// Alternate single and batch publishes; a key's messages stay in order.
				var batch []stream.Message
				for k := 0; k < keysEach; k++ {
					key := fmt.Sprintf("p%dk%d", p, k)
					if err := c.Publish(ctx, "ordered", Msg(key, i)); err != nil {
						t.Errorf("Publish: %v", err)
						return
					}
					for j := 1; j < 4; j++ {
						batch = append(batch, Msg(key, i+j))
					}
				}
				if err := c.PublishBatch(ctx, "ordered", batch); err != nil {
					t.Errorf("PublishBatch: %v", err)
					return
				}
			}
		}(p, c)
	}
	wg.Wait()
	r := &recorder{}
	c := newClient(t, h)
	Consume(t, ctx, c, stream.Subscription{Topic: "ordered", Group: "g"}, handlerInto(r, "a"))
	total := publishers * keysEach * perKey
	WaitFor(t, 90*time.Second, func() string { return fmt.Sprintf("%d of %d delivered", r.distinct(), total) },
		func() bool { return r.distinct() == total })
	checkOrder(t, r.snapshot())
}

func testRedelivery(t *testing.T, h Harness) {
	ctx := testCtx(t)
	c := newClient(t, h)
	for i := 0; i < 5; i++ {
		if err := c.Publish(ctx, "retry", Msg("k", i)); err != nil {
			t.Fatal(err)
		}
	}
	r := &recorder{}
	var mu sync.Mutex
	fails := map[string]int{}
	Consume(t, ctx, c, stream.Subscription{Topic: "retry", Group: "g"}, func(ctx context.Context, d stream.Delivery) error {
		r.add(rec{key: d.Key, id: d.ID, data: string(d.Data), attempt: d.Attempt})
		mu.Lock()
		defer mu.Unlock()
		if d.ID == "k-2" && fails[d.ID] < 2 {
			fails[d.ID]++
			return errors.New("transient trouble")
		}
		return nil
	})
	WaitFor(t, 60*time.Second, func() string { return fmt.Sprintf("%d of 5 delivered", r.distinct()) },
		func() bool { return r.distinct() == 5 && len(r.snapshot()) >= 7 })
	var attempts []int
	for _, x := range r.snapshot() {
		if x.id == "k-2" {
			attempts = append(attempts, x.attempt)
		}
	}
	if len(attempts) < 3 || attempts[0] != 1 || attempts[1] != 2 || attempts[2] != 3 {
		t.Fatalf("k-2 should be delivered 3 times with attempts 1,2,3; got %v", attempts)
	}
	// Nothing after k-2 on the same key was handled before k-2 succeeded.
	recs := r.snapshot()
	for i, x := range recs {
		if x.id == "k-3" {
			for _, y := range recs[i:] {
				if y.id == "k-2" {
					t.Fatal("k-3 was handled before k-2 succeeded: per-key order broken by a retry")
				}
			}
		}
	}
}

func testDeadLetter(t *testing.T, h Harness) {
	ctx := testCtx(t)
	c := newClient(t, h)
	for i := 0; i < 3; i++ {
		if err := c.Publish(ctx, "poison", Msg("k", i)); err != nil {
			t.Fatal(err)
		}
	}
	r := &recorder{}
	Consume(t, ctx, c, stream.Subscription{Topic: "poison", Group: "g"}, func(ctx context.Context, d stream.Delivery) error {
		r.add(rec{key: d.Key, id: d.ID, data: string(d.Data), attempt: d.Attempt})
		if d.ID == "k-1" {
			return stream.Permanent(errors.New("cannot parse"))
		}
		return nil
	})
	dl := &recorder{}
	Consume(t, ctx, c, stream.Subscription{Topic: stream.DeadLetterTopic, Group: "dl"}, handlerInto(dl, "dl"))
	WaitFor(t, 60*time.Second, func() string { return fmt.Sprintf("%d delivered, %d dead-lettered", r.distinct(), dl.distinct()) },
		func() bool { return r.distinct() == 3 && dl.distinct() == 1 })
	n := 0
	for _, x := range r.snapshot() {
		if x.id == "k-1" {
			n++
		}
	}
	if n != 1 {
		t.Fatalf("a permanently failed message was delivered %d times, want 1", n)
	}
	if d := dl.snapshot()[0]; !strings.Contains(d.data, "cannot parse") || !strings.Contains(d.data, `"id":"k-1"`) {
		t.Fatalf("dead letter does not say what failed and why: %s", d.data)
	}
}

func testKillRestart(t *testing.T, h Harness) {
	ctx := testCtx(t)
	pub := newClient(t, h)
	const keys, perKey = 10, 30
	publishAll(t, ctx, pub, "resume", keys, perKey)
	total := keys * perKey
	r := &recorder{}
	a := newClient(t, h)
	var handled sync.WaitGroup
	handled.Add(1)
	var once sync.Once
	var count int
	var mu sync.Mutex
	stopA := Consume(t, ctx, a, stream.Subscription{Topic: "resume", Group: "g", Instance: "a"}, func(ctx context.Context, d stream.Delivery) error {
		mu.Lock()
		count++
		n := count
		mu.Unlock()
		if n > total/2 {
			once.Do(handled.Done)
			<-ctx.Done() // the "kill" arrives while this message is in flight
			return ctx.Err()
		}
		r.add(rec{member: "a", key: d.Key, id: d.ID, data: string(d.Data)})
		return nil
	})
	handled.Wait()
	stopA()
	_ = a.Close()
	ackedByA := r.distinct()
	b := newClient(t, h)
	Consume(t, ctx, b, stream.Subscription{Topic: "resume", Group: "g", Instance: "b"}, handlerInto(r, "b"))
	WaitFor(t, 90*time.Second, func() string { return fmt.Sprintf("%d of %d delivered", r.distinct(), total) },
		func() bool { return r.distinct() == total })
	// b resumed where a left off: it did not start over.
	seenByA := map[string]bool{}
	dups := 0
	for _, x := range r.snapshot() {
		if x.member == "a" {
			seenByA[x.id] = true
		} else if seenByA[x.id] {
			dups++
		}
	}
	if dups > ackedByA/4 {
		t.Fatalf("the restarted consumer redelivered %d of the %d messages already acknowledged: it did not resume", dups, ackedByA)
	}
	checkOrder(t, r.snapshot())
}

func testCrashTakeover(t *testing.T, h Harness) {
	ctx := testCtx(t)
	pub := newClient(t, h)
	a := newClient(t, h)
	r := &recorder{}
	// a consumes, then its client is closed under it without a clean stop: the
	// stand-in for a crashed process.
	Consume(t, ctx, a, stream.Subscription{Topic: "crash", Group: "g", Instance: "a"}, handlerInto(r, "a"))
	publishAll(t, ctx, pub, "crash", 8, 5)
	WaitFor(t, 60*time.Second, func() string { return fmt.Sprintf("%d of 40", r.distinct()) }, func() bool { return r.distinct() == 40 })
	_ = a.Close()
	b := newClient(t, h)
	Consume(t, ctx, b, stream.Subscription{Topic: "crash", Group: "g", Instance: "b"}, handlerInto(r, "b"))
	publishAll(t, ctx, pub, "crash", 8, 10) // ids k-0..k-9 repeat 0..4: new ids are 5..9
	WaitFor(t, h.Takeover+60*time.Second, func() string { return fmt.Sprintf("%d of 80 distinct", r.distinct()) },
		func() bool { return r.distinct() == 80 })
}

func testSharing(t *testing.T, h Harness) {
	ctx := testCtx(t)
	pub := newClient(t, h)
	r := &recorder{}
	a, b := newClient(t, h), newClient(t, h)
	Consume(t, ctx, a, stream.Subscription{Topic: "shared", Group: "g", Instance: "a"}, handlerInto(r, "a"))
	Consume(t, ctx, b, stream.Subscription{Topic: "shared", Group: "g", Instance: "b"}, handlerInto(r, "b"))
	const keys = 40
	total := 0
	// Publish over a while, so that the group has time to balance.
	deadline := time.Now().Add(h.Takeover + 5*time.Second)
	for i := 0; time.Now().Before(deadline) || i < 5; i++ {
		for k := 0; k < keys; k++ {
			if err := pub.Publish(ctx, "shared", Msg(fmt.Sprintf("k%d", k), i)); err != nil {
				t.Fatal(err)
			}
			total++
		}
		time.Sleep(100 * time.Millisecond)
	}
	WaitFor(t, 90*time.Second, func() string { return fmt.Sprintf("%d of %d delivered", r.distinct(), total) },
		func() bool { return r.distinct() == total })
	by := map[string]int{}
	for _, x := range r.snapshot() {
		by[x.member]++
	}
	if by["a"] == 0 || by["b"] == 0 {
		t.Fatalf("work was not shared: %v", by)
	}
	checkOrder(t, r.snapshot())
}

func testSeparateGroups(t *testing.T, h Harness) {
	ctx := testCtx(t)
	c := newClient(t, h)
	publishAll(t, ctx, c, "fanout", 5, 10)
	r1, r2 := &recorder{}, &recorder{}
	Consume(t, ctx, newClient(t, h), stream.Subscription{Topic: "fanout", Group: "alerter"}, handlerInto(r1, "1"))
	Consume(t, ctx, newClient(t, h), stream.Subscription{Topic: "fanout", Group: "auditor"}, handlerInto(r2, "2"))
	WaitFor(t, 60*time.Second, func() string { return fmt.Sprintf("groups got %d and %d of 50", r1.distinct(), r2.distinct()) },
		func() bool { return r1.distinct() == 50 && r2.distinct() == 50 })
}

func testStartLatest(t *testing.T, h Harness) {
	ctx := testCtx(t)
	c := newClient(t, h)
	publishAll(t, ctx, c, "latest", 2, 5)
	r := &recorder{}
	ready := make(chan struct{})
	var once sync.Once
	Consume(t, ctx, c, stream.Subscription{Topic: "latest", Group: "late", Start: stream.StartLatest}, func(ctx context.Context, d stream.Delivery) error {
		if d.Key == "probe" {
			once.Do(func() { close(ready) })
			return nil
		}
		r.add(rec{key: d.Key, id: d.ID, data: string(d.Data)})
		return nil
	})
	// Keep publishing probes until one arrives: then the group surely exists.
	deadline := time.After(60 * time.Second)
probe:
	for i := 0; ; i++ {
		if err := c.Publish(ctx, "latest", stream.Message{Key: "probe", ID: fmt.Sprint("probe-", i), Data: []byte("p")}); err != nil {
			t.Fatal(err)
		}
		select {
		case <-ready:
			break probe
		case <-deadline:
			t.Fatal("StartLatest group never received a new message")
		case <-time.After(200 * time.Millisecond):
		}
	}
	if err := c.Publish(ctx, "latest", Msg("new", 99)); err != nil {
		t.Fatal(err)
	}
	WaitFor(t, 60*time.Second, func() string { return "the new message was not delivered" }, func() bool { return r.distinct() >= 1 })
	for _, x := range r.snapshot() {
		if x.key != "new" {
			t.Fatalf("a StartLatest group received history: %+v", x)
		}
	}
}

func testRejects(t *testing.T, h Harness) {
	ctx := testCtx(t)
	c := newClient(t, h)
	big := stream.Message{Key: "k", ID: "big", Data: make([]byte, stream.MaxMessageSize+1)}
	if err := c.Publish(ctx, "limits", big); !errors.Is(err, stream.ErrTooLarge) {
		t.Fatalf("oversize Publish: want ErrTooLarge, got %v", err)
	}
	batch := []stream.Message{Msg("k", 1), big}
	if err := c.PublishBatch(ctx, "limits", batch); !errors.Is(err, stream.ErrTooLarge) {
		t.Fatalf("batch with an oversize message: want ErrTooLarge, got %v", err)
	}
	for _, bad := range []struct {
		topic string
		m     stream.Message
	}{{"no spaces", Msg("k", 1)}, {"", Msg("k", 1)}, {"limits", stream.Message{Key: "", Data: []byte("x")}}} {
		if err := c.Publish(ctx, bad.topic, bad.m); !errors.Is(err, stream.ErrInvalid) {
			t.Errorf("Publish(%q, key %q): want ErrInvalid, got %v", bad.topic, bad.m.Key, err)
		}
	}
	err := c.Consume(ctx, stream.Subscription{Topic: "limits", Group: "bad group"}, func(context.Context, stream.Delivery) error { return nil })
	if !errors.Is(err, stream.ErrInvalid) {
		t.Fatalf("Consume with a bad group: want ErrInvalid, got %v", err)
	}
	// The rejected batch published nothing: only the good message below is delivered.
	if err := c.Publish(ctx, "limits", Msg("after", 1)); err != nil {
		t.Fatal(err)
	}
	r := &recorder{}
	Consume(t, ctx, c, stream.Subscription{Topic: "limits", Group: "g"}, handlerInto(r, "a"))
	WaitFor(t, 60*time.Second, func() string { return "message after the rejects not delivered" }, func() bool { return r.distinct() >= 1 })
	time.Sleep(500 * time.Millisecond)
	ids := []string{}
	for _, x := range r.snapshot() {
		ids = append(ids, x.id)
	}
	sort.Strings(ids)
	if strings.Join(ids, ",") != "after-1" {
		t.Fatalf("rejected messages were published: %v", ids)
	}
}
