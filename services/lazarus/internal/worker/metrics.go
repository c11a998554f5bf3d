package worker

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heartline/heartline/shared/events"
)

// Metrics are lazarus's Prometheus metrics, registered on an explicit registry.
type Metrics struct {
	Failovers  *prometheus.CounterVec   // result
	Phases     *prometheus.HistogramVec // phase
	Steps      *prometheus.HistogramVec // step
	Holds      *prometheus.CounterVec   // reason
	Decisions  *prometheus.CounterVec   // decision, reason
	LeaseHeld  *prometheus.GaugeVec     // shard
	Reconciles *prometheus.CounterVec   // action
	// Spares.
	NoReplica     *prometheus.GaugeVec   // shard
	SpareAttaches *prometheus.CounterVec // result
	SparesFree    prometheus.Gauge
	Degraded      *prometheus.GaugeVec // shard
}

// MetricHelp lists every metric with its help text, for the README.
var MetricHelp = [][2]string{
	{"lazarus_failovers_total{result}", "Failovers by result: completed, degraded (completed, write not yet verified as replicated), aborted, rolled_back."},
	{"lazarus_failover_phase_seconds{phase}", "Duration of each failover phase: detect_to_alert, alert_to_decide, decide_to_promote, promote_to_route, route_to_verify, detect_to_route."},
	{"lazarus_failover_step_seconds{step}", "Duration of each failover step (fence_old_primary, promote, stamp_epoch, ...)."},
	{"lazarus_holds_total{reason}", "Held failovers by reason: FLAPPING, COOLDOWN, PAUSED, FLEET_LIMIT."},
	{"lazarus_decisions_total{decision,reason}", "Every decision by decision (failover, no_action, hold, abort) and reason code."},
	{"lazarus_lease_held{shard}", "1 while this instance holds the shard's lease."},
	{"lazarus_reconcile_actions_total{action}", "Corrections by the reconcile loop: demote_rogue_primary, repoint_replica, unfence_primary, verify_later, recover_failover, refused_wipe, repoint_returning_spare, degrade, undegrade, restore_min_replicas."},
	{"lazarus_shard_without_replica{shard}", "1 while the shard's primary is fine and no replica is in sync (under min-replicas-to-write 1 the shard refuses writes): the standing NO_REPLICA condition, until a replica or a spare is in sync."},
	{"lazarus_spare_attaches_total{result}", "Spare attaches by result: attached, failed."},
	{"lazarus_shard_degraded{shard}", "1 while the shard is degraded (durability degrade, no replica in sync): writes are acknowledged by the primary alone."},
	{"lazarus_spares_free", "Spares in the pool not claimed by an attach, as of the last reconcile pass."},
}

// NewMetrics creates and registers the metrics on reg (nil: not registered).
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30}
	m := &Metrics{
		Failovers: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lazarus_failovers_total",
			Help: "Failovers by result."}, []string{"result"}),
		Phases: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "lazarus_failover_phase_seconds",
			Help: "Duration of each failover phase.", Buckets: buckets}, []string{"phase"}),
		Steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "lazarus_failover_step_seconds",
			Help: "Duration of each failover step.", Buckets: buckets}, []string{"step"}),
		Holds: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lazarus_holds_total",
			Help: "Held failovers by reason."}, []string{"reason"}),
		Decisions: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lazarus_decisions_total",
			Help: "Decisions by decision and reason."}, []string{"decision", "reason"}),
		LeaseHeld: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lazarus_lease_held",
			Help: "1 while this instance holds the shard's lease."}, []string{"shard"}),
		Reconciles: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lazarus_reconcile_actions_total",
			Help: "Corrections made by the reconcile loop."}, []string{"action"}),
		NoReplica: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lazarus_shard_without_replica",
			Help: "1 while the shard's primary is fine and no replica is in sync."}, []string{"shard"}),
		SpareAttaches: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "lazarus_spare_attaches_total",
			Help: "Spare attaches by result."}, []string{"result"}),
		Degraded: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "lazarus_shard_degraded",
			Help: "1 while the shard is degraded (writes acknowledged by the primary alone)."}, []string{"shard"}),
		SparesFree: prometheus.NewGauge(prometheus.GaugeOpts{Name: "lazarus_spares_free",
			Help: "Spares in the pool not claimed by an attach."}),
	}
	for _, r := range []string{"attached", "failed"} {
		m.SpareAttaches.WithLabelValues(r)
	}
	if reg != nil {
		reg.MustRegister(m.Failovers, m.Phases, m.Steps, m.Holds, m.Decisions, m.LeaseHeld, m.Reconciles, m.NoReplica, m.SpareAttaches, m.SparesFree, m.Degraded)
	}
	return m
}

func (m *Metrics) observePhases(p events.Phases) {
	obs := func(name string, a, b time.Time) {
		if !a.IsZero() && !b.IsZero() && !b.Before(a) {
			m.Phases.WithLabelValues(name).Observe(b.Sub(a).Seconds())
		}
	}
	obs("detect_to_alert", p.Detected, p.Alerted)
	obs("alert_to_decide", p.Alerted, p.Decided)
	obs("decide_to_promote", p.Decided, p.Promoted)
	obs("promote_to_route", p.Promoted, p.Routed)
	obs("route_to_verify", p.Routed, p.Verified)
	obs("detect_to_route", p.Detected, p.Routed)
}
