package agent

import (
	"encoding/json"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Handler serves /healthz (the process is alive), /readyz (the agent is probing and
// knows its primary; 503 otherwise, with the reason) and /metrics.
func (a *Agent) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("/readyz", func(w http.ResponseWriter, r *http.Request) {
		ready, why := a.Ready()
		streamOK, lastOK := a.out.Healthy()
		a.mu.Lock()
		body := map[string]any{
			"ready": ready, "reason": why, "shard": a.st.shard, "replica": a.cfg.Replica,
			"primary": a.st.primary, "primary_source": a.st.source, "epoch": a.st.epoch,
			"frozen": a.st.frozen, "buffered": a.out.Len(), "stream_ok": streamOK,
		}
		if a.st.frozen {
			body["frozen_reason"] = a.st.park.reason
			body["frozen_since"] = a.st.park.at.UTC().Format(time.RFC3339Nano)
		}
		a.mu.Unlock()
		if !lastOK.IsZero() {
			body["last_published"] = lastOK.UTC().Format(time.RFC3339Nano)
		}
		w.Header().Set("Content-Type", "application/json")
		if !ready {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
		_ = json.NewEncoder(w).Encode(body)
	})
	mux.Handle("/metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	return mux
}
