package alerter

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heartline/heartline/shared/events"
)

// metrics are the alerter's Prometheus metrics (see README.md).
type metrics struct {
	heartbeats   *prometheus.CounterVec
	shards       *prometheus.GaugeVec
	flapping     prometheus.Gauge
	alerts       *prometheus.CounterVec
	latency      prometheus.Histogram
	delay        prometheus.Histogram
	lag          prometheus.Gauge
	kvErrors     *prometheus.CounterVec
	publishErrs  prometheus.Counter
	conflicts    prometheus.Counter
	droppedShard prometheus.Counter
	stalled      prometheus.Gauge
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		heartbeats: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "alerter_heartbeats_total",
			Help: "Heartbeat messages handled, by result: accepted; duplicate, out_of_order, stale (ignored); malformed, rejected (dead-lettered)."},
			[]string{"result"}),
		shards: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "alerter_shards",
			Help: "Shards this instance tracks, by state (OK, SOFT, HARD, AGENT_LOST)."}, []string{"state"}),
		flapping: prometheus.NewGauge(prometheus.GaugeOpts{Name: "alerter_shards_flapping",
			Help: "Shards this instance tracks that are flapping."}),
		alerts: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "alerter_alerts_published_total",
			Help: "Alert events published, by kind (alert.opened, alert.escalated, alert.resolved) and code."},
			[]string{"kind", "code"}),
		latency: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "alerter_decision_latency_seconds",
			Help:    "From the stream's acceptance of the heartbeat that completed a decision to the alert's publication (decisions on heartbeats only).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5}}),
		delay: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "alerter_heartbeat_delay_seconds",
			Help:    "From a heartbeat's acceptance by the stream to the end of its handling (consumer lag per message).",
			Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}}),
		lag: prometheus.NewGauge(prometheus.GaugeOpts{Name: "alerter_consumer_lag_seconds",
			Help: "Consumer lag: the largest, over the stream partitions, of the age of the partition's last handled heartbeat when its handling ended (updated every tick)."}),
		kvErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "alerter_kv_errors_total",
			Help: "Failed kv operations on incident and owner records, by operation."}, []string{"op"}),
		publishErrs: prometheus.NewCounter(prometheus.CounterOpts{Name: "alerter_publish_errors_total",
			Help: "Alert publications that failed (the alert stays in its incident record and is published again)."}),
		conflicts: prometheus.NewCounter(prometheus.CounterOpts{Name: "alerter_incident_conflicts_total",
			Help: "Incident writes that lost a compare-and-set to another instance or incarnation; the alerter reloaded and decided again."}),
		droppedShard: prometheus.NewCounter(prometheus.CounterOpts{Name: "alerter_shards_handed_over_total",
			Help: "Shards dropped from memory because another instance claimed them."}),
		stalled: prometheus.NewGauge(prometheus.GaugeOpts{Name: "alerter_input_stalled",
			Help: "1 while many shards went silent at once (at least 10 and 10% of those tracked: the stream or the consumer stalled); AGENT_LOST is not decided meanwhile."}),
	}
	reg.MustRegister(m.stalled, m.heartbeats, m.shards, m.flapping, m.alerts, m.latency, m.delay, m.lag, m.kvErrors,
		m.publishErrs, m.conflicts, m.droppedShard)
	for _, r := range []string{"accepted", "duplicate", "out_of_order", "stale", "malformed", "rejected"} {
		m.heartbeats.WithLabelValues(r)
	}
	for _, k := range []events.Kind{events.KindAlertOpened, events.KindAlertEscalated, events.KindAlertResolved} {
		for _, c := range []events.AlertCode{events.AlertPrimaryDown, events.AlertPrimaryDataRegressed, events.AlertPrimaryRoleChanged,
			events.AlertReplicaProblem, events.AlertAgentLost, events.AlertConfigDrift} {
			m.alerts.WithLabelValues(string(k), string(c))
		}
	}
	for _, s := range []events.State{events.StateOK, events.StateSoft, events.StateHard, events.StateAgentLost} {
		m.shards.WithLabelValues(string(s))
	}
	return m
}
