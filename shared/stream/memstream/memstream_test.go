package memstream_test

import (
	"testing"
	"time"

	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/memstream"
	"github.com/heartline/heartline/shared/stream/streamtest"
)

func TestConformance(t *testing.T) {
	streamtest.Run(t, func(t *testing.T) streamtest.Harness {
		srv := memstream.NewServer(memstream.Options{LeaseTTL: time.Second})
		return streamtest.Harness{
			NewClient: func(t *testing.T) stream.Backend { return srv.New() },
			Takeover:  2 * time.Second,
		}
	})
}
