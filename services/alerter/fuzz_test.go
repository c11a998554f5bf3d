package alerter

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/memstream"
)

// FuzzHandle feeds arbitrary bytes to the heartbeat handler: it never panics, rejects
// what is not a valid heartbeat of the message's shard permanently (so the stream
// dead-letters it), and accepts valid ones.
func FuzzHandle(f *testing.F) {
	good, _ := events.Encode(hb("shard-1", "a", 1, true, time.Now()))
	bad, _ := events.Encode(hb("shard-1", "a", 2, false, time.Now()))
	f.Add(good)
	f.Add(bad)
	f.Add([]byte(`{"schema":"1.0","kind":"heartbeat"}`))
	f.Add([]byte(`{"schema":"2.0"}`))
	f.Add([]byte(`null`))
	f.Add([]byte{0xff, 0x00})
	srv := memstream.NewServer(memstream.Options{Partitions: 2})
	svc := startService(f, srv, memkv.New(), svcOpts{})
	f.Fuzz(func(t *testing.T, data []byte) {
		d := stream.Delivery{Message: stream.Message{Key: "shard-1", ID: "m", Data: data}, Topic: events.TopicHeartbeats, Attempt: 1, Published: time.Now()}
		err := svc.Handle(context.Background(), d)
		ev, derr := events.Decode(data)
		valid := derr == nil && ev.Kind == events.KindHeartbeat && ev.Shard == "shard-1"
		switch {
		case valid && err != nil:
			t.Fatalf("valid heartbeat refused: %v", err)
		case !valid && !errors.Is(err, stream.ErrPermanent):
			t.Fatalf("invalid message not rejected permanently: %v (decode: %v)", err, derr)
		}
	})
}
