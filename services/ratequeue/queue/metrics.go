package queue

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the client's Prometheus metrics. A nil *Metrics records nothing.
type Metrics struct {
	ops      *prometheus.CounterVec
	retries  *prometheus.CounterVec
	errors   *prometheus.CounterVec
	duration *prometheus.HistogramVec
	unrepl   *prometheus.CounterVec
	open     *prometheus.GaugeVec
}

// NewMetrics registers the client metrics with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		ops: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratequeue_ops_total",
			Help: "Queue operations by op (enqueue, dequeue, ack), shard and result (ok, duplicate, empty, not_in_flight, or an error category).",
		}, []string{"op", "shard", "result"}),
		retries: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratequeue_retries_total",
			Help: "Attempts retried by op and reason (dial, conn, timeout, readonly, masterdown, noreplicas, loading, busy, staleepoch_newer, staleepoch_older, stale_topology, not_replicated, pool).",
		}, []string{"op", "reason"}),
		errors: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratequeue_errors_total",
			Help: "Failed operations by op and error category (invalid, not_found, unavailable, unknown_outcome, canceled, internal).",
		}, []string{"op", "category"}),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "ratequeue_op_duration_seconds",
			Help:    "Duration of queue operations including retries, by op.",
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"op"}),
		unrepl: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "ratequeue_unreplicated_writes_total",
			Help: "Writes (enqueue, dequeue) acknowledged by the primary alone because their shard was degraded (durability degrade, no replica in sync), by op and shard; a second failure before a replica is in sync loses them.",
		}, []string{"op", "shard"}),
	}
	m.open = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ratequeue_shard_circuit_open",
		Help: "1 while the shard's circuit is open: its calls failed for breaker-after without a success, so calls to it fail at once (one probe per breaker-probe).",
	}, []string{"shard"})
	reg.MustRegister(m.ops, m.retries, m.errors, m.duration, m.unrepl, m.open)
	return m
}

func (m *Metrics) op(op, shard, result string, d time.Duration) {
	if m == nil {
		return
	}
	m.ops.WithLabelValues(op, shard, result).Inc()
	m.duration.WithLabelValues(op).Observe(d.Seconds())
}

func (m *Metrics) unreplicated(op, shard string) {
	if m == nil {
		return
	}
	m.unrepl.WithLabelValues(op, shard).Inc()
}

func (m *Metrics) circuit(shard string, open bool) {
	if m == nil {
		return
	}
	v := 0.0
	if open {
		v = 1
	}
	m.open.WithLabelValues(shard).Set(v)
}

func (m *Metrics) retry(op, reason string) {
	if m == nil {
		return
	}
	m.retries.WithLabelValues(op, reason).Inc()
}

func (m *Metrics) fail(op, shard string, cat Category, d time.Duration) {
	if m == nil {
		return
	}
	m.errors.WithLabelValues(op, string(cat)).Inc()
	m.ops.WithLabelValues(op, shard, string(cat)).Inc()
	m.duration.WithLabelValues(op).Observe(d.Seconds())
}
