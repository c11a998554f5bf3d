package detector

import (
	"fmt"
	"strings"
	"time"

	"github.com/heartline/heartline/shared/events"
)

// The reasons are read by on-call engineers: plain words, the evidence, and what it
// means.

func ms(d time.Duration) time.Duration { return d.Round(time.Millisecond) }

func names(as []*agent) string {
	n := make([]string, len(as))
	for i, a := range as {
		n[i] = a.name
	}
	return strings.Join(n, ", ")
}

func worst(as []*agent) (probes int, down time.Duration, lastErr string) {
	for _, a := range as {
		if a.consecFail > probes {
			probes, lastErr = a.consecFail, a.lastErr
		}
		down = max(down, a.downFor())
	}
	if lastErr == "" {
		lastErr = "no error given"
	}
	return probes, down, lastErr
}

func (s *Shard) reason(code events.AlertCode, v vote, inc *Incident) string {
	switch code {
	case events.AlertPrimaryDown:
		probes, down, lastErr := worst(v.down)
		return fmt.Sprintf("Primary %s is down: %d of %d agents reporting see it fail (%d consecutive failed probes, no healthy answer for %s; last error: %s). Agents that see it down: %s.",
			v.primary, len(v.down), len(v.recent), probes, ms(down), lastErr, names(v.down))
	case events.AlertReplicaProblem:
		probes, down, lastErr := worst(v.down)
		return fmt.Sprintf("%d of %d agents cannot reach primary %s (%d consecutive failed probes over %s; last error: %s) while the others see it healthy: a problem on the replica side (its network or host), not a primary failure. Agents that cannot reach it: %s.",
			len(v.down), len(v.recent), v.primary, probes, ms(down), lastErr, names(v.down))
	case events.AlertAgentLost:
		return fmt.Sprintf("No heartbeat from any of the shard's %d agents for %s: the agents, or their path to the stream, are down. The primary's health (%s) is unknown; this is not a primary failure.",
			len(s.agents), ms(v.now.Sub(s.lastArrival)), v.primary)
	case events.AlertPrimaryDataRegressed:
		as := v.flagged[flagRegressed]
		if len(as) == 0 {
			return fmt.Sprintf("Primary %s came back with less data than its replicas, and a replica is still frozen to keep its data. A full resync from it would wipe the replicas; fail over to the replica with the most data.", v.primary)
		}
		a := as[0]
		frozen := ""
		if a.frozen {
			frozen = ", replica frozen to keep its data"
		}
		return fmt.Sprintf("Primary %s came back with less data than its replica: agent %s flagged PRIMARY_DATA_REGRESSED (primary offset %d, replication id %s, %d keys; replica offset %d, %d keys%s). A full resync from it would wipe the replicas; fail over to the replica with the most data.",
			a.primary, names(as), a.primaryOffset, a.primaryReplID, a.primaryKeys, a.replicaOffset, a.replicaKeys, frozen)
	case events.AlertPrimaryRoleChanged:
		as := v.flagged[flagRole]
		role, addr := "replica", v.primary
		if len(as) > 0 {
			addr = as[0].primary
			if as[0].primaryRole != "" {
				role = as[0].primaryRole
			}
		}
		return fmt.Sprintf("The node the topology names as primary, %s, reports itself as a replica (role %q; flagged by agent %s): writes routed to it fail.",
			addr, role, names(as))
	case events.AlertConfigDrift:
		var parts []string
		seen := map[string]bool{}
		for _, a := range v.flagged[flagDrift] {
			for _, d := range a.drifts {
				p := fmt.Sprintf("%s %s want %q got %q", d.Node, d.Param, d.Want, d.Got)
				if !seen[p] {
					seen[p] = true
					parts = append(parts, p)
				}
			}
		}
		what := "details not given"
		if len(parts) > 0 {
			what = strings.Join(parts, "; ")
		}
		return fmt.Sprintf("Configuration drift on shard %s (flagged by agent %s): %s.", s.id, names(v.flagged[flagDrift]), what)
	}
	return fmt.Sprintf("%s on shard %s.", code, s.id)
}

func (s *Shard) resolvedReason(inc *Incident, v vote) string {
	open := ms(v.now.Sub(inc.OpenedAt))
	R := s.cfg.RecoverProbes
	switch inc.Code {
	case events.AlertReplicaProblem:
		return fmt.Sprintf("Resolved REPLICA_PROBLEM: every agent reporting (%d) sees primary %s healthy again, %d probes or more in a row (open for %s).",
			len(v.recent), v.primary, R, open)
	case events.AlertAgentLost:
		return fmt.Sprintf("Resolved AGENT_LOST: agents report again (%d reporting) and %d of them see primary %s healthy (open for %s).",
			len(v.recent), v.healthy, v.primary, open)
	case events.AlertPrimaryDataRegressed:
		return fmt.Sprintf("Resolved PRIMARY_DATA_REGRESSED: for %d heartbeats no agent flags regressed data or keeps a frozen replica, and %d of %d agents see primary %s healthy (open for %s).",
			R, v.healthy, len(v.recent), v.primary, open)
	case events.AlertPrimaryRoleChanged:
		return fmt.Sprintf("Resolved PRIMARY_ROLE_CHANGED: for %d heartbeats the primary %s reports itself as primary again, and %d of %d agents see it healthy (open for %s).",
			R, v.primary, v.healthy, len(v.recent), open)
	case events.AlertConfigDrift:
		return fmt.Sprintf("Resolved CONFIG_DRIFT: for %d heartbeats no agent reports configuration drift (open for %s).", R, open)
	}
	if inc.Primary != "" && v.primary != inc.Primary {
		return fmt.Sprintf("Resolved %s: the shard's primary is now %s (was %s) and healthy: %d of %d agents report %d or more healthy probes in a row (open for %s).",
			inc.Code, v.primary, inc.Primary, v.healthy, len(v.recent), R, open)
	}
	return fmt.Sprintf("Resolved %s: primary %s is healthy again: %d of %d agents report %d or more healthy probes in a row (open for %s).",
		inc.Code, v.primary, v.healthy, len(v.recent), R, open)
}
