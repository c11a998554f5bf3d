package loadgen_test

import (
	"bytes"
	"context"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/ratequeue/checker"
	"github.com/heartline/heartline/services/ratequeue/history"
	"github.com/heartline/heartline/services/ratequeue/internal/rqtest"
	"github.com/heartline/heartline/services/ratequeue/loadgen"
	"github.com/heartline/heartline/services/ratequeue/queue"
)

// A failover in the middle of a load run: the client follows the topology without a
// restart, and with ack=replica nothing acknowledged is lost and no rate is broken.
func TestFailoverUnderLoadLosesNothing(t *testing.T) {
	cl := rqtest.Start(t, 2)
	qc, err := queue.New(queue.Config{Topology: cl.Follower, Metrics: queue.NewMetrics(prometheus.NewRegistry()), Log: zerolog.Nop(),
		DefaultRate: 50, WaitTimeout: 300 * time.Millisecond, OpTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer qc.Close()
	var buf bytes.Buffer
	w := history.NewWriter(&buf)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	done := make(chan struct{})
	var sum loadgen.Summary
	var runErr error
	go func() {
		defer close(done)
		sum, runErr = loadgen.Run(ctx, loadgen.Config{Run: "fo", Queues: 20, EnqueueRate: 300, Duration: 4 * time.Second,
			Concurrency: 8, Consumers: 4, Visibility: 2 * time.Second, DrainTimeout: 60 * time.Second}, loadgen.Direct{C: qc}, w, zerolog.Nop())
	}()
	time.Sleep(1500 * time.Millisecond) // let the load run a while before the failover (not waiting for a condition)
	next := cl.Promote(t, 0)
	<-done
	if runErr != nil {
		t.Fatal(runErr)
	}
	evs, err := history.ReadAll(&buf)
	if err != nil {
		t.Fatal(err)
	}
	r := checker.Check(evs, checker.Options{RateTolerance: time.Millisecond})
	t.Logf("%s", sum)
	var out bytes.Buffer
	r.WriteTable(&out)
	t.Logf("\n%s", out.String())
	if !r.Valid || r.Lost != 0 || r.Unexpected != 0 || !r.Drained || r.RateViolations != 0 {
		t.Fatalf("after a failover: %+v", r)
	}
	// The longest gap between acknowledged enqueues on the failed-over shard: how long
	// writes to it stalled (the manual promotion here includes a full resync of the
	// old primary, so this is not lazarus's figure).
	var last, gap int64
	for _, e := range evs {
		if e.Type == history.TypeEnqueue && e.Status == history.StatusOK && e.Shard == "shard-0" {
			if last > 0 && e.CompleteUS-last > gap {
				gap = e.CompleteUS - last
			}
			last = max(last, e.CompleteUS)
		}
	}
	t.Logf("longest stall of acknowledged enqueues on shard-0: %.0f ms", float64(gap)/1000)
	after := 0
	for _, e := range evs {
		if e.Type == history.TypeEnqueue && e.Status == history.StatusOK && e.Shard == "shard-0" && e.Epoch == next.Epoch {
			after++
		}
	}
	if after == 0 {
		t.Fatal("no enqueue was acknowledged by the new primary")
	}
}
