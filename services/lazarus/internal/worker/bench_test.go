package worker

import (
	"context"
	"testing"
	"time"

	"github.com/heartline/heartline/shared/events"
)

// BenchmarkAlertToRouted measures lazarus alone: from the moment it handles a
// PRIMARY_DOWN alert to the new topology being routed, for a primary that refuses
// connections (kill -9) and for one that accepts them but never answers (SIGSTOP),
// where the 200 ms check timeout bounds the decision. Shards of a primary and two
// replicas; each iteration starts a fresh shard (not timed).
//
//	go test ./internal/worker -run XXX -bench AlertToRouted -benchtime 10x
func BenchmarkAlertToRouted(b *testing.B) {
	for _, mode := range []string{"refused", "sigstop"} {
		b.Run(mode, func(b *testing.B) {
			var toDecide, toPromote, toRoute time.Duration
			for i := 0; i < b.N; i++ {
				b.StopTimer()
				e := newEnv(b, 2)
				w := e.worker(testSettings("bench"), Hooks{})
				ctx := context.Background()
				w.ReconcileOnce(ctx)
				oldP := e.shard.Primary.Addr()
				if mode == "refused" {
					if err := e.shard.Primary.Kill(); err != nil {
						b.Fatal(err)
					}
				} else {
					if err := e.shard.Primary.Pause(); err != nil {
						b.Fatal(err)
					}
				}
				alert := alertEvent(events.AlertPrimaryDown, oldP, 1)
				b.StartTimer()
				start := time.Now()
				if err := w.HandleAlert(ctx, alert); err != nil {
					b.Fatal(err)
				}
				b.StopTimer()
				recs := e.records()
				if len(recs) != 1 || recs[0].Phases.Routed.IsZero() {
					b.Fatalf("no failover: %+v", recs)
				}
				ph := recs[0].Phases
				toDecide += ph.Decided.Sub(start)
				toPromote += ph.Promoted.Sub(start)
				toRoute += ph.Routed.Sub(start)
				_ = e.shard.Primary.Resume()
			}
			n := float64(b.N)
			b.ReportMetric(float64(toDecide.Milliseconds())/n, "ms-to-decided")
			b.ReportMetric(float64(toPromote.Microseconds())/n/1000, "ms-to-promoted")
			b.ReportMetric(float64(toRoute.Microseconds())/n/1000, "ms-to-routed")
		})
	}
}
