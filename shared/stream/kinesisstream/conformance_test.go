package kinesisstream_test

import (
	"context"
	"testing"
	"time"

	"github.com/heartline/heartline/shared/kv/dynamokv"
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

// TestConformanceDynamoCheckpoints runs the suite again with leases and checkpoints in
// DynamoDB (dynalite), as the AWS profile runs.
func TestConformanceDynamoCheckpoints(t *testing.T) {
	ksrv, dsrv := localaws.Kinesis(t), localaws.Dynamo(t)
	dc := localaws.DynamoClient(dsrv.Endpoint())
	streamtest.Run(t, func(t *testing.T) streamtest.Harness {
		prefix := uniquePrefix(t)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		store, err := dynamokv.Open(ctx, dynamokv.Options{Client: dc, Table: "ckpt-" + prefix, Create: true})
		if err != nil {
			t.Fatal(err)
		}
		return streamtest.Harness{
			NewClient: func(t *testing.T) stream.Backend {
				return newBackend(t, fastOptions(t, localaws.KinesisClient(ksrv.Endpoint()), prefix, store))
			},
			Takeover: 3 * time.Second,
		}
	})
}
