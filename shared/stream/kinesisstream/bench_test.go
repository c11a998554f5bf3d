package kinesisstream_test

import (
	"context"
	"encoding/binary"
	"fmt"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/localaws"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/kinesisstream"
)

// BenchmarkPipeline measures publish -> handler throughput and latency of 1 KiB events
// through kinesalite, 16 keys on a 2-shard stream, one consumer. Sub-benchmarks compare
// one message per PutRecords call with batches of 100, and the production pacing (200
// ms between GetRecords per shard, Kinesis's 5 calls/s) with a fast poll (20 ms; fine
// on kinesalite, over AWS's limit). Run with a fixed count:
//
//	go test -run '^$' -bench Pipeline -benchtime 2000x ./stream/kinesisstream
func BenchmarkPipeline(b *testing.B) {
	srv := localaws.Kinesis(b)
	for _, bc := range []struct {
		name  string
		batch int
		fast  bool
	}{
		{"Publish1/poll200ms", 1, false},
		{"PublishBatch100/poll200ms", 100, false},
		{"Publish1/poll20ms", 1, true},
		{"PublishBatch100/poll20ms", 100, true},
	} {
		b.Run(bc.name, func(b *testing.B) { benchPipeline(b, srv, bc.batch, bc.fast) })
	}
}

func benchPipeline(b *testing.B, srv *localaws.Server, batch int, fast bool) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	o := kinesisstream.Options{Client: localaws.KinesisClient(srv.Endpoint()), StreamPrefix: fmt.Sprintf("bench%d", prefixSeq.Add(1)),
		Create: true, ShardCount: 2, Checkpoints: memkv.New(), LeaseTTL: 2 * time.Second, Log: zerolog.Nop()}
	if fast {
		o.PollInterval, o.MinGetInterval = 20*time.Millisecond, -1
	}
	be, err := kinesisstream.New(o)
	if err != nil {
		b.Fatal(err)
	}
	defer be.Close()
	var mu sync.Mutex
	var lat []time.Duration
	got := 0
	warm := make(chan struct{})
	var once sync.Once
	cctx, stop := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = be.Consume(cctx, stream.Subscription{Topic: "bench", Group: "g"}, func(ctx context.Context, d stream.Delivery) error {
			if d.Key == "warmup" {
				once.Do(func() { close(warm) })
				return nil
			}
			sent := time.Unix(0, int64(binary.BigEndian.Uint64(d.Data)))
			mu.Lock()
			lat = append(lat, time.Since(sent))
			got++
			mu.Unlock()
			return nil
		})
	}()
	defer func() { stop(); <-done }()
	// Both shards owned and read before timing starts.
	for i := 0; ; i++ {
		if err := be.Publish(ctx, "bench", stream.Message{Key: "warmup", ID: fmt.Sprint("w", i), Data: []byte("w")}); err != nil {
			b.Fatal(err)
		}
		select {
		case <-warm:
		case <-time.After(200 * time.Millisecond):
			continue
		case <-ctx.Done():
			b.Fatal("consumer never started")
		}
		break
	}
	time.Sleep(3 * o.LeaseTTL / 2)
	payload := make([]byte, 1024)
	b.SetBytes(1024)
	b.ResetTimer()
	start := time.Now()
	for i := 0; i < b.N; {
		n := min(batch, b.N-i)
		msgs := make([]stream.Message, n)
		now := time.Now().UnixNano()
		for j := range msgs {
			data := append([]byte(nil), payload...)
			binary.BigEndian.PutUint64(data, uint64(now))
			msgs[j] = stream.Message{Key: fmt.Sprintf("shard-%d", (i+j)%16), ID: fmt.Sprint(i + j), Data: data}
		}
		if err := be.PublishBatch(ctx, "bench", msgs); err != nil {
			b.Fatal(err)
		}
		i += n
	}
	published := time.Since(start)
	for {
		mu.Lock()
		n := got
		mu.Unlock()
		if n >= b.N {
			break
		}
		if ctx.Err() != nil {
			b.Fatalf("%d of %d delivered", n, b.N)
		}
		time.Sleep(2 * time.Millisecond)
	}
	elapsed := time.Since(start)
	b.StopTimer()
	mu.Lock()
	defer mu.Unlock()
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e6 }
	b.ReportMetric(float64(b.N)/published.Seconds(), "published/s")
	b.ReportMetric(float64(b.N)/elapsed.Seconds(), "delivered/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}
