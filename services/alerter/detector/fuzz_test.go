package detector_test

import (
	"fmt"
	"testing"
	"time"

	"github.com/heartline/heartline/services/alerter/detector"
	"github.com/heartline/heartline/shared/events"
)

// FuzzShard drives one shard with an arbitrary sequence of heartbeats (three agents,
// healthy or failing, flags, duplicates, restarts, clock jumps) and ticks, and checks
// the invariants of the alert stream: an incident opens only when none is open, every
// escalation and resolution names the open incident, PRIMARY_DOWN always has a majority
// of the reporting agents behind it, AGENT_LOST is only decided on a tick, and every
// alert is a valid event.
func FuzzShard(f *testing.F) {
	f.Add([]byte{0x00, 0x01, 0x02, 0x10, 0x10, 0x10, 0x10, 0x00, 0x00})
	f.Add([]byte{0x10, 0x11, 0x10, 0x11, 0x10, 0x11, 0xf0, 0xf0, 0xf0, 0xf0})
	f.Add([]byte{0x40, 0x80, 0xc0, 0x20, 0x30, 0xe1, 0xe2, 0x10, 0x10, 0x10, 0x10})
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f.Fuzz(func(t *testing.T, ops []byte) {
		cfg := detector.DefaultConfig()
		cfg.FlapWindow = 20 * time.Second
		n := 0
		sh := detector.NewShard("shard-1", cfg, func() string { n++; return fmt.Sprintf("inc-%d", n) })
		now := t0
		type agent struct {
			seq   uint64
			start time.Time
		}
		agents := [3]*agent{{start: t0}, {start: t0}, {start: t0}}
		open := ""
		src := events.Source{Service: "alerter", Instance: "fuzz"}
		for i, op := range ops {
			a := int(op & 0x03)
			kind := op >> 4
			var ds []detector.Decision
			tick := false
			switch {
			case a == 3 || kind == 0x0f:
				now = now.Add(time.Duration(op&0x0f) * 500 * time.Millisecond)
				ds = sh.Tick(now)
				tick = true
			default:
				now = now.Add(time.Duration(op>>2&0x03) * 100 * time.Millisecond)
				ag := agents[a]
				switch kind {
				case 0x0e: // restart
					ag.start = ag.start.Add(time.Second)
					ag.seq = 0
				case 0x0d: // duplicate / out of order
					if ag.seq > 1 {
						ag.seq--
					}
				}
				ag.seq++
				p := &events.Heartbeat{Seq: ag.seq, AgentStart: ag.start, Interval: 250 * time.Millisecond,
					Replica: events.ReplicaState{Addr: fmt.Sprintf("r%d:1", a)},
					Primary: events.PrimaryProbe{Addr: "p:1", OK: kind&1 == 0, Role: "master"}}
				switch kind {
				case 0x04:
					p.Flags = []events.Flag{events.FlagPrimaryDataRegressed}
				case 0x08:
					p.Flags = []events.Flag{events.FlagPrimaryRoleChanged}
				case 0x0c:
					p.Flags = []events.Flag{events.FlagConfigDrift}
				case 0x02:
					p.Replica.Frozen = true
				case 0x06:
					p.Primary.Addr = "q:1"
				}
				hb := detector.Heartbeat{ID: fmt.Sprintf("hb-%d", i), Agent: fmt.Sprintf("a%d", a), Time: now, Published: now, Payload: p}
				_, ds = sh.Observe(now, hb)
			}
			for _, d := range ds {
				if err := events.Validate(d.Event(src, now)); err != nil {
					t.Fatalf("op %d: invalid alert: %v", i, err)
				}
				al := d.Alert
				switch d.Kind {
				case events.KindAlertOpened:
					if open != "" {
						t.Fatalf("op %d: opened %s while %s is open", i, al.IncidentID, open)
					}
					open = al.IncidentID
				case events.KindAlertEscalated, events.KindAlertResolved:
					if open != al.IncidentID {
						t.Fatalf("op %d: %s of %s while %q is open", i, d.Kind, al.IncidentID, open)
					}
					if d.Kind == events.KindAlertResolved {
						open = ""
					}
				}
				if d.Kind != events.KindAlertResolved && al.Code == events.AlertPrimaryDown && al.State == events.StateHard &&
					d.Kind == events.KindAlertOpened && 2*al.AgentsDown <= al.AgentsReporting {
					t.Fatalf("op %d: PRIMARY_DOWN opened with %d of %d agents down", i, al.AgentsDown, al.AgentsReporting)
				}
				if d.Kind == events.KindAlertOpened && al.Code == events.AlertAgentLost && !tick {
					t.Fatalf("op %d: AGENT_LOST decided on a heartbeat", i)
				}
			}
			if p := sh.Persisted(); (p.Incident == nil) != (open == "") {
				t.Fatalf("op %d: persisted incident %+v, alerts say open=%q", i, p.Incident, open)
			}
		}
	})
}
