package server_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/ratequeue/internal/rqtest"
	"github.com/heartline/heartline/services/ratequeue/queue"
	"github.com/heartline/heartline/services/ratequeue/server"
	"github.com/heartline/heartline/shared/redistest"
)

func call(t *testing.T, method, url, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(method, url, strings.NewReader(body))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("%s %s: non-JSON answer %q", method, url, b)
		}
	} else {
		out = map[string]any{"raw": string(b)}
	}
	return resp.StatusCode, out
}

func TestAPIOnRealRedis(t *testing.T) {
	cl := rqtest.Start(t, 2)
	reg := prometheus.NewRegistry()
	qc, err := queue.New(queue.Config{Topology: cl.Follower, Metrics: queue.NewMetrics(reg), Log: zerolog.Nop(),
		Rates: map[string]float64{}, MaxBody: 1000, WaitTimeout: 200 * time.Millisecond, OpTimeout: 2 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.Close()
	srv := httptest.NewServer(server.New(qc, server.Config{MaxBody: 1000}, zerolog.Nop(), reg).Handler())
	defer srv.Close()
	u := srv.URL

	code, out := call(t, "POST", u+"/v1/queues/+15551234/messages", `{"body":"hi","idempotency_key":"k1"}`)
	if code != 201 || out["id"] == "" || out["duplicate"] != false {
		t.Fatalf("enqueue %d %v", code, out)
	}
	id := out["id"].(string)
	code, out = call(t, "POST", u+"/v1/queues/+15551234/messages", `{"body":"hi","idempotency_key":"k1"}`)
	if code != 200 || out["id"] != id || out["duplicate"] != true {
		t.Fatalf("duplicate enqueue %d %v", code, out)
	}
	code, out = call(t, "GET", u+"/v1/queues/+15551234", "")
	if code != 200 || out["depth"] != 1.0 {
		t.Fatalf("depth %d %v", code, out)
	}
	code, out = call(t, "POST", u+"/v1/dequeue", "")
	for i := 0; code == 200 && out["message"] == nil && i < 10; i++ { // the other shard may answer first
		code, out = call(t, "POST", u+"/v1/dequeue", "")
	}
	msg, _ := out["message"].(map[string]any)
	if code != 200 || msg == nil || msg["id"] != id || msg["body"] != "hi" || msg["deliveries"] != 1.0 || msg["server_us"].(float64) <= 0 {
		t.Fatalf("dequeue %d %v", code, out)
	}
	code, out = call(t, "POST", u+"/v1/dequeue", `{"shard":"shard-0"}`)
	if code != 200 || out["message"] != nil {
		t.Fatalf("empty dequeue %d %v", code, out)
	}
	code, _ = call(t, "POST", u+"/v1/queues/+15551234/messages/"+id+"/ack", "")
	if code != 200 {
		t.Fatalf("ack %d", code)
	}
	code, out = call(t, "GET", u+"/v1/shards", "")
	if code != 200 || len(out["shards"].([]any)) != 2 {
		t.Fatalf("shards %d %v", code, out)
	}
	code, out = call(t, "GET", u+"/healthz", "")
	if code != 200 || out["status"] != "ok" {
		t.Fatal(code, out)
	}
	code, out = call(t, "GET", u+"/readyz", "")
	if code != 200 || out["status"] != "ready" {
		t.Fatal(code, out)
	}

	// Hostile input: 4xx with a JSON error, never a 5xx or a panic.
	for _, tc := range []struct {
		method, path, body string
		code               int
	}{
		{"POST", "/v1/queues/q/messages", `{"body":`, 400},
		{"POST", "/v1/queues/q/messages", `{"body":"x","nope":1}`, 400},
		{"POST", "/v1/queues/q/messages", `{"body":"x"} {}`, 400},
		{"POST", "/v1/queues/q/messages", `[1,2]`, 400},
		{"POST", "/v1/queues/q/messages", `{"body":"` + strings.Repeat("x", 1500) + `"}`, 413},
		{"POST", "/v1/queues/q/messages", `{"body":"` + strings.Repeat("x", 5000) + `"}`, 413},
		{"POST", "/v1/queues/a%20b/messages", `{"body":"x"}`, 400},
		{"POST", "/v1/queues/" + strings.Repeat("q", 300) + "/messages", `{"body":"x"}`, 400},
		{"POST", "/v1/queues/q/messages", `{"body":"x","idempotency_key":"bad key"}`, 400},
		{"POST", "/v1/queues/q/messages", `{"body":"x","id":"../etc"}`, 400},
		{"POST", "/v1/queues/q/messages/bad%2Fid/ack", ``, 400},
		{"POST", "/v1/dequeue", `{"shard":"nope"}`, 404},
		{"POST", "/v1/dequeue", `{"visibility_ms":-5}`, 400},
		{"POST", "/v1/dequeue", `{"visibility_ms":"x"}`, 400},
		{"GET", "/v1/queues/q/messages", ``, 405},
		{"DELETE", "/v1/queues/q", ``, 405},
		{"GET", "/v1/nothing", ``, 404},
		{"PUT", "/", ``, 404},
	} {
		code, out := call(t, tc.method, u+tc.path, tc.body)
		if code != tc.code || out["error"] == nil || out["category"] == nil {
			t.Errorf("%s %s %.40q: got %d %v, want %d with a JSON error", tc.method, tc.path, tc.body, code, out, tc.code)
		}
	}
	// An ack of an expired delivery is a 409.
	code, out = call(t, "POST", u+"/v1/queues/q/messages", `{"body":"x"}`)
	if code != 201 {
		t.Fatal(code, out)
	}
	sh, _ := cl.Map().ShardFor("q")
	code, out = call(t, "POST", u+"/v1/dequeue", `{"shard":"`+sh.ID+`","visibility_ms":1}`)
	msg, _ = out["message"].(map[string]any)
	if code != 200 || msg == nil {
		t.Fatal(code, out)
	}
	redistest.WaitFor(t, 10*time.Second, "message back in its queue", func() bool {
		call(t, "POST", u+"/v1/queues/zz/messages", `{"body":"poke","id":"`+strings.Repeat("p", 10)+`"}`)
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		// a dequeue on the shard runs the reaper; rate is unlimited so it
		// redelivers at once: ack that delivery's predecessor instead.
		res, _ := qc.Dequeue(ctx, queue.DequeueRequest{Shard: sh.ID, Visibility: time.Hour})
		return res.Message != nil && res.Message.ID == msg["id"]
	})
	code, _ = call(t, "POST", u+"/v1/queues/q/messages/"+msg["id"].(string)+"/ack", "")
	if code != 200 {
		t.Fatalf("ack of the redelivered message: %d", code)
	}
	// Metrics name every family.
	code, out = call(t, "GET", u+"/metrics", "")
	if code != 200 {
		t.Fatal(code)
	}
	raw := out["raw"].(string)
	for _, name := range []string{"ratequeue_ops_total", "ratequeue_http_requests_total", "ratequeue_http_request_duration_seconds",
		"ratequeue_shard_stored_messages", "ratequeue_shard_up", "ratequeue_op_duration_seconds", "ratequeue_errors_total"} {
		if !strings.Contains(raw, name) {
			t.Errorf("metrics lack %s", name)
		}
	}
	// One shard whose primary cannot write does not make the instance unready: it
	// shows as that shard's error (ready_degraded). Every shard failing does.
	if err := cl.Shards[1].Replicas[0].Kill(); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 15*time.Second, "readyz names the failing shard", func() bool {
		code, out := call(t, "GET", u+"/readyz", "")
		sh, _ := out["shards"].(map[string]any)
		return code == 200 && out["status"] == "ready_degraded" && sh["shard-1"] != "ok" && sh["shard-0"] == "ok"
	})
	for _, s := range cl.Shards[:1] {
		if err := s.Replicas[0].Kill(); err != nil {
			t.Fatal(err)
		}
	}
	redistest.WaitFor(t, 15*time.Second, "readyz 503 with no shard servable", func() bool {
		code, _ := call(t, "GET", u+"/readyz", "")
		return code == 503
	})
}
