package kinesisstream_test

import (
	"testing"
	"time"

	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/localaws"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/streamtest"
)

// TestConformance runs the stream conformance suite against kinesalite, each harness
// with its own stream prefix and its own checkpoint store (shared by its clients, as
// processes share one kv store).
func TestConformance(t *testing.T) {
	srv := localaws.Kinesis(t)
	streamtest.Run(t, func(t *testing.T) streamtest.Harness {
		prefix, store := uniquePrefix(t), memkv.New()
		return streamtest.Harness{
			NewClient: func(t *testing.T) stream.Backend {
				return newBackend(t, fastOptions(t, localaws.KinesisClient(srv.Endpoint()), prefix, store))
			},
			Takeover: 3 * time.Second,
		}
	})
}
