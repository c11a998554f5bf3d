package agent

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/heartline/heartline/shared/events"
)

// metrics are the agent's Prometheus metrics (see README.md).
type metrics struct {
	probes        *prometheus.CounterVec
	probeLatency  *prometheus.HistogramVec
	cycle         prometheus.Histogram
	published     prometheus.Counter
	buffered      prometheus.Gauge
	dropped       prometheus.Counter
	streamErrors  prometheus.Counter
	freezes       *prometheus.CounterVec
	unfreezes     prometheus.Counter
	resyncs       *prometheus.CounterVec
	freezeErrors  *prometheus.CounterVec
	frozen        prometheus.Gauge
	parkAnswers   prometheus.Counter
	parkGuardOff  prometheus.Gauge
	flagsRaised   *prometheus.CounterVec
	flagActive    *prometheus.GaugeVec
	watchBreaks   *prometheus.CounterVec
	watchUp       prometheus.Gauge
	driftParams   prometheus.Gauge
	driftErrors   prometheus.Counter
	heartbeatSize prometheus.Histogram
}

var allFlags = []events.Flag{events.FlagPrimaryRestarted, events.FlagPrimaryDataRegressed,
	events.FlagPrimaryRoleChanged, events.FlagConfigDrift, events.FlagReplicationFrozen, events.FlagParkGuardOff}

// Label values.
const (
	targetPrimary = "primary"
	targetReplica = "replica"

	resultOK      = "ok"
	resultTimeout = "timeout"
	resultRefused = "refused"
	resultLoading = "loading"
	resultError   = "error"
)

func newMetrics(reg prometheus.Registerer) *metrics {
	lat := []float64{.0002, .0005, .001, .0025, .005, .01, .025, .05, .1, .15, .25, .5, 1}
	m := &metrics{
		probes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agent_probes_total",
			Help: "Probes by target (primary, replica) and result (ok, timeout, refused, loading, error)."},
			[]string{"target", "result"}),
		probeLatency: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "agent_probe_duration_seconds",
			Help: "Duration of one probe (one pipelined round trip: PING and INFO on the primary, INFO on the replica), by target.", Buckets: lat},
			[]string{"target"}),
		cycle: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "agent_probe_cycle_duration_seconds",
			Help: "Duration of a whole probe cycle: both probes, decisions, any park or unpark, heartbeat queued.", Buckets: lat}),
		published: prometheus.NewCounter(prometheus.CounterOpts{Name: "agent_heartbeats_published_total",
			Help: "Heartbeats the stream accepted."}),
		buffered: prometheus.NewGauge(prometheus.GaugeOpts{Name: "agent_heartbeats_buffered",
			Help: "Heartbeats waiting to be published (high while the stream is unavailable)."}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{Name: "agent_heartbeats_dropped_total",
			Help: "Heartbeats dropped: the oldest buffered ones when the buffer was full during a stream outage, or ones the stream refused as invalid."}),
		streamErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "agent_stream_errors_total",
			Help: "Failed attempts to publish heartbeats (each is retried with backoff)."}),
		freezes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agent_freezes_total",
			Help: "Times the agent parked its replica (REPLICAOF <park-addr>, default 127.0.0.1 1 on loopback), by reason (primary_gone, primary_restarted, link_down, primary_regressed)."},
			[]string{"reason"}),
		unfreezes: prometheus.NewCounter(prometheus.CounterOpts{Name: "agent_unfreezes_total",
			Help: "Times the agent unparked its replica (REPLICAOF <primary>) after a partial resync looked certain for unfreeze-after."}),
		resyncs: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agent_unfreeze_resyncs_total",
			Help: "How the replica resumed after an unpark, as the primary's sync counters show: partial, full, unknown (counters unreadable), timeout (the link did not come up)."},
			[]string{"kind"}),
		freezeErrors: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agent_freeze_errors_total",
			Help: "Failed park or unpark commands, by operation (park, unpark); they are retried."},
			[]string{"op"}),
		frozen: prometheus.NewGauge(prometheus.GaugeOpts{Name: "agent_replica_frozen",
			Help: "1 while the replica is parked (REPLICATION_FROZEN), else 0."}),
		parkAnswers: prometheus.NewCounter(prometheus.CounterOpts{Name: "agent_park_addr_answers_total",
			Help: "Checks of the park address (at start, every drift-every probes and before every park) that found something accepting connections there; the agent does not park while that holds."}),
		parkGuardOff: prometheus.NewGauge(prometheus.GaugeOpts{Name: "agent_park_guard_off",
			Help: "1 while the last check of the park address found something accepting connections: the replica will not be parked when its primary dies (heartbeat flag PARK_GUARD_OFF)."}),
		flagsRaised: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agent_flags_raised_total",
			Help: "Times a flag appeared in a heartbeat after one without it, by flag."},
			[]string{"flag"}),
		flagActive: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "agent_flag_active",
			Help: "1 while the latest heartbeat carries the flag, by flag."},
			[]string{"flag"}),
		watchBreaks: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "agent_watch_breaks_total",
			Help: "Times the watch connection to the primary broke, by what a check of the primary found (gone, restarted, same, unknown)."},
			[]string{"verdict"}),
		watchUp: prometheus.NewGauge(prometheus.GaugeOpts{Name: "agent_watch_connected",
			Help: "1 while the watch connection to the primary is established."}),
		driftParams: prometheus.NewGauge(prometheus.GaugeOpts{Name: "agent_config_drift_params",
			Help: "Declared parameters that differ on the primary or the replica, as of the last check."}),
		driftErrors: prometheus.NewCounter(prometheus.CounterOpts{Name: "agent_config_drift_check_errors_total",
			Help: "Drift checks (CONFIG GET) that failed; the previous result stands."}),
		heartbeatSize: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "agent_heartbeat_bytes",
			Help: "Size of encoded heartbeats.", Buckets: prometheus.ExponentialBuckets(256, 2, 8)}),
	}
	reg.MustRegister(m.probes, m.probeLatency, m.cycle, m.published, m.buffered, m.dropped, m.streamErrors,
		m.freezes, m.unfreezes, m.resyncs, m.freezeErrors, m.frozen, m.parkAnswers, m.parkGuardOff, m.flagsRaised, m.flagActive,
		m.watchBreaks, m.watchUp, m.driftParams, m.driftErrors, m.heartbeatSize)
	for _, t := range []string{targetPrimary, targetReplica} {
		for _, r := range []string{resultOK, resultTimeout, resultRefused, resultLoading, resultError} {
			m.probes.WithLabelValues(t, r)
		}
		m.probeLatency.WithLabelValues(t)
	}
	for _, r := range []string{reasonPrimaryGone, reasonPrimaryRestarted, reasonLinkDown, reasonRegressed} {
		m.freezes.WithLabelValues(r)
	}
	for _, k := range []string{"partial", "full", "unknown", "timeout"} {
		m.resyncs.WithLabelValues(k)
	}
	for _, op := range []string{"park", "unpark"} {
		m.freezeErrors.WithLabelValues(op)
	}
	for _, f := range allFlags {
		m.flagsRaised.WithLabelValues(string(f))
		m.flagActive.WithLabelValues(string(f))
	}
	for _, v := range []string{verdictGone, verdictRestarted, verdictSame, verdictUnknown} {
		m.watchBreaks.WithLabelValues(v)
	}
	return m
}
