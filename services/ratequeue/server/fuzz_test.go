package server

import (
	"context"
	"errors"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/ratequeue/queue"
)

// stubQueue validates like the real client and answers from memory.
type stubQueue struct{}

func (stubQueue) Enqueue(ctx context.Context, r queue.EnqueueRequest) (queue.EnqueueResult, error) {
	if err := queue.ValidQueue(r.Queue); err != nil {
		return queue.EnqueueResult{}, &queue.Error{Op: "enqueue", Category: queue.CategoryInvalid, Err: err}
	}
	return queue.EnqueueResult{ID: "x", Queue: r.Queue, Shard: "s", Epoch: 1}, nil
}
func (stubQueue) Dequeue(ctx context.Context, r queue.DequeueRequest) (queue.DequeueResult, error) {
	if r.Shard != "" && r.Shard != "s" {
		return queue.DequeueResult{}, &queue.Error{Op: "dequeue", Category: queue.CategoryNotFound, Err: queue.ErrUnknownShard}
	}
	return queue.DequeueResult{}, nil
}
func (stubQueue) Ack(ctx context.Context, q, id string) error {
	if queue.ValidQueue(q) != nil || queue.ValidID(id) != nil {
		return &queue.Error{Op: "ack", Category: queue.CategoryInvalid, Err: errors.New("bad")}
	}
	return nil
}
func (stubQueue) Depth(ctx context.Context, q string) (int64, string, error) { return 0, "s", nil }
func (stubQueue) Stats(ctx context.Context, shard string) (queue.ShardStats, error) {
	return queue.ShardStats{Shard: shard}, nil
}
func (stubQueue) Check(ctx context.Context) map[string]error { return nil }
func (stubQueue) Shards() []string                           { return []string{"s"} }
func (stubQueue) DownShards() map[string]time.Time           { return nil }

func FuzzAPI(f *testing.F) {
	f.Add("POST", "/v1/queues/q/messages", `{"body":"x"}`)
	f.Add("POST", "/v1/dequeue", `{"shard":"s","visibility_ms":5}`)
	f.Add("POST", "/v1/queues/q/messages/id/ack", ``)
	f.Add("GET", "/v1/queues/%ff", ``)
	f.Add("PATCH", "/metrics", `{}`)
	srv := New(stubQueue{}, Config{MaxBody: 100}, zerolog.Nop(), prometheus.NewRegistry())
	f.Fuzz(func(t *testing.T, method, path, body string) {
		if !validMethod(method) || !strings.HasPrefix(path, "/") || strings.ContainsAny(path, " \r\n\t#?") {
			return
		}
		if _, err := url.ParseRequestURI(path); err != nil {
			return // not a request a client can send
		}
		req := httptest.NewRequest(method, "http://x"+path, strings.NewReader(body))
		w := httptest.NewRecorder()
		srv.Handler().ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%s %s %q: %d %s", method, path, body, w.Code, w.Body.String())
		}
		if path != "/metrics" && !strings.HasPrefix(w.Header().Get("Content-Type"), "application/json") && w.Code != 301 && w.Code != 307 {
			t.Fatalf("%s %s: non-JSON answer %d %q", method, path, w.Code, w.Body.String())
		}
	})
}

func validMethod(m string) bool {
	if m == "" || len(m) > 10 {
		return false
	}
	for _, c := range m {
		if c < 'A' || c > 'Z' {
			return false
		}
	}
	return true
}
