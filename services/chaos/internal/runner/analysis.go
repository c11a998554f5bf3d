package runner

import (
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/heartline/heartline/shared/events"
)

// hypotheses checks every bound of the experiment's hypothesis.
func (u *run) hypotheses() []events.HypothesisResult {
	h := u.x.Hypothesis
	t0 := u.firstFault
	var out []events.HypothesisResult
	add := func(name, expected, actual string, held bool) {
		out = append(out, events.HypothesisResult{Name: name, Expected: expected, Actual: actual, Held: held})
	}
	within := func(name string, bound *time.Duration, at time.Time, found bool, from time.Time, note string) {
		if bound == nil {
			return
		}
		exp := "within " + fmtDur(*bound)
		if !found || at.IsZero() {
			add(name, exp, "never, during the run"+note, false)
			return
		}
		d := at.Sub(from)
		add(name, exp, fmtDur(d)+note, d <= *bound)
	}
	epochs := map[string]uint64{}
	for _, s := range u.topo.Shards {
		epochs[s.ID] = s.Epoch
	}

	if h.FirstFailedHeartbeatWithin != nil {
		e, ok := u.w.first(t0, func(e events.Event) bool {
			hb, ok := e.Payload.(*events.Heartbeat)
			return ok && u.inScope(e.Shard) && !hb.Primary.OK
		})
		within("first failed heartbeat", h.FirstFailedHeartbeatWithin, e.Time, ok, t0, "")
	}
	if h.DetectedWithin != nil {
		e, ok := u.w.first(t0, func(e events.Event) bool {
			a, ok := e.Payload.(*events.Alert)
			if !ok || !u.inScope(e.Shard) || (e.Kind != events.KindAlertOpened && e.Kind != events.KindAlertEscalated) {
				return false
			}
			return h.AlertCode == "" || string(a.Code) == h.AlertCode
		})
		name := "detected (alert opened)"
		if h.AlertCode != "" {
			name = "detected (" + h.AlertCode + " alert opened)"
		}
		note := ""
		if ok {
			note = " (" + string(e.Payload.(*events.Alert).Code) + ")"
		}
		within(name, h.DetectedWithin, e.Time, ok, t0, note)
	}
	if h.FailedOverWithin != nil {
		e, ok := u.w.first(t0, func(e events.Event) bool {
			return e.Kind == events.KindTopologyChanged && u.inScope(e.Shard) && e.Epoch > epochs[e.Shard]
		})
		note := ""
		if ok {
			note = fmt.Sprintf(" (%s epoch %d)", e.Shard, e.Epoch)
		}
		within("failed over (new topology published)", h.FailedOverWithin, e.Time, ok, t0, note)
	}
	if h.WritesResumedWithin != nil {
		if u.hist == nil {
			add("writes resumed", "within "+fmtDur(*h.WritesResumedWithin), "no load history", false)
		} else {
			ref := u.firstApplied
			if ref.IsZero() {
				ref = t0
			}
			we := u.hist.Writes(ref, u.scope())
			note := ""
			if !we.FirstFailure.IsZero() {
				note = fmt.Sprintf(" (first failed write at +%s)", fmtDur(we.FirstFailure.Sub(t0)))
			}
			within("writes resumed (first acknowledged write after the fault)", h.WritesResumedWithin, we.Resumed, !we.Resumed.IsZero(), t0, note)
		}
	}
	if h.HealthyWithin != nil {
		within("every shard healthy again after the method", h.HealthyWithin, u.healthyAt, !u.healthyAt.IsZero(), u.methodEnded, "")
	}
	if h.Failovers != nil {
		ids := map[string]bool{}
		var list []string
		for _, e := range u.w.all() {
			if e.Kind != events.KindFailoverCompleted || e.Time.Before(t0) || !u.inScope(e.Shard) {
				continue
			}
			f, _ := e.Payload.(*events.Failover)
			if f == nil || f.Planned || ids[f.FailoverID] {
				continue
			}
			ids[f.FailoverID] = true
			list = append(list, e.Shard)
		}
		actual := fmt.Sprintf("%d", len(ids))
		if len(list) > 0 {
			actual += " (" + strings.Join(list, ", ") + ")"
		}
		exp := fmt.Sprintf("exactly %d", *h.Failovers)
		if *h.Failovers == 0 {
			exp = "no failover"
		}
		add("failovers", exp, actual, int64(len(ids)) == *h.Failovers)
	}
	counts := []struct {
		name  string
		bound *int64
		get   func(c *CheckReport) int64
	}{
		{"acknowledged messages lost", h.Lost, func(c *CheckReport) int64 { return c.Lost }},
		{"rate-limit violations", h.RateLimitViolations, func(c *CheckReport) int64 { return c.RateViolations }},
		{"unexpected messages", h.Unexpected, func(c *CheckReport) int64 { return c.Unexpected }},
	}
	for _, c := range counts {
		if c.bound == nil {
			continue
		}
		exp := fmt.Sprintf("at most %d", *c.bound)
		if *c.bound == 0 {
			exp = "zero"
		}
		if u.rep.Check == nil {
			add(c.name, exp, "unknown: the loss check did not run", false)
			continue
		}
		v := c.get(u.rep.Check)
		actual := fmt.Sprintf("%d of %d acknowledged", v, u.rep.Check.Acknowledged)
		held := v <= *c.bound
		if c.name == "acknowledged messages lost" && !u.rep.Check.Drained {
			actual += " (the history did not end drained: inconclusive)"
			held = false
		}
		add(c.name, exp, actual, held)
	}
	end := u.methodEnded
	if end.IsZero() {
		end = time.Now()
	}
	if h.FailedRequestP99 != nil || h.EnqueueLatencyP99 != nil {
		if u.hist == nil {
			if h.FailedRequestP99 != nil {
				add("failed requests fail fast (p99)", "within "+fmtDur(*h.FailedRequestP99), "no load history", false)
			}
			if h.EnqueueLatencyP99 != nil {
				add("acknowledged enqueue latency p99 during the faults", "within "+fmtDur(*h.EnqueueLatencyP99), "no load history", false)
			}
		} else {
			st := u.hist.Stats(t0, end.Add(time.Second), u.scope())
			if b := h.FailedRequestP99; b != nil {
				actual := fmt.Sprintf("%s over %d failed enqueues", fmtDur(st.FailedLatencyP99), st.Failed)
				if st.Failed == 0 {
					actual = "no enqueue failed"
				}
				add("failed requests fail fast (p99)", "within "+fmtDur(*b), actual, st.FailedLatencyP99 <= *b)
			}
			if b := h.EnqueueLatencyP99; b != nil {
				actual := fmt.Sprintf("%s over %d acknowledged enqueues", fmtDur(st.LatencyP99), st.OK)
				add("acknowledged enqueue latency p99 during the faults", "within "+fmtDur(*b), actual, st.OK > 0 && st.LatencyP99 <= *b)
			}
		}
	}
	return out
}

// scope is the set of shards shard-scoped measures look at (nil: all).
func (u *run) scope() map[string]bool {
	if u.attacked == nil {
		return nil
	}
	return u.attacked
}

// timeline merges the runner's marks, the attacks, the stream's events and the
// history's write outage into one ordered list relative to the first fault.
func (u *run) timeline() {
	rep := u.rep
	t0 := u.firstFault
	if t0.IsZero() {
		t0 = rep.Started
	}
	tl := rep.Timeline
	for i := range tl {
		if strings.HasPrefix(tl[i].What, "fault injected") {
			tl[i].Mark = "fault"
		}
	}
	for _, a := range rep.Attacks {
		if !a.Recovered.IsZero() {
			what := "fault recovered: " + string(a.Fault)
			if a.State == "halted" {
				what = "fault halted: " + string(a.Fault)
			}
			tl = append(tl, TimelineEntry{At: a.Recovered, Source: "chaos", What: what, Shard: strings.Join(a.Shards(), ","), Detail: a.Error, CorrelationID: a.ID})
		}
	}
	failedHB := map[string]bool{}
	marked := map[string]bool{}
	// The marks (what the summary reads as detected, failed over) are events caused by
	// the fault: none before it, and none when nothing was injected.
	afterFault := func(e events.Event) bool { return !u.firstFault.IsZero() && !e.Time.Before(u.firstFault) }
	for _, e := range u.w.all() {
		if e.Time.Before(rep.Started) {
			continue
		}
		entry := TimelineEntry{At: e.Time, Source: e.Source.Service, Shard: e.Shard, CorrelationID: e.CorrelationID}
		switch p := e.Payload.(type) {
		case *events.Heartbeat:
			if e.Time.Before(t0) {
				continue
			}
			if !p.Primary.OK && !failedHB[e.Shard] {
				failedHB[e.Shard] = true
				entry.What = "first failed heartbeat"
				entry.Detail = fmt.Sprintf("agent %s: primary %s: %s", e.Source.Instance, p.Primary.Addr, p.Primary.Error)
				if u.inScope(e.Shard) && !marked["hb"] {
					entry.Mark, marked["hb"] = "first failed heartbeat", true
				}
			} else if p.Primary.OK && failedHB[e.Shard] {
				failedHB[e.Shard] = false
				entry.What = "heartbeats healthy again"
				entry.Detail = fmt.Sprintf("agent %s: primary %s", e.Source.Instance, p.Primary.Addr)
			} else {
				continue
			}
		case *events.Alert:
			entry.What = string(e.Kind) + " " + string(p.Code)
			entry.Detail = fmt.Sprintf("%s %s: %s", p.Severity, p.State, p.Reason)
			if e.Kind == events.KindAlertOpened && u.inScope(e.Shard) && afterFault(e) && !marked["alert"] {
				entry.Mark, marked["alert"] = "alert", true
			}
		case *events.Failover:
			entry.What = string(e.Kind)
			d := []string{string(p.Decision), p.Reason}
			if p.Step != "" {
				d = append(d, "step "+p.Step)
			}
			if p.NewPrimary != "" {
				d = append(d, "new primary "+p.NewPrimary)
			}
			if p.StepError != "" {
				d = append(d, "error "+p.StepError)
			}
			if e.Kind == events.KindFailoverCompleted {
				d = append(d, fmt.Sprintf("loss window %d bytes", p.LossWindow))
				if u.inScope(e.Shard) && afterFault(e) && !marked["fo"] {
					entry.Mark, marked["fo"] = "failed over", true
				}
			}
			entry.Detail = strings.Join(d, ", ")
			if e.Epoch > 0 {
				entry.Detail += fmt.Sprintf(" (epoch %d)", e.Epoch)
			}
			if e.Kind == events.KindFailoverCompleted {
				// The phases lazarus measured, each as its own entry.
				for _, ph := range []struct {
					name string
					at   time.Time
				}{{"detected", p.Phases.Detected}, {"alerted", p.Phases.Alerted}, {"decided", p.Phases.Decided},
					{"promoted", p.Phases.Promoted}, {"routed", p.Phases.Routed}, {"verified", p.Phases.Verified}} {
					if !ph.at.IsZero() {
						tl = append(tl, TimelineEntry{At: ph.at, Source: e.Source.Service, What: "failover phase: " + ph.name,
							Shard: e.Shard, Detail: "failover " + p.FailoverID, CorrelationID: e.CorrelationID})
					}
				}
			}
		case *events.TopologyChanged:
			entry.What = "topology changed"
			entry.Detail = fmt.Sprintf("primary %s, replicas %s, epoch %d: %s", p.Primary, strings.Join(p.Replicas, ","), e.Epoch, p.Reason)
			if u.inScope(e.Shard) && afterFault(e) && !marked["topo"] {
				entry.Mark, marked["topo"] = "topology changed", true
			}
		default:
			continue
		}
		tl = append(tl, entry)
	}
	if u.hist != nil && !u.firstFault.IsZero() {
		ref := u.firstApplied
		if ref.IsZero() {
			ref = t0
		}
		we := u.hist.Writes(ref, u.scope())
		if !we.FirstFailure.IsZero() {
			tl = append(tl, TimelineEntry{At: we.FirstFailure, Source: "history", What: "first failed write", Detail: we.FirstError, Mark: "first failed write"})
		}
		if !we.Resumed.IsZero() {
			tl = append(tl, TimelineEntry{At: we.Resumed, Source: "history", What: "writes resumed (first acknowledged write after the fault)", Mark: "writes resumed"})
		}
	}
	if !u.healthyAt.IsZero() {
		tl = append(tl, TimelineEntry{At: u.healthyAt, Source: "runner", What: "every shard healthy again", Mark: "healthy"})
	}
	for i := range tl {
		tl[i].At = tl[i].At.UTC()
		tl[i].OffsetMS = tl[i].At.Sub(t0).Milliseconds()
	}
	sort.SliceStable(tl, func(i, j int) bool { return tl[i].At.Before(tl[j].At) })
	rep.Timeline = tl
}

// control compares the attacked shards with the untouched ones over the fault window.
func (u *run) control() {
	if u.hist == nil || u.firstFault.IsZero() {
		return
	}
	from := u.firstFault
	to := u.methodEnded
	if to.IsZero() {
		to = time.Now()
	}
	to = to.Add(u.x.Observe)
	u.rep.ControlWindow = [2]time.Time{from.UTC(), to.UTC()}
	attacked := u.attacked
	if attacked == nil {
		attacked = map[string]bool{}
	}
	u.rep.Control = u.hist.PerShard(from, to, u.shards, attacked)
}
