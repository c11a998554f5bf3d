package connect

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/config"
	"github.com/heartline/heartline/shared/localaws"
	"github.com/heartline/heartline/shared/stream"
)

// roundTrip publishes one message and consumes it, and writes and reads one key.
func roundTrip(t *testing.T, p *Platform) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	if _, err := p.KV.Put(ctx, "connect.test", []byte("v")); err != nil {
		t.Fatalf("kv put: %v", err)
	}
	if e, err := p.KV.Get(ctx, "connect.test"); err != nil || string(e.Value) != "v" {
		t.Fatalf("kv get: %+v %v", e, err)
	}
	if err := p.Stream.Publish(ctx, "connecttest", stream.Message{Key: "shard-1", ID: "m1", Data: []byte("hello")}); err != nil {
		t.Fatalf("publish: %v", err)
	}
	got := make(chan string, 1)
	cctx, stop := context.WithCancel(ctx)
	defer stop()
	go func() {
		_ = p.Stream.Consume(cctx, stream.Subscription{Topic: "connecttest", Group: "g"}, func(_ context.Context, d stream.Delivery) error {
			select {
			case got <- string(d.Data):
			default:
			}
			return nil
		})
	}()
	select {
	case s := <-got:
		if s != "hello" {
			t.Fatalf("got %q", s)
		}
	case <-ctx.Done():
		t.Fatal("message not consumed")
	}
}

func TestEmbeddedIsTheDefault(t *testing.T) {
	p, err := Open(context.Background(), Config{DataDir: t.TempDir(), Instance: "test"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if !strings.HasPrefix(p.NATSURL, "nats://127.0.0.1:") {
		t.Fatalf("embedded server URL %q", p.NATSURL)
	}
	roundTrip(t, p)
	// A second process (here: a second platform) reaches the embedded server by URL.
	q, err := Open(context.Background(), Config{Stream: p.NATSURL, DataDir: t.TempDir(), Instance: "other"}, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if e, err := q.KV.Get(context.Background(), "connect.test"); err != nil || string(e.Value) != "v" {
		t.Fatalf("the second client does not share the kv bucket: %+v %v", e, err)
	}
}

func TestKinesisWithDynamoDB(t *testing.T) {
	k := localaws.Kinesis(t)
	d := localaws.Dynamo(t)
	c := Config{
		Stream:   fmt.Sprintf("kinesis://hlconnect?region=us-east-1&endpoint=%s&shards=1", k.Endpoint()),
		KV:       fmt.Sprintf("dynamodb://hlconnect?region=us-east-1&endpoint=%s", d.Endpoint()),
		DataDir:  t.TempDir(),
		Instance: "test",
	}
	p, err := Open(context.Background(), c, zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	roundTrip(t, p)
}

func TestBadSettingsAreAllReported(t *testing.T) {
	_, err := Open(context.Background(), Config{Stream: "kafka://x", KV: "redis://y"}, zerolog.Nop())
	var ce *config.Error
	if !errors.As(err, &ce) || len(ce.Problems) != 2 {
		t.Fatalf("want 2 problems, got %v", err)
	}
	for _, c := range []Config{
		{Stream: "kinesis://prefix"},                         // no region
		{Stream: "kinesis://p?region=r", KV: "nats"},         // nats kv without nats
		{KV: "dynamodb://?region=x"},                         // no table
		{KV: "file://"},                                      // no path
		{NATSListen: "nonsense", Stream: "embedded", KV: ""}, // caught at Open
	} {
		if _, err := Open(context.Background(), c, zerolog.Nop()); err == nil {
			t.Errorf("%+v: want an error", c)
		}
	}
}
