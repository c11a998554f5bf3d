package failbench

import (
	"strings"
	"testing"
	"time"
)

func TestTableMediansAndShares(t *testing.T) {
	k := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	run := func(n int, alert, decide, promote, route, ack time.Duration) Run {
		return Run{N: n, Kill: k, Alerted: k.Add(alert), Decided: k.Add(decide), Promoted: k.Add(promote), Routed: k.Add(route), FirstAck: k.Add(ack), NewPrimary: "x"}
	}
	res := Result{Detection: "synthetic", CheckOK: true, Acked: 10, Runs: []Run{
		run(1, 500*time.Millisecond, 510*time.Millisecond, 520*time.Millisecond, 530*time.Millisecond, 540*time.Millisecond),
		run(2, 300*time.Millisecond, 320*time.Millisecond, 330*time.Millisecond, 340*time.Millisecond, 360*time.Millisecond),
		// An alert opened before the kill: detection is counted up to the decision.
		run(3, -time.Second, 700*time.Millisecond, 710*time.Millisecond, 720*time.Millisecond, 730*time.Millisecond),
		{N: 4, Err: "no failover within 30 s"},
	}}
	total, meds, n := res.Median()
	if n != 3 || total != 540*time.Millisecond || meds[0] != 500*time.Millisecond || meds[1] != 10*time.Millisecond {
		t.Fatalf("median %s %v over %d", total, meds, n)
	}
	tab := res.Table()
	for _, want := range []string{"| 3 * | 700 ms | 0.0 ms |", "| 4 | incomplete: no failover within 30 s |", "**540 ms**", "\\* the alert was opened before the kill", "passed"} {
		if !strings.Contains(tab, want) {
			t.Errorf("table lacks %q:\n%s", want, tab)
		}
	}
	if strings.Index(tab, "median of 3") > strings.Index(tab, "the alert was opened") {
		t.Errorf("footnote inside the table:\n%s", tab)
	}
}
