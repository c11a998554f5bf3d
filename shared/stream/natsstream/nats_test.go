package natsstream_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/natsstream"
	"github.com/heartline/heartline/shared/stream/natsstream/natstest"
	"github.com/heartline/heartline/shared/stream/streamtest"
)

// checkOrder fails when a key's messages were first delivered out of publish order
// (data is "<key>|<seq>").
func checkOrder(t *testing.T, ds []stream.Delivery) {
	t.Helper()
	last := map[string]int{}
	first := map[string]bool{}
	for _, d := range ds {
		if first[d.ID] {
			continue
		}
		first[d.ID] = true
		_, s, _ := strings.Cut(string(d.Data), "|")
		n, _ := strconv.Atoi(s)
		if p, ok := last[d.Key]; ok && n < p {
			t.Fatalf("key %s: message %d first delivered after %d", d.Key, n, p)
		}
		last[d.Key] = n
	}
}

func jsOf(t *testing.T, url string) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// stored counts the stream messages stored for topic over its partition streams
// (unpacking packs).
func stored(t *testing.T, url, topic string) uint64 {
	t.Helper()
	js := jsOf(t, url)
	ctx := context.Background()
	var n uint64
	for p := 0; p < 16; p++ {
		s, err := js.Stream(ctx, natsstream.StreamName(topic, p))
		if err != nil {
			t.Fatal(err)
		}
		st := s.CachedInfo().State
		for seq := st.FirstSeq; st.Msgs > 0 && seq <= st.LastSeq; seq++ {
			raw, err := s.GetMsg(ctx, seq)
			if errors.Is(err, jetstream.ErrMsgNotFound) {
				continue
			}
			if err != nil {
				t.Fatal(err)
			}
			msgs, err := natsstream.Unpack(raw.Header, raw.Data)
			if err != nil {
				t.Fatal(err)
			}
			n += uint64(len(msgs))
		}
	}
	return n
}

func TestDuplicateMessageIDStoredOnce(t *testing.T) {
	srv := natstest.Start(t)
	b := newBackend(t, testOptions(t, srv.ClientURL()))
	ctx := context.Background()
	m := stream.Message{Key: "shard-1", ID: "hb-1", Data: []byte("x")}
	for i := 0; i < 3; i++ {
		if err := b.Publish(ctx, "dedup", m); err != nil {
			t.Fatal(err)
		}
	}
	// Also within a batch and from another client.
	if err := b.PublishBatch(ctx, "dedup", []stream.Message{m, streamtest.Msg("shard-2", 1), m}); err != nil {
		t.Fatal(err)
	}
	if err := newBackend(t, testOptions(t, srv.ClientURL())).Publish(ctx, "dedup", m); err != nil {
		t.Fatal(err)
	}
	if n := stored(t, srv.ClientURL(), "dedup"); n != 2 {
		t.Fatalf("stream holds %d messages, want 2 (one per distinct id)", n)
	}
	c := &streamtest.Collector{}
	streamtest.Consume(t, context.Background(), b, stream.Subscription{Topic: "dedup", Group: "g"}, c.Handle)
	streamtest.WaitFor(t, 60*time.Second, func() string { return fmt.Sprint(c.Distinct(), " of 2") }, func() bool { return c.Distinct() == 2 })
	time.Sleep(300 * time.Millisecond)
	if n := len(c.Snapshot()); n != 2 {
		t.Fatalf("%d deliveries, want 2", n)
	}
}

// Keys and ids that are not valid header text (line breaks, blanks at the ends,
// non-ASCII) arrive unchanged, and de-duplication still works on such ids.
func TestArbitraryKeysAndIDsRoundTrip(t *testing.T) {
	srv := natstest.Start(t)
	b := newBackend(t, testOptions(t, srv.ClientURL()))
	ctx := context.Background()
	odd := []stream.Message{
		{Key: "a\r\nX-Evil: 1", ID: "id\r\n1", Data: []byte("1")},
		{Key: " padded ", ID: " id 2 ", Data: []byte("2")},
		{Key: "ключ", ID: "ид-3", Data: []byte("3")},
		{Key: "plain", ID: "", Data: nil},
	}
	if err := b.PublishBatch(ctx, "odd", odd); err != nil {
		t.Fatal(err)
	}
	if err := b.Publish(ctx, "odd", odd[0]); err != nil { // a duplicate
		t.Fatal(err)
	}
	c := &streamtest.Collector{}
	streamtest.Consume(t, context.Background(), b, stream.Subscription{Topic: "odd", Group: "g"}, c.Handle)
	streamtest.WaitFor(t, 60*time.Second, func() string { return fmt.Sprint(len(c.Snapshot()), " of 4") }, func() bool { return len(c.Snapshot()) >= 4 })
	time.Sleep(300 * time.Millisecond)
	got := map[string]stream.Delivery{}
	for _, d := range c.Snapshot() {
		if _, dup := got[d.Key]; dup {
			t.Fatalf("key %q delivered twice: the duplicate id was not dropped", d.Key)
		}
		got[d.Key] = d
	}
	for _, m := range odd {
		d, ok := got[m.Key]
		if !ok {
			t.Fatalf("key %q not delivered intact; got %v", m.Key, got)
		}
		if d.ID != m.ID || string(d.Data) != string(m.Data) {
			t.Fatalf("delivery %+v, published %+v", d, m)
		}
		if d.Partition != strconv.Itoa(natsstream.Partition(m.Key, 16)) || d.Position == "" || d.Published.IsZero() {
			t.Fatalf("delivery metadata %+v", d)
		}
	}
}

// Many clients creating the same topic's stream and the same group's consumers at
// once all succeed, and end up with one stream and one consumer per partition.
func TestConcurrentCreationIsIdempotent(t *testing.T) {
	srv := natstest.Start(t)
	ctx := context.Background()
	const clients = 6
	c := &streamtest.Collector{}
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	for i := 0; i < clients; i++ {
		b := newBackend(t, testOptions(t, srv.ClientURL()))
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			streamtest.Consume(t, context.Background(), b, stream.Subscription{Topic: "race", Group: "g", Instance: fmt.Sprint("m", i)}, c.Handle)
			errs <- b.Publish(ctx, "race", streamtest.Msg(fmt.Sprint("k", i), 0))
		}(i)
	}
	wg.Wait()
	for i := 0; i < clients; i++ {
		if err := <-errs; err != nil {
			t.Fatalf("Publish: %v", err)
		}
	}
	streamtest.WaitFor(t, 60*time.Second, func() string { return fmt.Sprint(c.Distinct(), " of ", clients) }, func() bool { return c.Distinct() == clients })
	js := jsOf(t, srv.ClientURL())
	var streams []string
	for n := range js.StreamNames(ctx).Name() {
		streams = append(streams, n)
	}
	sort.Strings(streams)
	want := []string{"KV_heartline"}
	for p := 0; p < 16; p++ {
		want = append(want, natsstream.StreamName("race", p))
	}
	sort.Strings(want)
	if fmt.Sprint(streams) != fmt.Sprint(want) {
		t.Fatalf("streams %v, want %v", streams, want)
	}
	for p := 0; p < 16; p++ {
		s, err := js.Stream(ctx, natsstream.StreamName("race", p))
		if err != nil {
			t.Fatal(err)
		}
		if n := s.CachedInfo().State.Consumers; n != 1 {
			t.Fatalf("partition %d has %d consumers, want 1", p, n)
		}
	}
}

// A publisher keeps retrying while the server is down and succeeds when it is back (same
// port, same store); a consumer resumes without losing anything, in order.
func TestPublishRetriesAcrossServerRestart(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.StartIn(t, dir, -1)
	port := srv.Port()
	o := testOptions(t, srv.ClientURL())
	o.PublishTimeout = 500 * time.Millisecond
	pub := newBackend(t, o)
	cons := newBackend(t, testOptions(t, srv.ClientURL()))
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	c := &streamtest.Collector{}
	stop := streamtest.Consume(t, context.Background(), cons, stream.Subscription{Topic: "restart", Group: "g"}, c.Handle)

	const keys, rounds = 8, 60
	published := make(chan int, rounds)
	pubErr := make(chan error, 1)
	go func() {
		for i := 0; i < rounds; i++ {
			var err error
			if i%2 == 0 {
				var batch []stream.Message
				for k := 0; k < keys; k++ {
					batch = append(batch, streamtest.Msg(fmt.Sprint("k", k), i))
				}
				err = pub.PublishBatch(ctx, "restart", batch)
			} else {
				for k := 0; k < keys && err == nil; k++ {
					err = pub.Publish(ctx, "restart", streamtest.Msg(fmt.Sprint("k", k), i))
				}
			}
			if err != nil {
				pubErr <- err
				return
			}
			published <- i
			time.Sleep(10 * time.Millisecond)
		}
		pubErr <- nil
	}()
	// Restart the server while publishing goes on.
	for i := 0; i < 10; i++ {
		<-published
	}
	srv.Shutdown()
	time.Sleep(time.Second) // the outage: publishers must keep retrying through it
	natstest.StartIn(t, dir, port)
	if err := <-pubErr; err != nil {
		t.Fatalf("publishing across the restart: %v", err)
	}
	total := keys * rounds
	streamtest.WaitFor(t, 90*time.Second, func() string { return fmt.Sprint(c.Distinct(), " of ", total) }, func() bool { return c.Distinct() == total })
	checkOrder(t, c.Snapshot())
	// Stop the clients while the second server still runs (cleanups stop it first).
	stop()
	_ = pub.Close()
	_ = cons.Close()
}

// Messages are stored on disk: they survive a server restart, and so does the
// group's position.
func TestMessagesSurviveServerRestart(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.StartIn(t, dir, -1)
	port := srv.Port()
	url := srv.ClientURL()
	ctx := context.Background()
	b := newBackend(t, testOptions(t, url))
	for i := 0; i < 20; i++ {
		if err := b.Publish(ctx, "durable", streamtest.Msg("k", i)); err != nil {
			t.Fatal(err)
		}
	}
	c := &streamtest.Collector{}
	stop := streamtest.Consume(t, context.Background(), b, stream.Subscription{Topic: "durable", Group: "g"}, func(ctx context.Context, d stream.Delivery) error {
		if n, _ := strconv.Atoi(strings.TrimPrefix(d.ID, "k-")); n >= 10 { // handle k-0..k-9 only
			<-ctx.Done()
			return ctx.Err()
		}
		return c.Handle(ctx, d)
	})
	streamtest.WaitFor(t, 60*time.Second, func() string { return fmt.Sprint(c.Distinct(), " of 10") }, func() bool { return c.Distinct() == 10 })
	stop()
	_ = b.Close()
	srv.Shutdown()
	natstest.StartIn(t, dir, port)
	b2 := newBackend(t, testOptions(t, url))
	for i := 20; i < 30; i++ {
		if err := b2.Publish(ctx, "durable", streamtest.Msg("k", i)); err != nil {
			t.Fatal(err)
		}
	}
	stop = streamtest.Consume(t, context.Background(), b2, stream.Subscription{Topic: "durable", Group: "g"}, c.Handle)
	streamtest.WaitFor(t, 60*time.Second, func() string { return fmt.Sprint(c.Distinct(), " of 30") }, func() bool { return c.Distinct() == 30 })
	stop()
	_ = b2.Close()
	ds := c.Snapshot()
	checkOrder(t, ds)
	for _, d := range ds[10:] {
		if n, _ := strconv.Atoi(strings.TrimPrefix(d.ID, "k-")); n < 10 {
			t.Fatalf("message %s handled again after the restart: the group position was lost", d.ID)
		}
	}
}

// A partition whose consumer still has messages outstanding at someone else (here a
// raw JetStream client that fetched and never acknowledged them; in production a
// crashed member) starts again at the first unacknowledged message, in order, without
// waiting for the ack wait to run out.
func TestTakeoverRedeliversOutstandingInOrder(t *testing.T) {
	srv := natstest.Start(t)
	ctx := context.Background()
	o := testOptions(t, srv.ClientURL())
	o.Partitions = 1
	o.LeaseTTL = 10 * time.Minute // ack wait 5 min: expiry cannot be what redelivers
	b := newBackend(t, o)
	for i := 0; i < 10; i++ {
		if err := b.Publish(ctx, "outstanding", streamtest.Msg("k", i)); err != nil {
			t.Fatal(err)
		}
	}
	// Create the group's consumers, then stop.
	probe := &streamtest.Collector{}
	stop := streamtest.Consume(t, context.Background(), b, stream.Subscription{Topic: "outstanding", Group: "g"}, probe.Handle)
	streamtest.WaitFor(t, 60*time.Second, func() string { return "group not created" }, func() bool { return probe.Distinct() == 10 })
	stop()
	for i := 10; i < 20; i++ {
		if err := b.Publish(ctx, "outstanding", streamtest.Msg("k", i)); err != nil {
			t.Fatal(err)
		}
	}
	// A "crashed" holder fetches k-10..k-14 and never acknowledges them.
	js := jsOf(t, srv.ClientURL())
	cons, err := js.Consumer(ctx, natsstream.StreamName("outstanding", 0), natsstream.ConsumerName("g", 0))
	if err != nil {
		t.Fatal(err)
	}
	batch, err := cons.Fetch(5, jetstream.FetchMaxWait(5*time.Second))
	if err != nil {
		t.Fatal(err)
	}
	var held []string
	for m := range batch.Messages() {
		held = append(held, string(m.Data()))
	}
	if len(held) != 5 || held[0] != "k|10" {
		t.Fatalf("raw fetch got %v", held)
	}
	c := &streamtest.Collector{}
	streamtest.Consume(t, context.Background(), b, stream.Subscription{Topic: "outstanding", Group: "g"}, c.Handle)
	streamtest.WaitFor(t, 60*time.Second, func() string { return fmt.Sprint(c.Distinct(), " of 10") }, func() bool { return c.Distinct() == 10 })
	ds := c.Snapshot()
	if string(ds[0].Data) != "k|10" {
		t.Fatalf("first delivery after takeover is %s, want k|10", ds[0].Data)
	}
	checkOrder(t, ds)
}

func TestCloseStopsConsumersAndRefusesUse(t *testing.T) {
	srv := natstest.Start(t)
	b := newBackend(t, testOptions(t, srv.ClientURL()))
	ctx := context.Background()
	done := make(chan error, 1)
	go func() {
		done <- b.Consume(ctx, stream.Subscription{Topic: "closing", Group: "g"}, func(context.Context, stream.Delivery) error { return nil })
	}()
	time.Sleep(200 * time.Millisecond)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Consume after Close: %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Consume did not return after Close")
	}
	if err := b.Publish(ctx, "closing", streamtest.Msg("k", 1)); !errors.Is(err, stream.ErrClosed) {
		t.Fatalf("Publish after Close: want ErrClosed, got %v", err)
	}
	if err := b.Consume(ctx, stream.Subscription{Topic: "closing", Group: "g"}, nil); !errors.Is(err, stream.ErrClosed) {
		t.Fatalf("Consume after Close: want ErrClosed, got %v", err)
	}
}

// A batch published while the server is down waits for it, then stores every message
// once and in order per key.
func TestPublishBatchWaitsForRestartedServer(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.StartIn(t, dir, -1)
	port := srv.Port()
	o := testOptions(t, srv.ClientURL())
	o.PublishTimeout = 300 * time.Millisecond
	pub := newBackend(t, o)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if err := pub.Publish(ctx, "outage", streamtest.Msg("warmup", 0)); err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()
	var batch []stream.Message
	for i := 0; i < 50; i++ {
		for k := 0; k < 4; k++ {
			batch = append(batch, streamtest.Msg(fmt.Sprint("k", k), i))
		}
	}
	done := make(chan error, 1)
	go func() { done <- pub.PublishBatch(ctx, "outage", batch) }()
	select {
	case err := <-done:
		t.Fatalf("PublishBatch returned while the server was down: %v", err)
	case <-time.After(time.Second):
	}
	srv = natstest.StartIn(t, dir, port)
	if err := <-done; err != nil {
		t.Fatalf("PublishBatch across the outage: %v", err)
	}
	if n := stored(t, srv.ClientURL(), "outage"); n != uint64(len(batch)+1) {
		t.Fatalf("stream holds %d messages, want %d: duplicates or losses", n, len(batch)+1)
	}
	c := &streamtest.Collector{}
	stop := streamtest.Consume(t, context.Background(), pub, stream.Subscription{Topic: "outage", Group: "g"}, c.Handle)
	streamtest.WaitFor(t, 60*time.Second, func() string { return fmt.Sprint(c.Distinct(), " of ", len(batch)+1) },
		func() bool { return c.Distinct() == len(batch)+1 })
	checkOrder(t, c.Snapshot())
	stop()
	_ = pub.Close()
}

// A member whose connection dies under it (the stand-in for a crashed process: it
// cannot release its leases nor acknowledge what it prefetched) loses its partitions
// to the other member after the lease TTL; nothing is lost and order holds.
func TestCrashedMemberWithPrefetchedMessages(t *testing.T) {
	srv := natstest.Start(t)
	ctx := context.Background()
	nc, err := nats.Connect(srv.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	o := testOptions(t, "")
	o.Conn = nc
	o.Partitions = 2
	a := newBackend(t, o)
	pub := newBackend(t, testOptions(t, srv.ClientURL()))
	const keys, perKey = 4, 100
	var batch []stream.Message
	for i := 0; i < perKey; i++ {
		for k := 0; k < keys; k++ {
			batch = append(batch, streamtest.Msg(fmt.Sprint("k", k), i))
		}
	}
	if err := pub.PublishBatch(ctx, "crash2", batch); err != nil {
		t.Fatal(err)
	}
	c := &streamtest.Collector{}
	aDone := make(chan error, 1)
	actx, acancel := context.WithCancel(ctx)
	defer acancel()
	go func() {
		aDone <- a.Consume(actx, stream.Subscription{Topic: "crash2", Group: "g", Instance: "a"}, func(ctx context.Context, d stream.Delivery) error {
			time.Sleep(time.Millisecond) // slow enough to have a prefetch backlog
			return c.Handle(ctx, d)
		})
	}()
	streamtest.WaitFor(t, 60*time.Second, func() string { return fmt.Sprint(c.Distinct(), " handled by a") }, func() bool { return c.Distinct() >= 40 })
	nc.Close() // the crash
	select {
	case err := <-aDone:
		if !errors.Is(err, stream.ErrClosed) {
			t.Fatalf("Consume of a member whose connection closed: want ErrClosed, got %v", err)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Consume did not end after its connection closed")
	}
	b := newBackend(t, testOptions(t, srv.ClientURL()))
	stop := streamtest.Consume(t, context.Background(), b, stream.Subscription{Topic: "crash2", Group: "g", Instance: "b"}, c.Handle)
	total := keys * perKey
	streamtest.WaitFor(t, 90*time.Second, func() string { return fmt.Sprint(c.Distinct(), " of ", total) }, func() bool { return c.Distinct() == total })
	checkOrder(t, c.Snapshot())
	stop()
}

// A consumer busy with a backlog while the server restarts loses nothing and keeps
// order: messages the server sent just before it stopped (and the client never got)
// come back before anything newer.
func TestConsumerOrderAcrossServerRestart(t *testing.T) {
	dir := t.TempDir()
	srv := natstest.StartIn(t, dir, -1)
	port := srv.Port()
	o := testOptions(t, srv.ClientURL())
	o.Partitions = 2
	pub := newBackend(t, o)
	ctx := context.Background()
	const keys, perKey = 4, 1500
	var batch []stream.Message
	for i := 0; i < perKey; i++ {
		for k := 0; k < keys; k++ {
			batch = append(batch, streamtest.Msg(fmt.Sprint("k", k), i))
		}
	}
	if err := pub.PublishBatch(ctx, "busy", batch); err != nil {
		t.Fatal(err)
	}
	con := newBackend(t, testOptions(t, srv.ClientURL()))
	c := &streamtest.Collector{}
	stop := streamtest.Consume(t, context.Background(), con, stream.Subscription{Topic: "busy", Group: "g"}, func(ctx context.Context, d stream.Delivery) error {
		time.Sleep(100 * time.Microsecond)
		return c.Handle(ctx, d)
	})
	streamtest.WaitFor(t, 60*time.Second, func() string { return fmt.Sprint(c.Distinct(), " handled") }, func() bool { return c.Distinct() >= 1000 })
	srv.Shutdown()
	time.Sleep(300 * time.Millisecond)
	natstest.StartIn(t, dir, port)
	total := keys * perKey
	streamtest.WaitFor(t, 120*time.Second, func() string { return fmt.Sprint(c.Distinct(), " of ", total) }, func() bool { return c.Distinct() == total })
	checkOrder(t, c.Snapshot())
	stop()
	_ = con.Close()
	_ = pub.Close()
}

// The embedded server serves other processes on its listen address: a child process
// (this test binary, re-executed) publishes through it by URL.
func TestEmbeddedServesOtherProcesses(t *testing.T) {
	if url := os.Getenv("HL_TEST_CHILD_NATS_URL"); url != "" {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		b, err := natsstream.New(ctx, natsstream.Options{URL: url, Name: "child"})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		if err := b.Publish(ctx, "xproc", stream.Message{Key: "k", ID: "from-child", Data: []byte(fmt.Sprint(os.Getpid()))}); err != nil {
			t.Fatal(err)
		}
		return
	}
	srv := natstest.Start(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestEmbeddedServesOtherProcesses$")
	cmd.Env = append(os.Environ(), "HL_TEST_CHILD_NATS_URL="+srv.ClientURL())
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child process: %v\n%s", err, out)
	}
	b := newBackend(t, testOptions(t, srv.ClientURL()))
	c := &streamtest.Collector{}
	streamtest.Consume(t, context.Background(), b, stream.Subscription{Topic: "xproc", Group: "g"}, c.Handle)
	streamtest.WaitFor(t, 60*time.Second, func() string { return "the child's message did not arrive" }, func() bool { return c.Distinct() == 1 })
	if d := c.Snapshot()[0]; d.ID != "from-child" || string(d.Data) == fmt.Sprint(os.Getpid()) {
		t.Fatalf("delivery %+v", d)
	}
}

// An ephemeral group's consumers are removed by the server soon after the subscription
// ends; a durable group's stay.
func TestEphemeralGroupIsRemoved(t *testing.T) {
	srv := natstest.Start(t)
	ctx := context.Background()
	o := testOptions(t, srv.ClientURL())
	o.Partitions = 1
	o.EphemeralInactive = time.Second
	b := newBackend(t, o)
	if err := b.Publish(ctx, "watch", streamtest.Msg("k", 0)); err != nil {
		t.Fatal(err)
	}
	for _, ephemeral := range []bool{true, false} {
		c := &streamtest.Collector{}
		stop := streamtest.Consume(t, context.Background(), b, stream.Subscription{Topic: "watch", Group: fmt.Sprint("g-", ephemeral), Ephemeral: ephemeral}, c.Handle)
		streamtest.WaitFor(t, 60*time.Second, func() string { return "nothing delivered" }, func() bool { return c.Distinct() == 1 })
		stop()
	}
	js := jsOf(t, srv.ClientURL())
	consumer := func(group string) error {
		_, err := js.Consumer(ctx, natsstream.StreamName("watch", 0), natsstream.ConsumerName(group, 0))
		return err
	}
	streamtest.WaitFor(t, 60*time.Second, func() string { return "the ephemeral group's consumer is still there" }, func() bool {
		return errors.Is(consumer("g-true"), jetstream.ErrConsumerNotFound)
	})
	if err := consumer("g-false"); err != nil {
		t.Fatalf("durable group's consumer: %v", err)
	}
}
