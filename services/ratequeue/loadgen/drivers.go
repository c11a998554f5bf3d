package loadgen

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"github.com/heartline/heartline/services/ratequeue/history"
	"github.com/heartline/heartline/services/ratequeue/queue"
)

// Client is what the direct driver needs of *queue.Client.
type Client interface {
	Enqueue(ctx context.Context, req queue.EnqueueRequest) (queue.EnqueueResult, error)
	Dequeue(ctx context.Context, req queue.DequeueRequest) (queue.DequeueResult, error)
	Ack(ctx context.Context, q, id string) error
	Stats(ctx context.Context, shard string) (queue.ShardStats, error)
	Shards() []string
}

// Direct drives the Go client.
type Direct struct{ C Client }

func (Direct) Mode() string { return "direct" }

func (d Direct) Enqueue(ctx context.Context, q, id, idem string, body []byte) Outcome {
	res, err := d.C.Enqueue(ctx, queue.EnqueueRequest{Queue: q, ID: id, IdempotencyKey: idem, Body: body})
	if err != nil {
		st := history.StatusFailed
		if queue.CategoryOf(err) == queue.CategoryUnknown || queue.CategoryOf(err) == queue.CategoryInternal {
			st = history.StatusUnknown
		}
		return Outcome{Status: st, Err: err}
	}
	return Outcome{Status: history.StatusOK, ID: res.ID, Shard: res.Shard, Node: res.Node, Epoch: res.Epoch, Duplicate: res.Duplicate, ServerUS: res.ServerUS}
}

func (d Direct) Dequeue(ctx context.Context, shard string, vis time.Duration) (*Delivery, time.Duration, error) {
	res, err := d.C.Dequeue(ctx, queue.DequeueRequest{Shard: shard, Visibility: vis})
	if err != nil {
		return nil, 0, err
	}
	if m := res.Message; m != nil {
		return &Delivery{ID: m.ID, Queue: m.Queue, Shard: m.Shard, Node: m.Node, Body: m.Body, Epoch: m.Epoch, Count: m.Deliveries,
			ServerUS: m.ServerUS, IntervalUS: m.IntervalUS}, 0, nil
	}
	return nil, res.NextIn, nil
}

func (d Direct) Ack(ctx context.Context, q, id string) (string, error) {
	err := d.C.Ack(ctx, q, id)
	switch {
	case err == nil:
		return history.StatusOK, nil
	case errors.Is(err, queue.ErrNotInFlight):
		return history.StatusNotInFlight, err
	case queue.CategoryOf(err) == queue.CategoryUnknown:
		return history.StatusUnknown, err
	}
	return history.StatusFailed, err
}

func (d Direct) Shards(ctx context.Context) ([]string, error) { return d.C.Shards(), nil }

func (d Direct) Pending(ctx context.Context) (int64, error) {
	var n int64
	for _, s := range d.C.Shards() {
		st, err := d.C.Stats(ctx, s)
		if err != nil {
			return 0, err
		}
		n += st.ReadyQueues + st.InFlight
	}
	return n, nil
}

// HTTP drives one or more `ratequeue serve` instances, round-robin, moving on to the
// next instance when one cannot be reached.
type HTTP struct {
	targets []string
	client  *http.Client
	rr      atomic.Uint64
}

// NewHTTP returns a driver for the given base URLs (http://host:port).
func NewHTTP(targets []string, timeout time.Duration) (*HTTP, error) {
	if len(targets) == 0 {
		return nil, errors.New("no targets")
	}
	for _, t := range targets {
		u, err := url.Parse(t)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("target %q: want http://host:port", t)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.MaxIdleConnsPerHost = 256
	tr.DialContext = (&net.Dialer{Timeout: time.Second}).DialContext
	return &HTTP{targets: targets, client: &http.Client{Timeout: timeout, Transport: tr}}, nil
}

func (h *HTTP) Mode() string { return "http" }

// errNotSent: no target accepted the connection; the request was never sent.
var errNotSent = errors.New("no target reachable")

// do sends a request to the targets in turn, starting with the next in rotation,
// moving on only when the connection could not be made (nothing was sent).
func (h *HTTP) do(ctx context.Context, method, path string, body any) (int, []byte, error) {
	var payload []byte
	if body != nil {
		payload, _ = json.Marshal(body)
	}
	first := int(h.rr.Add(1))
	var lastErr error
	for i := range h.targets {
		base := h.targets[(first+i)%len(h.targets)]
		req, err := http.NewRequestWithContext(ctx, method, strings.TrimRight(base, "/")+path, bytes.NewReader(payload))
		if err != nil {
			return 0, nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := h.client.Do(req)
		if err != nil {
			var op *net.OpError
			if errors.As(err, &op) && op.Op == "dial" {
				lastErr = err
				continue
			}
			return 0, nil, err
		}
		b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
		resp.Body.Close()
		return resp.StatusCode, b, err
	}
	return 0, nil, fmt.Errorf("%w: %v", errNotSent, lastErr)
}

type apiError struct {
	Error    string `json:"error"`
	Category string `json:"category"`
}

func decodeErr(code int, b []byte) error {
	var e apiError
	if json.Unmarshal(b, &e) == nil && e.Error != "" {
		return fmt.Errorf("HTTP %d (%s): %s", code, e.Category, e.Error)
	}
	return fmt.Errorf("HTTP %d: %.200s", code, b)
}

func (h *HTTP) Enqueue(ctx context.Context, q, id, idem string, body []byte) Outcome {
	code, b, err := h.do(ctx, "POST", "/v1/queues/"+url.PathEscape(q)+"/messages",
		map[string]string{"body": string(body), "id": id, "idempotency_key": idem})
	if err != nil {
		if errors.Is(err, errNotSent) {
			return Outcome{Status: history.StatusFailed, Err: err}
		}
		return Outcome{Status: history.StatusUnknown, Err: err}
	}
	switch {
	case code == http.StatusCreated || code == http.StatusOK:
		var r struct {
			ID        string `json:"id"`
			Shard     string `json:"shard"`
			Node      string `json:"node"`
			Epoch     uint64 `json:"epoch"`
			Duplicate bool   `json:"duplicate"`
			ServerUS  int64  `json:"server_us"`
		}
		if err := json.Unmarshal(b, &r); err != nil || r.Shard == "" {
			return Outcome{Status: history.StatusUnknown, Err: fmt.Errorf("bad enqueue answer %.200q", b)}
		}
		return Outcome{Status: history.StatusOK, ID: r.ID, Shard: r.Shard, Node: r.Node, Epoch: r.Epoch, Duplicate: r.Duplicate, ServerUS: r.ServerUS}
	case code >= 400 && code < 500, code == http.StatusServiceUnavailable:
		// Invalid, or unavailable: nothing was stored.
		return Outcome{Status: history.StatusFailed, Err: decodeErr(code, b)}
	}
	return Outcome{Status: history.StatusUnknown, Err: decodeErr(code, b)}
}

func (h *HTTP) Dequeue(ctx context.Context, shard string, vis time.Duration) (*Delivery, time.Duration, error) {
	code, b, err := h.do(ctx, "POST", "/v1/dequeue", map[string]any{"shard": shard, "visibility_ms": vis.Milliseconds()})
	if err != nil {
		return nil, 0, err
	}
	if code != http.StatusOK {
		return nil, 0, decodeErr(code, b)
	}
	var r struct {
		Message *struct {
			ID         string `json:"id"`
			Queue      string `json:"queue"`
			Body       string `json:"body"`
			Deliveries int64  `json:"deliveries"`
			ServerUS   int64  `json:"server_us"`
			IntervalUS int64  `json:"interval_us"`
			Shard      string `json:"shard"`
			Node       string `json:"node"`
			Epoch      uint64 `json:"epoch"`
		} `json:"message"`
		NextInMS float64 `json:"next_in_ms"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, 0, fmt.Errorf("bad dequeue answer: %w", err)
	}
	if m := r.Message; m != nil {
		return &Delivery{ID: m.ID, Queue: m.Queue, Shard: m.Shard, Node: m.Node, Body: []byte(m.Body), Epoch: m.Epoch, Count: m.Deliveries,
			ServerUS: m.ServerUS, IntervalUS: m.IntervalUS}, 0, nil
	}
	return nil, time.Duration(r.NextInMS * float64(time.Millisecond)), nil
}

func (h *HTTP) Ack(ctx context.Context, q, id string) (string, error) {
	code, b, err := h.do(ctx, "POST", "/v1/queues/"+url.PathEscape(q)+"/messages/"+url.PathEscape(id)+"/ack", nil)
	switch {
	case err != nil && errors.Is(err, errNotSent):
		return history.StatusFailed, err
	case err != nil:
		return history.StatusUnknown, err
	case code == http.StatusOK:
		return history.StatusOK, nil
	case code == http.StatusConflict:
		return history.StatusNotInFlight, decodeErr(code, b)
	case code >= 400 && code < 500, code == http.StatusServiceUnavailable:
		return history.StatusFailed, decodeErr(code, b)
	}
	return history.StatusUnknown, decodeErr(code, b)
}

type shardsAnswer struct {
	Shards []struct {
		Shard       string `json:"shard"`
		ReadyQueues int64  `json:"ready_queues"`
		InFlight    int64  `json:"in_flight"`
		Error       string `json:"error"`
	} `json:"shards"`
}

func (h *HTTP) shards(ctx context.Context) (shardsAnswer, error) {
	var a shardsAnswer
	code, b, err := h.do(ctx, "GET", "/v1/shards", nil)
	if err != nil {
		return a, err
	}
	if code != http.StatusOK {
		return a, decodeErr(code, b)
	}
	err = json.Unmarshal(b, &a)
	return a, err
}

func (h *HTTP) Shards(ctx context.Context) ([]string, error) {
	a, err := h.shards(ctx)
	if err != nil {
		return nil, err
	}
	var ids []string
	for _, s := range a.Shards {
		ids = append(ids, s.Shard)
	}
	return ids, nil
}

func (h *HTTP) Pending(ctx context.Context) (int64, error) {
	a, err := h.shards(ctx)
	if err != nil {
		return 0, err
	}
	var n int64
	for _, s := range a.Shards {
		if s.Error != "" {
			return 0, fmt.Errorf("shard %s: %s", s.Shard, s.Error)
		}
		n += s.ReadyQueues + s.InFlight
	}
	return n, nil
}
