package natsstream_test

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/natsstream"
	"github.com/heartline/heartline/shared/stream/natsstream/natstest"
	"github.com/heartline/heartline/shared/stream/streamtest"
)

// testOptions are short timings for tests; production keeps the 10 s lease default.
func testOptions(t *testing.T, url string) natsstream.Options {
	return natsstream.Options{
		URL:      url,
		Name:     t.Name(),
		LeaseTTL: 2 * time.Second,
		Log:      zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel),
	}
}

func newBackend(t *testing.T, o natsstream.Options) *natsstream.Backend {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	b, err := natsstream.New(ctx, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// Every subtest gets its own embedded nats-server with JetStream (a fresh store).
func TestConformance(t *testing.T) {
	streamtest.Run(t, func(t *testing.T) streamtest.Harness {
		srv := natstest.Start(t)
		return streamtest.Harness{
			NewClient: func(t *testing.T) stream.Backend { return newBackend(t, testOptions(t, srv.ClientURL())) },
			Takeover:  3 * time.Second,
		}
	})
}
