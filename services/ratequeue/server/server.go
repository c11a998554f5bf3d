// Package server is Ratequeue's HTTP API: enqueue, dequeue, ack and queue depth over
// the queue client, plus /healthz (liveness), /readyz (every shard's primary
// reachable and writable at its epoch) and /metrics (an explicit Prometheus
// registry). Every error is a JSON object {"error", "category"}; hostile input gets
// a 4xx, never a panic.
package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/ratequeue/queue"
)

// Queue is what the server needs of *queue.Client.
type Queue interface {
	Enqueue(ctx context.Context, req queue.EnqueueRequest) (queue.EnqueueResult, error)
	Dequeue(ctx context.Context, req queue.DequeueRequest) (queue.DequeueResult, error)
	Ack(ctx context.Context, q, id string) error
	Depth(ctx context.Context, q string) (int64, string, error)
	Stats(ctx context.Context, shard string) (queue.ShardStats, error)
	Check(ctx context.Context) map[string]error
	Shards() []string
	DownShards() map[string]time.Time
}

// Config tunes the server.
type Config struct {
	// MaxBody is the largest message body (bytes); requests are limited to about
	// twice that (JSON escaping) plus 4 KiB.
	MaxBody int
	// RequestTimeout bounds each request's queue call (default 10 s).
	RequestTimeout time.Duration
	// ReadyTimeout bounds the readiness check (default 2 s).
	ReadyTimeout time.Duration
	// MaxVisibility caps a dequeue's visibility_ms (default 12 h).
	MaxVisibility time.Duration
}

// Server serves the API.
type Server struct {
	q       Queue
	cfg     Config
	log     zerolog.Logger
	handler http.Handler

	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
	panics   prometheus.Counter
}

// New builds the server and registers its metrics (and a shard-state collector) with
// reg; reg is also what /metrics serves.
func New(q Queue, cfg Config, log zerolog.Logger, reg *prometheus.Registry) *Server {
	if cfg.MaxBody <= 0 {
		cfg.MaxBody = 64 << 10
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = 10 * time.Second
	}
	if cfg.ReadyTimeout <= 0 {
		cfg.ReadyTimeout = 2 * time.Second
	}
	if cfg.MaxVisibility <= 0 {
		cfg.MaxVisibility = 12 * time.Hour
	}
	s := &Server{q: q, cfg: cfg, log: log,
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratequeue_http_requests_total", Help: "HTTP requests by route and status code.",
		}, []string{"route", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "ratequeue_http_request_duration_seconds", Help: "HTTP request latency by route.",
			Buckets: []float64{.0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"route"}),
		panics: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "ratequeue_http_panics_total", Help: "Handler panics recovered (each is a bug; the request got a 500).",
		}),
	}
	reg.MustRegister(s.requests, s.latency, s.panics, &shardCollector{q: q, timeout: time.Second})

	mux := http.NewServeMux()
	route := func(method, pattern string, h http.HandlerFunc) {
		mux.HandleFunc(method+" "+pattern, h)
		mux.HandleFunc(pattern, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Allow", method)
			writeErr(w, http.StatusMethodNotAllowed, "method_not_allowed", fmt.Sprintf("%s %s: use %s", r.Method, pattern, method))
		})
	}
	route("POST", "/v1/queues/{queue}/messages", s.enqueue)
	route("GET", "/v1/queues/{queue}", s.depth)
	route("POST", "/v1/queues/{queue}/messages/{id}/ack", s.ack)
	route("POST", "/v1/dequeue", s.dequeue)
	route("GET", "/v1/shards", s.shards)
	route("GET", "/healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	route("GET", "/readyz", s.ready)
	metrics := promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
	route("GET", "/metrics", metrics.ServeHTTP)
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "not_found", "no such route: "+r.Method+" "+r.URL.Path)
	})
	s.handler = s.instrument(mux)
	return s
}

// Handler is the server's http.Handler.
func (s *Server) Handler() http.Handler { return s.handler }

type statusWriter struct {
	http.ResponseWriter
	code int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.code == 0 {
		w.code = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.code == 0 {
		w.code = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

func (s *Server) instrument(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		sw := &statusWriter{ResponseWriter: w}
		defer func() {
			if p := recover(); p != nil {
				s.panics.Inc()
				s.log.Error().Str("method", r.Method).Str("path", r.URL.Path).Interface("panic", p).Msg("handler panicked; answered 500")
				if sw.code == 0 {
					writeErr(sw, http.StatusInternalServerError, string(queue.CategoryInternal), "internal error")
				}
			}
			route := r.Pattern
			if route == "" || route == "/" {
				route = "unmatched"
			}
			s.requests.WithLabelValues(route, strconv.Itoa(sw.code)).Inc()
			s.latency.WithLabelValues(route).Observe(time.Since(start).Seconds())
		}()
		next.ServeHTTP(sw, r)
	})
}

// EnqueueBody is the JSON body of an enqueue.
type EnqueueBody struct {
	Body           string `json:"body"`
	IdempotencyKey string `json:"idempotency_key,omitempty"`
	ID             string `json:"id,omitempty"`
}

// EnqueueResponse answers an enqueue.
type EnqueueResponse struct {
	ID        string `json:"id"`
	Queue     string `json:"queue"`
	Shard     string `json:"shard"`
	Node      string `json:"node"`
	Epoch     uint64 `json:"epoch"`
	Duplicate bool   `json:"duplicate"`
	ServerUS  int64  `json:"server_us"`
	// Replicated: a replica acknowledged the message before this reply. False on a
	// degraded shard (no replica in sync, durability degrade) or with -ack primary.
	Replicated bool `json:"replicated"`
}

func (s *Server) enqueue(w http.ResponseWriter, r *http.Request) {
	var body EnqueueBody
	if !s.decode(w, r, &body, false) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	res, err := s.q.Enqueue(ctx, queue.EnqueueRequest{Queue: r.PathValue("queue"), Body: []byte(body.Body),
		IdempotencyKey: body.IdempotencyKey, ID: body.ID})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	code := http.StatusCreated
	if res.Duplicate {
		code = http.StatusOK
	}
	writeJSON(w, code, EnqueueResponse{ID: res.ID, Queue: res.Queue, Shard: res.Shard, Node: res.Node, Epoch: res.Epoch,
		Duplicate: res.Duplicate, ServerUS: res.ServerUS, Replicated: res.Replicated})
}

// DequeueBody is the (optional) JSON body of a dequeue.
type DequeueBody struct {
	Shard        string `json:"shard,omitempty"`
	VisibilityMS int64  `json:"visibility_ms,omitempty"`
}

// MessageJSON is a delivered message.
type MessageJSON struct {
	ID         string `json:"id"`
	Queue      string `json:"queue"`
	Body       string `json:"body"`
	Deliveries int64  `json:"deliveries"`
	ServerUS   int64  `json:"server_us"`
	IntervalUS int64  `json:"interval_us"`
	Shard      string `json:"shard"`
	Node       string `json:"node"`
	Epoch      uint64 `json:"epoch"`
	Replicated bool   `json:"replicated"`
}

// DequeueResponse answers a dequeue: a message, or null with a hint.
type DequeueResponse struct {
	Message     *MessageJSON `json:"message"`
	NextInMS    float64      `json:"next_in_ms,omitempty"`
	ReadyQueues int64        `json:"ready_queues,omitempty"`
	InFlight    int64        `json:"in_flight,omitempty"`
}

func (s *Server) dequeue(w http.ResponseWriter, r *http.Request) {
	var body DequeueBody
	if !s.decode(w, r, &body, true) {
		return
	}
	if body.VisibilityMS < 0 || time.Duration(body.VisibilityMS)*time.Millisecond > s.cfg.MaxVisibility {
		writeErr(w, http.StatusBadRequest, string(queue.CategoryInvalid), fmt.Sprintf("visibility_ms %d: want 0 (default) to %d", body.VisibilityMS, s.cfg.MaxVisibility.Milliseconds()))
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	res, err := s.q.Dequeue(ctx, queue.DequeueRequest{Shard: body.Shard, Visibility: time.Duration(body.VisibilityMS) * time.Millisecond})
	if err != nil {
		s.fail(w, r, err)
		return
	}
	out := DequeueResponse{NextInMS: float64(res.NextIn.Microseconds()) / 1000, ReadyQueues: res.Ready, InFlight: res.InFlight}
	if m := res.Message; m != nil {
		out = DequeueResponse{Message: &MessageJSON{ID: m.ID, Queue: m.Queue, Body: string(m.Body), Deliveries: m.Deliveries,
			ServerUS: m.ServerUS, IntervalUS: m.IntervalUS, Shard: m.Shard, Node: m.Node, Epoch: m.Epoch, Replicated: m.Replicated}}
	}
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) ack(w http.ResponseWriter, r *http.Request) {
	if !s.decode(w, r, &struct{}{}, true) {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	if err := s.q.Ack(ctx, r.PathValue("queue"), r.PathValue("id")); err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"acked": true, "id": r.PathValue("id")})
}

func (s *Server) depth(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	n, shard, err := s.q.Depth(ctx, r.PathValue("queue"))
	if err != nil {
		s.fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"queue": r.PathValue("queue"), "shard": shard, "depth": n})
}

// ShardsResponse lists every shard's counts; shards that could not be read carry an
// error instead.
type ShardsResponse struct {
	Shards []ShardJSON `json:"shards"`
}

// ShardJSON is one shard's state.
type ShardJSON struct {
	queue.ShardStats
	Error string `json:"error,omitempty"`
	// DownSince: the shard's circuit is open (its calls fail at once) since then.
	DownSince *time.Time `json:"down_since,omitempty"`
}

func (s *Server) shards(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.RequestTimeout)
	defer cancel()
	ids := s.q.Shards()
	down := s.q.DownShards()
	out := ShardsResponse{Shards: make([]ShardJSON, len(ids))}
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			st, err := s.q.Stats(ctx, id)
			st.Shard = id
			out.Shards[i] = ShardJSON{ShardStats: st}
			if err != nil {
				out.Shards[i].Error = err.Error()
			}
			if at, ok := down[id]; ok {
				out.Shards[i].DownSince = &at
			}
		}()
	}
	wg.Wait()
	writeJSON(w, http.StatusOK, out)
}

func (s *Server) ready(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), s.cfg.ReadyTimeout)
	defer cancel()
	errs := s.q.Check(ctx)
	shards := map[string]string{}
	for _, id := range s.q.Shards() {
		shards[id] = "ok"
		if err := errs[id]; err != nil {
			shards[id] = err.Error()
		}
	}
	if len(shards) == 0 {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not_ready", "error": "no shards in the topology"})
		return
	}
	// Ready means this instance can serve: one bad shard is that shard's problem (it
	// shows here and in /v1/shards and the metrics), and taking every instance out of
	// the load balancer for it would stop the healthy shards too. Not ready only when
	// no shard at all can be served.
	if len(errs) == len(shards) {
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not_ready", "error": "no shard can be served", "shards": shards})
		return
	}
	status := "ready"
	if len(errs) > 0 {
		status = "ready_degraded"
	}
	writeJSON(w, http.StatusOK, map[string]any{"status": status, "shards": shards, "failing_shards": len(errs)})
}

// decode reads a JSON body strictly (no unknown fields, one value, size-limited).
// An empty body is accepted when optional.
func (s *Server) decode(w http.ResponseWriter, r *http.Request, v any, optional bool) bool {
	limit := int64(2*s.cfg.MaxBody + 4096)
	b, err := io.ReadAll(http.MaxBytesReader(w, r.Body, limit))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeErr(w, http.StatusRequestEntityTooLarge, string(queue.CategoryInvalid), fmt.Sprintf("request body over %d bytes", limit))
			return false
		}
		writeErr(w, http.StatusBadRequest, string(queue.CategoryInvalid), "reading the request body: "+err.Error())
		return false
	}
	if len(b) == 0 && optional {
		return true
	}
	dec := json.NewDecoder(bytesReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeErr(w, http.StatusBadRequest, string(queue.CategoryInvalid), "bad JSON body: "+err.Error())
		return false
	}
	if dec.More() {
		writeErr(w, http.StatusBadRequest, string(queue.CategoryInvalid), "bad JSON body: more than one value")
		return false
	}
	return true
}

// fail answers a queue error: 400/413 invalid, 404 unknown shard, 409 not in flight,
// 503 unavailable, 504 unknown outcome (retry with the same idempotency key), 500
// internal.
func (s *Server) fail(w http.ResponseWriter, r *http.Request, err error) {
	cat := queue.CategoryOf(err)
	code := http.StatusInternalServerError
	switch cat {
	case queue.CategoryInvalid:
		code = http.StatusBadRequest
		if errors.Is(err, queue.ErrBodyTooLarge) {
			code = http.StatusRequestEntityTooLarge
		}
	case queue.CategoryNotFound:
		code = http.StatusNotFound
		if errors.Is(err, queue.ErrNotInFlight) {
			code = http.StatusConflict
		}
	case queue.CategoryUnavailable, queue.CategoryCanceled:
		code = http.StatusServiceUnavailable
	case queue.CategoryUnknown:
		code = http.StatusGatewayTimeout
	}
	if code >= 500 {
		var qe *queue.Error
		ev := s.log.Warn().Err(err).Str("method", r.Method).Str("path", r.URL.Path).Str("category", string(cat))
		if errors.As(err, &qe) {
			ev = ev.Str("shard", qe.Shard).Str("reason", qe.Reason).Int("attempts", qe.Attempts)
		}
		ev.Msg("request failed")
	}
	writeErr(w, code, string(cat), err.Error())
}

// ErrorJSON is every error response.
type ErrorJSON struct {
	Error    string `json:"error"`
	Category string `json:"category"`
}

func writeErr(w http.ResponseWriter, code int, category, msg string) {
	writeJSON(w, code, ErrorJSON{Error: msg, Category: category})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// shardCollector reads each shard's counts at scrape time.
type shardCollector struct {
	q       Queue
	timeout time.Duration
}

var (
	descReady    = prometheus.NewDesc("ratequeue_shard_ready_queues", "Non-empty queues on the shard (read at scrape).", []string{"shard"}, nil)
	descInFlight = prometheus.NewDesc("ratequeue_shard_in_flight_messages", "Delivered, unacknowledged messages on the shard (read at scrape).", []string{"shard"}, nil)
	descStored   = prometheus.NewDesc("ratequeue_shard_stored_messages", "Messages stored on the shard, waiting or in flight: the shard's queue depth (read at scrape).", []string{"shard"}, nil)
	descUp       = prometheus.NewDesc("ratequeue_shard_up", "1 when the shard's primary answered the scrape's stats read.", []string{"shard"}, nil)
)

func (c *shardCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- descReady
	ch <- descInFlight
	ch <- descStored
	ch <- descUp
}

func (c *shardCollector) Collect(ch chan<- prometheus.Metric) {
	ctx, cancel := context.WithTimeout(context.Background(), c.timeout)
	defer cancel()
	ids := c.q.Shards()
	stats := make([]queue.ShardStats, len(ids))
	errs := make([]error, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		wg.Add(1)
		go func() {
			defer wg.Done()
			stats[i], errs[i] = c.q.Stats(ctx, id)
		}()
	}
	wg.Wait()
	for i, id := range ids {
		if errs[i] != nil {
			ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 0, id)
			continue
		}
		st := stats[i]
		ch <- prometheus.MustNewConstMetric(descUp, prometheus.GaugeValue, 1, id)
		ch <- prometheus.MustNewConstMetric(descReady, prometheus.GaugeValue, float64(st.ReadyQueues), id)
		ch <- prometheus.MustNewConstMetric(descInFlight, prometheus.GaugeValue, float64(st.InFlight), id)
		ch <- prometheus.MustNewConstMetric(descStored, prometheus.GaugeValue, float64(st.Stored), id)
	}
}
