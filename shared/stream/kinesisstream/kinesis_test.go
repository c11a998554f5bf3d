package kinesisstream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/kinesisstream"
	"github.com/heartline/heartline/shared/stream/streamtest"
)

func seqMsg(key string, i, size int) stream.Message {
	data := []byte(fmt.Sprintf("%s|%d|", key, i))
	if size > len(data) {
		data = append(data, bytes.Repeat([]byte{'x'}, size-len(data))...)
	}
	return stream.Message{Key: key, ID: fmt.Sprintf("%s-%d", key, i), Data: data}
}

func seqOf(d stream.Delivery) int {
	parts := strings.SplitN(string(d.Data), "|", 3)
	n, _ := strconv.Atoi(parts[1])
	return n
}

// checkExact fails unless every published message was delivered with exactly its key,
// id and data, and each key's first deliveries came in publish order.
func checkExact(t *testing.T, published []stream.Message, got []stream.Delivery) {
	t.Helper()
	want := map[string]stream.Message{}
	for _, m := range published {
		want[m.ID] = m
	}
	seen := map[string]bool{}
	last := map[string]int{}
	for _, d := range got {
		m, ok := want[d.ID]
		if !ok {
			t.Fatalf("delivered an unknown message %q", d.ID)
		}
		if d.Key != m.Key || !bytes.Equal(d.Data, m.Data) {
			t.Fatalf("message %s came back changed: key %q, %d bytes", d.ID, d.Key, len(d.Data))
		}
		if seen[d.ID] {
			continue
		}
		seen[d.ID] = true
		s := seqOf(d)
		if p, ok := last[d.Key]; ok && s < p {
			t.Fatalf("key %s: message %d delivered after %d", d.Key, s, p)
		}
		last[d.Key] = s
	}
	if len(seen) != len(want) {
		t.Fatalf("%d of %d messages delivered", len(seen), len(want))
	}
}

// checkCalls verifies every PutRecords call the injector saw was within Kinesis's
// limits and carried at most one record per key.
func checkCalls(t *testing.T, puts []putRequest) {
	t.Helper()
	for i, p := range puts {
		total := 0
		keys := map[string]bool{}
		for _, r := range p.Records {
			n := len(r.Data) + len(r.PartitionKey)
			if n > 1<<20 {
				t.Fatalf("call %d: a record of %d bytes, over 1 MiB", i, n)
			}
			if keys[r.PartitionKey] {
				t.Fatalf("call %d: two records of key %q in one call", i, r.PartitionKey)
			}
			keys[r.PartitionKey] = true
			total += n
		}
		if len(p.Records) > 500 || total > 5<<20 {
			t.Fatalf("call %d: %d records, %d bytes: over PutRecords' limits", i, len(p.Records), total)
		}
	}
}

func TestPutRecordsSplitsWithinLimits(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t, 2*time.Minute)
	b := newBackend(t, fastOptions(t, e.client, e.prefix, e.store))
	var all []stream.Message

	// 600 keys: 500 records, then 100.
	var many []stream.Message
	for i := 0; i < 600; i++ {
		many = append(many, seqMsg(fmt.Sprintf("k%03d", i), 0, 64))
	}
	e.inj.reset()
	if err := b.PublishBatch(ctx, "split", many); err != nil {
		t.Fatal(err)
	}
	puts := e.inj.putRequests()
	checkCalls(t, puts)
	if len(puts) != 2 || len(puts[0].Records) != 500 || len(puts[1].Records) != 100 {
		t.Fatalf("600 keys: want calls of 500 and 100 records, got %d calls", len(puts))
	}
	all = append(all, many...)

	// 12 keys x 600 KiB = 7.2 MiB: more than one call.
	var big []stream.Message
	for i := 0; i < 12; i++ {
		big = append(big, seqMsg(fmt.Sprintf("big%02d", i), 0, 600<<10))
	}
	e.inj.reset()
	if err := b.PublishBatch(ctx, "split", big); err != nil {
		t.Fatal(err)
	}
	puts = e.inj.putRequests()
	checkCalls(t, puts)
	if len(puts) < 2 {
		t.Fatalf("7.2 MiB went out in %d call(s)", len(puts))
	}
	all = append(all, big...)

	// One key, 2 MiB in 4 messages: several records, one per call, in order. Small
	// messages of one key share a record.
	var oneKey []stream.Message
	for i := 0; i < 4; i++ {
		oneKey = append(oneKey, seqMsg("same", i, 512<<10))
	}
	for i := 4; i < 40; i++ {
		oneKey = append(oneKey, seqMsg("same", i, 100))
	}
	e.inj.reset()
	if err := b.PublishBatch(ctx, "split", oneKey); err != nil {
		t.Fatal(err)
	}
	puts = e.inj.putRequests()
	checkCalls(t, puts)
	if len(puts) < 2 || len(puts) > 4 {
		t.Fatalf("one key with 2 MiB: want 2-4 calls (records up to 1 MiB), got %d", len(puts))
	}
	all = append(all, oneKey...)

	c := &streamtest.Collector{}
	streamtest.Consume(t, ctx, b, stream.Subscription{Topic: "split", Group: "g"}, c.Handle)
	streamtest.WaitFor(t, 90*time.Second, func() string { return fmt.Sprintf("%d of %d delivered", c.Distinct(), len(all)) },
		func() bool { return c.Distinct() == len(all) })
	checkExact(t, all, c.Snapshot())
}

func TestPartialFailureResendsOnlyFailedRecords(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t, 2*time.Minute)
	b := newBackend(t, fastOptions(t, e.client, e.prefix, e.store))
	var msgs []stream.Message
	for i := 0; i < 3; i++ {
		for _, k := range []string{"a", "b", "c", "d"} {
			msgs = append(msgs, seqMsg(k, i, 32))
		}
	}
	// Key "heavy" needs three records: its first fails once; the later two must not
	// go out before it.
	for i := 0; i < 3; i++ {
		msgs = append(msgs, seqMsg("heavy", i, 700<<10))
	}
	if err := b.Publish(ctx, "partial", seqMsg("warmup", 0, 1)); err != nil { // creates the stream
		t.Fatal(err)
	}
	e.inj.reset()
	e.inj.setPartial(func(call, i int, pe putEntry) string {
		if call == 1 && (pe.PartitionKey == "b" || pe.PartitionKey == "d" || pe.PartitionKey == "heavy") {
			return "ProvisionedThroughputExceededException"
		}
		if call == 2 && pe.PartitionKey == "d" {
			return "InternalFailure"
		}
		return ""
	})
	if err := b.PublishBatch(ctx, "partial", msgs); err != nil {
		t.Fatal(err)
	}
	puts := e.inj.putRequests()
	checkCalls(t, puts)
	keysOf := func(p putRequest) string {
		var ks []string
		for _, r := range p.Records {
			ks = append(ks, r.PartitionKey)
		}
		return strings.Join(ks, ",")
	}
	var got []string
	for _, p := range puts {
		got = append(got, keysOf(p))
	}
	// Call 1: one record per key. Call 2: only the failed ones (b, d, heavy's first).
	// Call 3: d again, and heavy's second record. Call 4: heavy's third.
	want := []string{"a,b,c,d,heavy", "b,d,heavy", "d,heavy", "heavy"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("PutRecords calls by key: %v, want %v", got, want)
	}
	if !bytes.Equal(puts[1].Records[0].Data, puts[0].Records[1].Data) {
		t.Fatal("the resent record of key b differs from the failed one")
	}
	c := &streamtest.Collector{}
	streamtest.Consume(t, ctx, b, stream.Subscription{Topic: "partial", Group: "g"}, c.Handle)
	all := append([]stream.Message{seqMsg("warmup", 0, 1)}, msgs...)
	streamtest.WaitFor(t, 60*time.Second, func() string { return fmt.Sprintf("%d of %d delivered", c.Distinct(), len(all)) },
		func() bool { return c.Distinct() == len(all) })
	checkExact(t, all, c.Snapshot())
	if n := len(c.Snapshot()); n != len(all) {
		t.Fatalf("%d deliveries of %d messages: records that succeeded were sent again", n, len(all))
	}
}

func TestThrottlingBacksOffAndPermanentErrorsReturnAtOnce(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t, time.Minute)
	b := newBackend(t, fastOptions(t, e.client, e.prefix, e.store))
	if err := b.Publish(ctx, "throttle", seqMsg("k", 0, 10)); err != nil {
		t.Fatal(err)
	}
	e.inj.reset()
	e.inj.fail("PutRecords", "ProvisionedThroughputExceededException", "ProvisionedThroughputExceededException", "InternalFailure", "ProvisionedThroughputExceededException")
	if err := b.Publish(ctx, "throttle", seqMsg("k", 1, 10)); err != nil {
		t.Fatalf("Publish through throttling: %v", err)
	}
	if n := e.inj.count("PutRecords"); n != 5 {
		t.Fatalf("%d PutRecords calls, want 4 refused and 1 accepted", n)
	}
	e.inj.reset()
	e.inj.fail("PutRecords", "InvalidArgumentException")
	if err := b.Publish(ctx, "throttle", seqMsg("k", 2, 10)); !errors.Is(err, stream.ErrInvalid) {
		t.Fatalf("want ErrInvalid at once, got %v", err)
	}
	if n := e.inj.count("PutRecords"); n != 1 {
		t.Fatalf("a permanent error was retried: %d calls", n)
	}
	// A cancelled context ends the retries.
	e.inj.fail("PutRecords", "ProvisionedThroughputExceededException", "ProvisionedThroughputExceededException",
		"ProvisionedThroughputExceededException", "ProvisionedThroughputExceededException", "ProvisionedThroughputExceededException")
	short, cancel := context.WithTimeout(ctx, 30*time.Millisecond)
	defer cancel()
	if err := b.Publish(short, "throttle", seqMsg("k", 3, 10)); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("throttled until the deadline: want DeadlineExceeded, got %v", err)
	}
	// Without Create, a missing stream is a clear error.
	o := fastOptions(t, e.client, e.prefix+"-nocreate", e.store)
	o.Create = false
	nc := newBackend(t, o)
	if err := nc.Publish(ctx, "missing", seqMsg("k", 0, 10)); !errors.Is(err, kinesisstream.ErrStreamNotFound) {
		t.Fatalf("want ErrStreamNotFound, got %v", err)
	}
}

func TestExpiredIteratorIsRenewedFromLastRecord(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t, 2*time.Minute)
	o := fastOptions(t, e.client, e.prefix, e.store)
	o.ShardCount, o.BatchSize = 1, 5
	b := newBackend(t, o)
	var msgs []stream.Message
	for i := 0; i < 30; i++ {
		m := seqMsg("k", i, 20)
		msgs = append(msgs, m)
		if err := b.Publish(ctx, "expiry", m); err != nil {
			t.Fatal(err)
		}
	}
	c := &streamtest.Collector{}
	injected := false
	var mu sync.Mutex
	streamtest.Consume(t, ctx, b, stream.Subscription{Topic: "expiry", Group: "g"}, func(ctx context.Context, d stream.Delivery) error {
		mu.Lock()
		defer mu.Unlock()
		if seqOf(d) == 7 && !injected {
			injected = true
			e.inj.fail("GetRecords", "ExpiredIteratorException", "ProvisionedThroughputExceededException", "ExpiredIteratorException")
		}
		return c.Handle(ctx, d)
	})
	streamtest.WaitFor(t, 60*time.Second, func() string { return fmt.Sprintf("%d of %d delivered", c.Distinct(), len(msgs)) },
		func() bool { return c.Distinct() == len(msgs) })
	checkExact(t, msgs, c.Snapshot())
	if n := len(c.Snapshot()); n != len(msgs) {
		t.Fatalf("%d deliveries of %d messages: the renewed iterator did not start after the last processed record", n, len(msgs))
	}
	if n := e.inj.count("GetShardIterator"); n < 3 {
		t.Fatalf("GetShardIterator called %d times: want the first plus 2 renewals", n)
	}
}

func TestCheckpointResumesInsideARecord(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t, 2*time.Minute)
	o := fastOptions(t, e.client, e.prefix, e.store)
	o.ShardCount = 1
	var msgs []stream.Message
	for i := 0; i < 20; i++ {
		msgs = append(msgs, seqMsg("k", i, 10))
	}
	a := newBackend(t, o)
	if err := a.PublishBatch(ctx, "resume", msgs); err != nil { // one record
		t.Fatal(err)
	}
	first := &streamtest.Collector{}
	blocked := make(chan struct{})
	stopA := streamtest.Consume(t, ctx, a, stream.Subscription{Topic: "resume", Group: "g", Instance: "a"}, func(ctx context.Context, d stream.Delivery) error {
		if seqOf(d) == 7 {
			close(blocked)
			<-ctx.Done() // stopped while message 7 is in flight
			return ctx.Err()
		}
		return first.Handle(ctx, d)
	})
	select {
	case <-blocked:
	case <-ctx.Done():
		t.Fatal("message 7 never reached the handler")
	}
	stopA()
	_ = a.Close()
	ent, err := e.store.Get(ctx, kinesisstream.CheckpointKey("resume", "g", "shardId-000000000000"))
	if err != nil {
		t.Fatal(err)
	}
	var cp kinesisstream.Checkpoint
	if err := json.Unmarshal(ent.Value, &cp); err != nil || cp.Seq == "" || cp.Next != 7 || cp.Owner != "a" {
		t.Fatalf("checkpoint after the stop: %s (%v): want the record with next=7", ent.Value, err)
	}
	b := newBackend(t, o)
	second := &streamtest.Collector{}
	streamtest.Consume(t, ctx, b, stream.Subscription{Topic: "resume", Group: "g", Instance: "b"}, second.Handle)
	streamtest.WaitFor(t, 60*time.Second, func() string { return fmt.Sprintf("%d of 13 delivered after the restart", second.Distinct()) },
		func() bool { return second.Distinct() == 13 })
	checkExact(t, msgs, append(first.Snapshot(), second.Snapshot()...))
	if n := len(first.Snapshot()) + len(second.Snapshot()); n != 20 {
		t.Fatalf("%d deliveries for 20 messages: the restart did not resume exactly", n)
	}
}

func TestStartLatestRestartDoesNotSkip(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t, 2*time.Minute)
	o := fastOptions(t, e.client, e.prefix, e.store)
	o.ShardCount = 1
	b := newBackend(t, o)
	if err := b.Publish(ctx, "late", seqMsg("old", 0, 5)); err != nil {
		t.Fatal(err)
	}
	sub := stream.Subscription{Topic: "late", Group: "watch", Start: stream.StartLatest}
	c := &streamtest.Collector{}
	stop := streamtest.Consume(t, ctx, b, sub, c.Handle)
	key := kinesisstream.CheckpointKey("late", "watch", "shardId-000000000000")
	streamtest.WaitFor(t, 30*time.Second, func() string { return "the StartLatest group recorded no starting point" }, func() bool {
		_, err := e.store.Get(ctx, key)
		return err == nil
	})
	stop()
	// Published while the group is down: a restart must not skip it.
	m := seqMsg("new", 1, 5)
	if err := b.Publish(ctx, "late", m); err != nil {
		t.Fatal(err)
	}
	streamtest.Consume(t, ctx, b, sub, c.Handle)
	streamtest.WaitFor(t, 60*time.Second, func() string { return "the message published during the downtime was not delivered" },
		func() bool { return c.Distinct() == 1 })
	if d := c.Snapshot()[0]; d.ID != m.ID {
		t.Fatalf("a StartLatest group received %s", d.ID)
	}
}

func TestForeignRecordIsDeliveredRaw(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t, time.Minute)
	b := newBackend(t, fastOptions(t, e.client, e.prefix, e.store))
	if err := b.Publish(ctx, "mixed", seqMsg("k", 0, 5)); err != nil {
		t.Fatal(err)
	}
	if _, err := e.client.PutRecord(ctx, &kinesis.PutRecordInput{StreamName: aws.String(b.StreamName("mixed")),
		PartitionKey: aws.String("k"), Data: []byte(`{"written":"by something else"}`)}); err != nil {
		t.Fatal(err)
	}
	c := &streamtest.Collector{}
	streamtest.Consume(t, ctx, b, stream.Subscription{Topic: "mixed", Group: "g"}, c.Handle)
	streamtest.WaitFor(t, 30*time.Second, func() string { return fmt.Sprintf("%d of 2 delivered", len(c.Snapshot())) }, func() bool { return len(c.Snapshot()) == 2 })
	raw := c.Snapshot()[1]
	if string(raw.Data) != `{"written":"by something else"}` || raw.Key != "k" || raw.ID != "" {
		t.Fatalf("foreign record delivered as %+v", raw)
	}
}

func waitActive(t *testing.T, ctx context.Context, c *kinesis.Client, name string) {
	t.Helper()
	streamtest.WaitFor(t, 30*time.Second, func() string { return name + " not ACTIVE" }, func() bool {
		out, err := c.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		return err == nil && out.StreamDescriptionSummary.StreamStatus == types.StreamStatusActive
	})
}

func TestReshardKeepsOrderPerKey(t *testing.T) {
	e := newEnv(t)
	ctx := testCtx(t, 2*time.Minute)
	o := fastOptions(t, e.client, e.prefix, e.store)
	o.ShardCount = 1
	o.BatchSize = 10
	b := newBackend(t, o)
	name := b.StreamName("reshard")
	const keys = 6
	var all []stream.Message
	seq := 0
	publish := func(n int) {
		t.Helper()
		for i := 0; i < n; i++ {
			for k := 0; k < keys; k++ {
				m := seqMsg(fmt.Sprintf("key%d", k), seq, 10)
				all = append(all, m)
				if err := b.Publish(ctx, "reshard", m); err != nil {
					t.Fatal(err)
				}
			}
			seq++
		}
	}
	publish(10)
	c := &streamtest.Collector{}
	// A slow handler: the parent is still being read when the children fill up.
	streamtest.Consume(t, ctx, b, stream.Subscription{Topic: "reshard", Group: "g"}, func(ctx context.Context, d stream.Delivery) error {
		time.Sleep(2 * time.Millisecond)
		return c.Handle(ctx, d)
	})
	mid := new(big.Int).Lsh(big.NewInt(1), 127)
	if _, err := e.client.SplitShard(ctx, &kinesis.SplitShardInput{StreamName: aws.String(name),
		ShardToSplit: aws.String("shardId-000000000000"), NewStartingHashKey: aws.String(mid.String())}); err != nil {
		t.Fatalf("SplitShard: %v", err)
	}
	waitActive(t, ctx, e.client, name)
	publish(10)
	if _, err := e.client.MergeShards(ctx, &kinesis.MergeShardsInput{StreamName: aws.String(name),
		ShardToMerge: aws.String("shardId-000000000001"), AdjacentShardToMerge: aws.String("shardId-000000000002")}); err != nil {
		t.Fatalf("MergeShards: %v", err)
	}
	waitActive(t, ctx, e.client, name)
	publish(10)
	streamtest.WaitFor(t, 90*time.Second, func() string { return fmt.Sprintf("%d of %d delivered", c.Distinct(), len(all)) },
		func() bool { return c.Distinct() == len(all) })
	checkExact(t, all, c.Snapshot())
	parts := map[string]bool{}
	for _, d := range c.Snapshot() {
		parts[d.Partition] = true
	}
	if len(parts) != 4 {
		t.Fatalf("deliveries came from shards %v: want the parent, both children and the merged shard", parts)
	}
	for _, s := range []string{"shardId-000000000000", "shardId-000000000001", "shardId-000000000002"} {
		streamtest.WaitFor(t, 30*time.Second, func() string { return s + " not recorded as SHARD_END" }, func() bool {
			ent, err := e.store.Get(ctx, kinesisstream.CheckpointKey("reshard", "g", s))
			var cp kinesisstream.Checkpoint
			return err == nil && json.Unmarshal(ent.Value, &cp) == nil && cp.End && !cp.Skipped
		})
	}
	ent, err := e.store.Get(ctx, kinesisstream.CheckpointKey("reshard", "g", "shardId-000000000003"))
	var cp kinesisstream.Checkpoint
	if err != nil || json.Unmarshal(ent.Value, &cp) != nil || cp.End || cp.Seq == "" {
		t.Fatalf("the open merged shard's checkpoint: %s %v", ent.Value, err)
	}
}
