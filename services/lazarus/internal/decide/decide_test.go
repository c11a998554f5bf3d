package decide

import (
	"strings"
	"testing"
	"time"

	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/topology"
)

var t0 = time.Date(2026, 1, 2, 15, 4, 5, 0, time.UTC)

const (
	pAddr  = "127.0.0.1:7000"
	r1Addr = "127.0.0.1:7001"
	r2Addr = "127.0.0.1:7002"
	oldID  = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"
	newID  = "bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb"
)

func healthyInput() Input {
	return Input{
		Now:   t0,
		Alert: Alert{Kind: events.KindAlertOpened, Code: events.AlertPrimaryDown, Epoch: 3, IncidentID: "inc-1", CorrelationID: "hb-1", Primary: pAddr},
		Known: true,
		Shard: topology.Shard{ID: "shard-1", Epoch: 3, Primary: pAddr, Replicas: []string{r1Addr, r2Addr}},
		Primary: Node{Addr: pAddr, Reachable: true, Role: "master", RunID: "run-1", ReplID: oldID, Offset: 1000, Keys: 50,
			AckedOffset: 990, AttachedReplicas: 2},
		Replicas: []Node{
			{Addr: r1Addr, Reachable: true, Role: "slave", MasterAddr: pAddr, LinkUp: true, ReplID: oldID, Offset: 990, Keys: 50},
			{Addr: r2Addr, Reachable: true, Role: "slave", MasterAddr: pAddr, LinkUp: true, ReplID: oldID, Offset: 1000, Keys: 50},
		},
		Last:   &Known{Epoch: 3, Addr: pAddr, RunID: "run-1", ReplID: oldID, Offset: 1000, AckedOffset: 990, At: t0.Add(-time.Second)},
		MaxLag: 1 << 20,
	}
}

func down(in Input) Input {
	in.Primary = Node{Addr: pAddr, Err: "connection refused"}
	return in
}

func TestDecideReasons(t *testing.T) {
	cases := []struct {
		name     string
		in       func() Input
		decision events.Decision
		reason   Reason
		check    func(t *testing.T, o Outcome)
	}{
		{"primary healthy: false alarm", healthyInput, events.DecisionNoAction, PrimaryHealthy, nil},
		{"primary healthy with parked replicas", func() Input {
			in := healthyInput()
			in.Replicas[0].Parked, in.Replicas[0].MasterAddr, in.Replicas[0].LinkUp = true, "127.0.0.1:1", false
			return in
		}, events.DecisionNoAction, PrimaryHealthy, func(t *testing.T, o Outcome) {
			if !strings.Contains(o.Detail, "1 parked") {
				t.Errorf("detail %q", o.Detail)
			}
		}},
		{"an old primary back as master with more data is not a regression of the primary", func() Input {
			in := healthyInput()
			in.Replicas[0] = Node{Addr: r1Addr, Reachable: true, Role: "master", ReplID: newID, Offset: 9999, Keys: 500}
			return in
		}, events.DecisionNoAction, PrimaryHealthy, nil},
		{"primary down", func() Input { return down(healthyInput()) }, events.DecisionFailover, PrimaryDown, func(t *testing.T, o Outcome) {
			if o.Candidate != r2Addr || o.LossWindow != 0 || o.Bound != 990 {
				t.Errorf("candidate %s loss %d bound %d", o.Candidate, o.LossWindow, o.Bound)
			}
		}},
		{"primary loading", func() Input {
			in := healthyInput()
			in.Primary.Loading = true
			return in
		}, events.DecisionFailover, PrimaryDown, nil},
		{"role changed", func() Input {
			in := healthyInput()
			in.Primary.Role, in.Primary.MasterAddr = "slave", r1Addr
			return in
		}, events.DecisionFailover, PrimaryRoleChanged, nil},
		{"data regressed: restarted empty, replicas parked", func() Input {
			in := healthyInput()
			in.Primary = Node{Addr: pAddr, Reachable: true, Role: "master", RunID: "run-2", ReplID: newID, Offset: 14, Keys: 0, AckedOffset: -1}
			for i := range in.Replicas {
				in.Replicas[i].Parked, in.Replicas[i].MasterAddr, in.Replicas[i].LinkUp = true, "127.0.0.1:1", false
			}
			return in
		}, events.DecisionFailover, PrimaryDataRegressed, func(t *testing.T, o Outcome) {
			if o.Candidate != r2Addr {
				t.Errorf("candidate %s", o.Candidate)
			}
		}},
		{"data regressed seen only through lazarus's memory", func() Input {
			in := healthyInput()
			in.Primary = Node{Addr: pAddr, Reachable: true, Role: "master", RunID: "run-2", ReplID: newID, Offset: 14, Keys: 0, AckedOffset: -1}
			in.Replicas[0].Reachable, in.Replicas[1].Reachable = false, false
			return in
		}, events.DecisionAbort, NoEligibleReplica, func(t *testing.T, o Outcome) {
			if !strings.Contains(o.Detail, "offset went back") {
				t.Errorf("detail %q", o.Detail)
			}
		}},
		{"a replica wiped by the empty primary is not a candidate", func() Input {
			in := healthyInput()
			in.Primary = Node{Addr: pAddr, Reachable: true, Role: "master", RunID: "run-2", ReplID: newID, Offset: 5000, Keys: 0, AckedOffset: 5000}
			in.Replicas[0] = Node{Addr: r1Addr, Reachable: true, Role: "slave", MasterAddr: pAddr, LinkUp: true, ReplID: newID, Offset: 5000, Keys: 0}
			in.Replicas[1].Parked = true
			in.Last = nil
			return in
		}, events.DecisionFailover, PrimaryDataRegressed, func(t *testing.T, o Outcome) {
			if o.Candidate != r2Addr {
				t.Errorf("candidate %s, rejected %v", o.Candidate, o.Rejected)
			}
		}},
		{"stale alert", func() Input {
			in := down(healthyInput())
			in.Alert.Epoch = 2
			return in
		}, events.DecisionNoAction, StaleAlert, nil},
		{"already handled: in progress", func() Input {
			in := down(healthyInput())
			in.Handled.InProgress = "fo-1"
			return in
		}, events.DecisionNoAction, AlreadyHandled, nil},
		{"already handled: incident", func() Input {
			in := down(healthyInput())
			in.Handled.Incident = "fo-1"
			return in
		}, events.DecisionNoAction, AlreadyHandled, nil},
		{"already handled: topology moved", func() Input {
			in := down(healthyInput())
			in.Alert.Epoch = 0
			in.Shard.Primary = r1Addr
			return in
		}, events.DecisionNoAction, AlreadyHandled, nil},
		{"warning only", func() Input {
			in := down(healthyInput())
			in.Alert.Code = events.AlertAgentLost
			return in
		}, events.DecisionNoAction, WarningOnly, nil},
		{"resolved", func() Input {
			in := down(healthyInput())
			in.Alert.Kind = events.KindAlertResolved
			return in
		}, events.DecisionNoAction, AlertResolved, nil},
		{"unknown shard", func() Input {
			in := down(healthyInput())
			in.Known = false
			return in
		}, events.DecisionNoAction, UnknownShard, nil},
		{"paused shard", func() Input {
			in := down(healthyInput())
			in.Holds.Paused = &Pause{By: "alice", At: t0, Reason: "maintenance"}
			return in
		}, events.DecisionHold, Paused, func(t *testing.T, o Outcome) {
			if !strings.Contains(o.Override, "lazarus resume --shard shard-1") {
				t.Errorf("override %q", o.Override)
			}
		}},
		{"paused fleet", func() Input {
			in := down(healthyInput())
			in.Holds.Paused = &Pause{All: true, At: t0}
			return in
		}, events.DecisionHold, Paused, func(t *testing.T, o Outcome) {
			if !strings.Contains(o.Override, "`lazarus resume`") {
				t.Errorf("override %q", o.Override)
			}
		}},
		{"flapping", func() Input {
			in := down(healthyInput())
			in.Alert.Flapping = true
			return in
		}, events.DecisionHold, Flapping, func(t *testing.T, o Outcome) {
			if !strings.Contains(o.Override, "lazarus failover --shard shard-1") {
				t.Errorf("override %q", o.Override)
			}
		}},
		{"cooldown", func() Input {
			in := down(healthyInput())
			in.Holds.CooldownUntil, in.Holds.CooldownAfter = t0.Add(20*time.Second), "fo-0"
			return in
		}, events.DecisionHold, Cooldown, func(t *testing.T, o Outcome) {
			if !strings.Contains(o.Override, "wait until 15:04:25Z") || !strings.Contains(o.Override, "lazarus resume --shard shard-1") {
				t.Errorf("override %q", o.Override)
			}
		}},
		{"cooldown over", func() Input {
			in := down(healthyInput())
			in.Holds.CooldownUntil = t0.Add(-time.Second)
			return in
		}, events.DecisionFailover, PrimaryDown, nil},
		{"fleet limit: concurrent", func() Input {
			in := down(healthyInput())
			in.Holds.Fleet = Fleet{Running: 1, MaxConcurrent: 1}
			return in
		}, events.DecisionHold, FleetLimit, nil},
		{"fleet limit: window", func() Input {
			in := down(healthyInput())
			in.Holds.Fleet = Fleet{InWindow: 3, MaxPerWindow: 3, Window: time.Minute, OldestInWindow: t0.Add(-30 * time.Second)}
			return in
		}, events.DecisionHold, FleetLimit, func(t *testing.T, o Outcome) {
			if !strings.Contains(o.Override, "wait until 15:04:35Z") {
				t.Errorf("override %q", o.Override)
			}
		}},
		{"forced failover skips holds", func() Input {
			in := down(healthyInput())
			in.Force = true
			in.Holds.Paused = &Pause{All: true}
			return in
		}, events.DecisionFailover, ManualFailover, nil},
		{"forced failover still checks health", func() Input {
			in := healthyInput()
			in.Force = true
			return in
		}, events.DecisionNoAction, PrimaryHealthy, nil},
		{"no eligible replica: all unreachable", func() Input {
			in := down(healthyInput())
			in.Replicas[0] = Node{Addr: r1Addr, Err: "refused"}
			in.Replicas[1] = Node{Addr: r2Addr, Err: "timeout"}
			return in
		}, events.DecisionAbort, NoEligibleReplica, func(t *testing.T, o Outcome) {
			if !strings.Contains(o.Detail, r1Addr+" unreachable: refused") {
				t.Errorf("detail %q", o.Detail)
			}
		}},
		{"no eligible replica: behind the acknowledged offset", func() Input {
			in := down(healthyInput())
			in.Replicas[0].Offset, in.Replicas[1].Offset = 900, 950
			return in
		}, events.DecisionAbort, NoEligibleReplica, nil},
		{"no eligible replica: lagging beyond the bound", func() Input {
			in := down(healthyInput())
			in.Last.AckedOffset = -1
			in.Last.Offset = 10 << 20
			return in
		}, events.DecisionAbort, NoEligibleReplica, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			o := Decide(c.in())
			if o.Decision != c.decision || o.Reason != c.reason {
				t.Fatalf("got %s/%s (%s), want %s/%s", o.Decision, o.Reason, o.Detail, c.decision, c.reason)
			}
			if o.Detail == "" {
				t.Error("no detail")
			}
			if o.Decision == events.DecisionHold && o.Override == "" {
				t.Error("a hold without override text")
			}
			if _, ok := Info(o.Reason); !ok {
				t.Errorf("reason %s is not in the catalog", o.Reason)
			}
			if c.check != nil {
				c.check(t, o)
			}
		})
	}
}

func TestChoosePrefersOffsetThenPriority(t *testing.T) {
	in := down(healthyInput())
	in.Replicas[0].Offset, in.Replicas[1].Offset = 1000, 1000
	if o := Decide(in); o.Candidate != r1Addr {
		t.Fatalf("equal offsets: want the first in priority, got %s", o.Candidate)
	}
	in.Replicas[0].Offset = 995
	if o := Decide(in); o.Candidate != r2Addr {
		t.Fatalf("want the highest offset, got %s", o.Candidate)
	}
	// A parked replica keeps its offset and may be chosen.
	in.Replicas[0].Offset, in.Replicas[0].Parked = 1000+7, true
	in.Last.Offset = 1010
	o := Decide(in)
	if o.Candidate != r1Addr || o.LossWindow != 3 {
		t.Fatalf("want parked %s with loss window 3, got %s (%d)", r1Addr, o.Candidate, o.LossWindow)
	}
	// Unknown history: loss window unknown.
	in.Last = nil
	if o := Decide(in); o.LossWindow != -1 || o.Bound != -1 {
		t.Fatalf("unknown primary offset: loss %d bound %d", o.LossWindow, o.Bound)
	}
	// Loading and full-syncing replicas are skipped.
	in.Replicas[0].Loading = true
	in.Replicas[1].SyncInProgress = true
	if o := Decide(in); o.Reason != NoEligibleReplica {
		t.Fatalf("got %s", o.Reason)
	}
}

func TestSafeToFollow(t *testing.T) {
	p := Node{Addr: pAddr, Reachable: true, Role: "master", ReplID: newID, ReplID2: oldID, Keys: 10}
	cases := []struct {
		n    Node
		want bool
	}{
		{Node{Keys: 0, ReplID: "x"}, true},
		{Node{Keys: 100, ReplID: oldID}, true},                // same history: only unacknowledged bytes differ
		{Node{Keys: 100, ReplID: "other"}, false},             // more data of another history
		{Node{Keys: 5, ReplID: "other"}, true},                // less data
		{Node{Keys: 5, ReplID: oldID, Offset: 1 << 40}, true}, // same history
	}
	for i, c := range cases {
		if got, why := SafeToFollow(c.n, p); got != c.want {
			t.Errorf("case %d: got %v (%s)", i, got, why)
		}
	}
	empty := Node{Addr: pAddr, Reachable: true, Role: "master", ReplID: newID}
	if ok, why := SafeToFollow(Node{Keys: 3, ReplID: newID, Offset: 100}, empty); ok {
		t.Errorf("following an empty primary with data must be refused even in the same history: %s", why)
	}
	if ok, _ := SafeToFollow(Node{}, Node{Addr: pAddr}); ok {
		t.Error("following an unreachable node")
	}
}

func TestCatalogIsComplete(t *testing.T) {
	seen := map[Reason]bool{}
	for _, i := range Catalog {
		if seen[i.Reason] {
			t.Errorf("%s twice", i.Reason)
		}
		seen[i.Reason] = true
		if i.Meaning == "" || i.OnCall == "" {
			t.Errorf("%s lacks text", i.Reason)
		}
	}
}
