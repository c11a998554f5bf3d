package cli

import (
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/heartline/heartline/shared/events"
)

// Filter selects events for the timeline.
type Filter struct {
	Shard string
	Since time.Time
}

// Match reports whether e passes the filter.
func (f Filter) Match(e events.Event) bool {
	if f.Shard != "" && e.Shard != f.Shard {
		return false
	}
	return f.Since.IsZero() || !e.Time.Before(f.Since)
}

// SortEvents orders events by time (stable: per-shard stream order is kept for equal
// times).
func SortEvents(evs []events.Event) {
	sort.SliceStable(evs, func(i, j int) bool { return evs[i].Time.Before(evs[j].Time) })
}

// WriteTimeline prints events as the on-call timeline: one line per event with time,
// shard, epoch and the first 8 characters of the correlation id, then what happened;
// details and overrides on indented lines below.
func WriteTimeline(w io.Writer, evs []events.Event) {
	for _, e := range evs {
		fmt.Fprintln(w, TimelineLine(e))
		for _, extra := range timelineDetails(e) {
			fmt.Fprintf(w, "%s%s\n", strings.Repeat(" ", 24), extra)
		}
	}
}

// TimelineLine is the first line of an event in the timeline.
func TimelineLine(e events.Event) string {
	head := fmt.Sprintf("%s  %-10s e%-3d [%s]  ", e.Time.UTC().Format("2006-01-02T15:04:05.000Z"), e.Shard, e.Epoch, short(e.CorrelationID))
	switch p := e.Payload.(type) {
	case *events.Failover:
		switch e.Kind {
		case events.KindFailoverDecision:
			return head + fmt.Sprintf("decision %s %s", strings.ToUpper(string(p.Decision)), p.Reason)
		case events.KindFailoverStarted:
			kind := "FAILOVER"
			if p.Planned {
				kind = "SWITCHOVER"
			}
			return head + fmt.Sprintf("%s STARTED %s: %s -> %s, epoch %d -> %d, loss window %s (failover %s)",
				kind, p.Reason, p.OldPrimary, p.NewPrimary, p.FromEpoch, p.ToEpoch, loss(p.LossWindow), short(p.FailoverID))
		case events.KindFailoverStep:
			status := "ok"
			if p.StepError != "" {
				status = "FAILED"
			}
			return head + fmt.Sprintf("  step %-18s %s", p.Step, status)
		case events.KindFailoverCompleted:
			return head + fmt.Sprintf("FAILOVER COMPLETED: %s is primary at epoch %d, loss window %s; %s", p.NewPrimary, p.ToEpoch, loss(p.LossWindow), Phases(p.Phases))
		case events.KindFailoverAborted:
			return head + fmt.Sprintf("FAILOVER ABORTED %s (failover %s)", p.Reason, short(p.FailoverID))
		}
	case *events.TopologyChanged:
		return head + fmt.Sprintf("topology changed (%s): primary %s, replicas %s", p.Reason, p.Primary, strings.Join(p.Replicas, ","))
	}
	return head + string(e.Kind)
}

func timelineDetails(e events.Event) []string {
	p, ok := e.Payload.(*events.Failover)
	if !ok {
		return nil
	}
	var out []string
	if p.StepError != "" {
		out = append(out, "error: "+p.StepError)
	}
	if p.Detail != "" && e.Kind != events.KindFailoverStarted {
		out = append(out, p.Detail)
	}
	if p.Override != "" {
		out = append(out, "override: "+p.Override)
	}
	return out
}

// Phases renders phase timings as the time between consecutive phases.
func Phases(p events.Phases) string {
	type ph struct {
		name string
		t    time.Time
	}
	all := []ph{{"detected", p.Detected}, {"alerted", p.Alerted}, {"decided", p.Decided}, {"promoted", p.Promoted}, {"routed", p.Routed}, {"verified", p.Verified}}
	var parts []string
	var prev *ph
	for i := range all {
		if all[i].t.IsZero() {
			continue
		}
		if prev != nil {
			parts = append(parts, fmt.Sprintf("%s +%s", all[i].name, ms(all[i].t.Sub(prev.t))))
		} else {
			parts = append(parts, all[i].name)
		}
		prev = &all[i]
	}
	s := strings.Join(parts, ", ")
	if !p.Detected.IsZero() && !p.Routed.IsZero() {
		s += fmt.Sprintf(" (detected to routed %s)", ms(p.Routed.Sub(p.Detected)))
	}
	return s
}

func ms(d time.Duration) string {
	switch {
	case d < 10*time.Millisecond:
		return fmt.Sprintf("%.1fms", float64(d)/float64(time.Millisecond))
	case d < 10*time.Second:
		return fmt.Sprintf("%dms", d.Milliseconds())
	}
	return d.Round(100 * time.Millisecond).String()
}

func loss(b int64) string {
	if b < 0 {
		return "unknown"
	}
	return fmt.Sprintf("%d B", b)
}

func short(id string) string {
	if len(id) > 8 {
		return id[:8]
	}
	return id
}
