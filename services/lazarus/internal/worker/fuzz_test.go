package worker

import (
	"context"
	"errors"
	"testing"

	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/stream"
)

// FuzzHandleDelivery: whatever arrives on the alerts topic, the handler never panics;
// it either handles the message or rejects it permanently (dead-letter), never asks
// for endless redelivery of garbage.
func FuzzHandleDelivery(f *testing.F) {
	for _, code := range []events.AlertCode{events.AlertPrimaryDown, events.AlertAgentLost, events.AlertPrimaryDataRegressed} {
		b, err := events.Encode(alertEvent(code, "127.0.0.1:1", 1))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"schema":"1.0","kind":"alert.resolved"}`))
	f.Add([]byte(`not json`))
	w, err := New(Settings{LeaseWait: 1}, Deps{KV: memkv.New(), Publisher: &recPub{}, Log: logging.Test(&syncBuf{})})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		err := w.handleDelivery(context.Background(), stream.Delivery{Message: stream.Message{Key: "k", ID: "id", Data: b}})
		if err != nil && !errors.Is(err, stream.ErrPermanent) {
			t.Fatalf("retryable error for input %q: %v", b, err)
		}
	})
}
