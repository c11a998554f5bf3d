package decide

import (
	"testing"

	"github.com/heartline/heartline/shared/events"
)

// FuzzDecide checks the engine's invariants over arbitrary node states: it never
// panics; a failover names a reachable replica of the shard that is not behind the
// acknowledged offset; a hold always says how to lift it; an abort or failover always
// explains itself.
func FuzzDecide(f *testing.F) {
	f.Add(false, true, true, int64(1000), int64(990), int64(1000), int64(990), int64(50), int64(50), false, false, uint8(0))
	f.Add(true, true, false, int64(10), int64(990), int64(1000), int64(990), int64(0), int64(50), true, true, uint8(3))
	f.Fuzz(func(t *testing.T, pUp, r1Up, r2Up bool, pOff, r1Off, r2Off, acked, pKeys, rKeys int64, sameHistory, flapping bool, holdSel uint8) {
		in := healthyInput()
		in.Primary.Reachable, in.Primary.Offset, in.Primary.Keys = pUp, pOff, pKeys
		in.Replicas[0].Reachable, in.Replicas[0].Offset, in.Replicas[0].Keys = r1Up, r1Off, rKeys
		in.Replicas[1].Reachable, in.Replicas[1].Offset = r2Up, r2Off
		if !sameHistory {
			in.Primary.ReplID = newID
		}
		in.Last.AckedOffset = acked
		in.Alert.Flapping = flapping
		switch holdSel % 4 {
		case 1:
			in.Holds.Paused = &Pause{}
		case 2:
			in.Holds.CooldownUntil = t0.Add(1)
		case 3:
			in.Holds.Fleet = Fleet{Running: 1, MaxConcurrent: 1}
		}
		o := Decide(in)
		if _, ok := Info(o.Reason); !ok {
			t.Fatalf("reason %q not in the catalog", o.Reason)
		}
		switch o.Decision {
		case events.DecisionFailover:
			ok := false
			for _, r := range in.Replicas {
				if r.Addr == o.Candidate {
					ok = r.Reachable && (o.Bound < 0 || r.Offset >= o.Bound)
				}
			}
			if !ok {
				t.Fatalf("candidate %q is not an eligible replica: %+v", o.Candidate, o)
			}
			if o.LossWindow < -1 {
				t.Fatalf("loss window %d", o.LossWindow)
			}
		case events.DecisionHold:
			if o.Override == "" {
				t.Fatal("hold without override")
			}
		}
		if o.Detail == "" {
			t.Fatal("no detail")
		}
	})
}
