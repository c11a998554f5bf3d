package injector

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the chaos service's Prometheus metrics, registered on an explicit
// registry.
type Metrics struct {
	Attacks     *prometheus.CounterVec
	Active      prometheus.Gauge
	Halts       prometheus.Counter
	Experiments *prometheus.CounterVec
	Schedule    *prometheus.CounterVec
}

// NewMetrics registers the metrics on reg (nil: a private registry).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	if reg == nil {
		reg = prometheus.NewRegistry()
	}
	m := &Metrics{
		Attacks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chaos_attacks_total",
			Help: "Attacks by fault kind and result: started, dry_run, refused, failed (apply error), recovered, halted."},
			[]string{"fault", "result"}),
		Active: prometheus.NewGauge(prometheus.GaugeOpts{Name: "chaos_active_faults",
			Help: "Attacks currently applied and not yet recovered."}),
		Halts: prometheus.NewCounter(prometheus.CounterOpts{Name: "chaos_halts_total",
			Help: "Halts (API call or signal) that recovered every active attack."}),
		Experiments: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chaos_experiments_total",
			Help: "Experiment runs by result: passed, failed (a hypothesis did not hold), aborted, error (could not run)."},
			[]string{"result"}),
		Schedule: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "chaos_schedule_runs_total",
			Help: "Scheduled chaos slots by outcome: ran, skipped_incident, skipped_no_shard, error."},
			[]string{"outcome"}),
	}
	reg.MustRegister(m.Attacks, m.Active, m.Halts, m.Experiments, m.Schedule)
	return m
}
