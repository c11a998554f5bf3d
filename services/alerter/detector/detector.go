package detector

import (
	"fmt"
	"sort"
	"time"

	"github.com/heartline/heartline/shared/events"
)

// Heartbeat is one heartbeat as the detector needs it.
type Heartbeat struct {
	ID string
	// Agent names the agent (the event's Source.Instance; its replica's address when
	// the instance is empty).
	Agent string
	Epoch uint64
	// Time is when the agent probed (the event time, on the agent's clock).
	Time time.Time
	// Published is when the stream accepted the heartbeat (for the alert's evidence).
	Published time.Time
	Payload   *events.Heartbeat
}

// FromEvent turns a decoded heartbeat event into a Heartbeat.
func FromEvent(e events.Event, published time.Time) (Heartbeat, error) {
	p, ok := e.Payload.(*events.Heartbeat)
	if !ok || p == nil || e.Kind != events.KindHeartbeat {
		return Heartbeat{}, fmt.Errorf("%w: kind %q", ErrNotHeartbeat, e.Kind)
	}
	agent := e.Source.Instance
	if agent == "" {
		agent = p.Replica.Addr
	}
	return Heartbeat{ID: e.ID, Agent: agent, Epoch: e.Epoch, Time: e.Time, Published: published, Payload: p}, nil
}

// Result says what Observe did with a heartbeat.
type Result int

const (
	// Accepted: the heartbeat updated its agent's view.
	Accepted Result = iota
	// Duplicate: the agent's last heartbeat again (same run, same Seq); ignored.
	Duplicate
	// OutOfOrder: older than the agent's last heartbeat (lower Seq in the same run, or
	// an earlier run); ignored.
	OutOfOrder
	// Stale: probed longer than MaxAge ago; ignored.
	Stale
)

func (r Result) String() string {
	switch r {
	case Accepted:
		return "accepted"
	case Duplicate:
		return "duplicate"
	case OutOfOrder:
		return "out_of_order"
	case Stale:
		return "stale"
	}
	return "unknown"
}

// Decision is an alert to publish.
type Decision struct {
	Kind          events.Kind // alert.opened, alert.escalated or alert.resolved
	Shard         string
	CorrelationID string
	Epoch         uint64
	Alert         events.Alert
	// ByTimer is set for decisions made on a timer tick, not on a heartbeat.
	ByTimer bool
}

// Event builds the alert event for d, with a fresh id.
func (d Decision) Event(src events.Source, now time.Time) events.Event {
	a := d.Alert
	e := events.Continue(d.Kind, src, events.Event{Shard: d.Shard, CorrelationID: d.CorrelationID, Epoch: d.Epoch}, &a)
	e.Time = now.UTC()
	return e
}

// agent is the latest view of one agent.
type agent struct {
	name      string
	start     time.Time
	seq       uint64
	arrived   time.Time // alerter clock
	time      time.Time // agent clock, last heartbeat
	id        string
	published time.Time
	interval  time.Duration
	epoch     uint64
	primary   string

	ok            bool
	consecFail    int
	healthyStreak int
	lastHealthy   time.Time
	firstFail     time.Time
	firstFailID   string
	lastErr       string
	// lastStreak is the first heartbeat of the agent's latest failure streak, kept after
	// the primary answers again: a primary that failed and came back with less data is
	// one incident, correlated to its first failed probe.
	lastStreak struct {
		at time.Time
		id string
	}

	// Flag conditions of the latest heartbeat, their streaks of absence, and the first
	// heartbeat of the current run of each.
	regressed, role, drift           bool
	regressFree, roleFree, driftFree int
	flagSince                        [3]struct {
		at time.Time
		id string
	}
	frozen bool

	// Details for the reason text.
	primaryRole   string
	primaryOffset int64
	primaryReplID string
	replicaOffset int64
	replicaKeys   int64
	primaryKeys   int64
	drifts        []events.ConfigDrift
}

// failureLinksFlag: a failure streak that began at most this long before a critical flag
// (the primary failed, then came back empty or as a replica) is the same incident.
const failureLinksFlag = 10 * time.Second

const (
	flagRegressed = iota
	flagRole
	flagDrift
)

// Shard is the state machine of one shard. It is not safe for concurrent use.
type Shard struct {
	id     string
	cfg    Config
	newID  func() string
	agents []*agent // sorted by name

	lastArrival   time.Time
	lastID        string
	lastPublished time.Time
	maxEpoch      uint64
	state         events.State

	// scratch backs the vote's slices between evaluations (no allocation per heartbeat).
	scratch [2][]*agent

	p Persisted
}

// NewShard returns the state machine of shard id. newID makes incident ids (nil:
// events.NewID).
func NewShard(id string, cfg Config, newID func() string) *Shard {
	if newID == nil {
		newID = events.NewID
	}
	return &Shard{id: id, cfg: cfg, newID: newID, state: events.StateOK}
}

// ID is the shard id.
func (s *Shard) ID() string { return s.id }

// State is the shard's state as of its last evaluation.
func (s *Shard) State() events.State { return s.state }

// LastArrival is when (on the alerter's clock) the shard's last heartbeat arrived; zero
// before the first.
func (s *Shard) LastArrival() time.Time { return s.lastArrival }

// Agents is the number of agents the shard has heard from.
func (s *Shard) Agents() int { return len(s.agents) }

// Flapping reports whether the shard is flapping.
func (s *Shard) Flapping() bool { return s.p.Flapping }

// Persisted returns a copy of the state to persist.
func (s *Shard) Persisted() Persisted { return s.p.Clone() }

// Restore replaces the persisted state (loaded from the store, or rolled back after a
// failed write). Agent views are kept.
func (s *Shard) Restore(p Persisted) {
	s.p = p.Clone()
	if s.p.Incident != nil && s.p.Incident.State != "" {
		s.state = s.p.Incident.State
	}
}

// forgetAfter is how long an agent may be silent, while others report, before its view
// is dropped (an agent that was replaced or moved). It bounds memory.
func (s *Shard) forgetAfter() time.Duration { return 20 * s.cfg.AgentLostAfter }

// Observe feeds one heartbeat of this shard, received at now, and returns what it did
// with it and the alerts to publish.
func (s *Shard) Observe(now time.Time, hb Heartbeat) (Result, []Decision) {
	p := hb.Payload
	if p == nil {
		return OutOfOrder, nil
	}
	if now.Sub(hb.Time) > s.cfg.MaxAge {
		return Stale, nil
	}
	i := sort.Search(len(s.agents), func(i int) bool { return s.agents[i].name >= hb.Agent })
	var a *agent
	if i < len(s.agents) && s.agents[i].name == hb.Agent {
		a = s.agents[i]
		switch {
		case p.AgentStart.Before(a.start):
			return OutOfOrder, nil
		case p.AgentStart.Equal(a.start) && p.Seq == a.seq:
			return Duplicate, nil
		case p.AgentStart.Equal(a.start) && p.Seq < a.seq:
			return OutOfOrder, nil
		case p.AgentStart.After(a.start):
			*a = agent{name: hb.Agent} // the agent restarted: a new run
		case now.Sub(a.arrived) > a.recencyWindow(s.cfg):
			// Back after a silence: its earlier probes are stale, the streaks start afresh.
			a.resetHealth()
		}
	} else {
		a = &agent{name: hb.Agent}
		s.agents = append(s.agents, nil)
		copy(s.agents[i+1:], s.agents[i:])
		s.agents[i] = a
	}
	a.update(hb, now, s.cfg)
	s.lastArrival, s.lastID, s.lastPublished = now, hb.ID, hb.Published
	if hb.Epoch > s.maxEpoch {
		s.maxEpoch = hb.Epoch
	}
	s.forget(now)
	return Accepted, s.evaluate(now, false)
}

func (s *Shard) forget(now time.Time) {
	keep := s.agents[:0]
	for _, a := range s.agents {
		if now.Sub(a.arrived) <= s.forgetAfter() {
			keep = append(keep, a)
		}
	}
	clear(s.agents[len(keep):])
	s.agents = keep
}

// Tick evaluates the shard on a timer: it is what notices silence (AGENT_LOST) and the
// end of flapping, which no heartbeat announces.
func (s *Shard) Tick(now time.Time) []Decision {
	if len(s.agents) == 0 {
		return nil
	}
	if s.p.Flapping || now.Sub(s.lastArrival) >= s.cfg.AgentLostAfter {
		return s.evaluate(now, true)
	}
	return nil
}

// Evaluate decides again on the current views (after Restore, when another instance
// changed the incident).
func (s *Shard) Evaluate(now time.Time) []Decision {
	if len(s.agents) == 0 {
		return nil
	}
	return s.evaluate(now, false)
}

func (a *agent) resetHealth() {
	a.consecFail, a.healthyStreak, a.lastHealthy, a.firstFail, a.firstFailID = 0, 0, time.Time{}, time.Time{}, ""
	a.regressFree, a.roleFree, a.driftFree = 0, 0, 0
}

func (a *agent) update(hb Heartbeat, now time.Time, cfg Config) {
	p := hb.Payload
	if p.Primary.Addr != a.primary {
		// A different primary (a failover moved it): its health starts afresh.
		a.consecFail, a.healthyStreak, a.lastHealthy, a.firstFail, a.firstFailID = 0, 0, time.Time{}, time.Time{}, ""
		a.lastStreak.at, a.lastStreak.id = time.Time{}, ""
	}
	a.primary = p.Primary.Addr
	a.start, a.seq = p.AgentStart, p.Seq
	a.arrived, a.time, a.id, a.published = now, hb.Time, hb.ID, hb.Published
	a.interval = p.Interval
	if a.interval <= 0 {
		a.interval = cfg.DefaultInterval
	}
	a.epoch = hb.Epoch
	if p.Primary.OK {
		a.ok = true
		a.consecFail = 0
		a.healthyStreak++
		a.lastHealthy = hb.Time
		a.firstFail, a.firstFailID = time.Time{}, ""
	} else {
		a.ok = false
		a.healthyStreak = 0
		if a.consecFail == 0 {
			a.firstFail, a.firstFailID = hb.Time, hb.ID
			a.lastStreak.at, a.lastStreak.id = hb.Time, hb.ID
		}
		a.consecFail++
		a.lastErr = p.Primary.Error
	}
	a.frozen = p.Replica.Frozen
	a.primaryRole, a.primaryOffset, a.primaryReplID, a.primaryKeys = p.Primary.Role, p.Primary.Offset, p.Primary.ReplID, p.Primary.Keys
	a.replicaOffset, a.replicaKeys = p.Replica.Offset, p.Replica.Keys
	a.drifts = p.Drift

	regressed := p.Has(events.FlagPrimaryDataRegressed)
	role := p.Has(events.FlagPrimaryRoleChanged) || (p.Primary.OK && p.Primary.Role == "slave")
	drift := p.Has(events.FlagConfigDrift) || len(p.Drift) > 0
	a.setFlag(flagRegressed, &a.regressed, &a.regressFree, regressed, regressed || a.frozen, hb)
	a.setFlag(flagRole, &a.role, &a.roleFree, role, role, hb)
	a.setFlag(flagDrift, &a.drift, &a.driftFree, drift, drift, hb)
}

// setFlag records a flag condition: on is whether it holds now, held whether the
// condition still counts for keeping an incident open (a frozen replica keeps a
// PRIMARY_DATA_REGRESSED incident open after the flag itself is gone).
func (a *agent) setFlag(i int, cur *bool, free *int, on, held bool, hb Heartbeat) {
	if on && !*cur {
		a.flagSince[i].at, a.flagSince[i].id = hb.Time, hb.ID
	}
	*cur = on
	if held {
		*free = 0
	} else {
		*free++
	}
}

// downFor is how long, on the agent's clock, the primary went without a healthy probe.
func (a *agent) downFor() time.Duration {
	since := a.lastHealthy
	if since.IsZero() {
		since = a.firstFail
	}
	if d := a.time.Sub(since); d > 0 {
		return d
	}
	return 0
}

func (a *agent) recencyWindow(cfg Config) time.Duration {
	return max(time.Duration(cfg.RecencyIntervals)*a.interval, cfg.RecencyMin)
}

// vote is the shard's view at one moment.
type vote struct {
	now     time.Time
	primary string
	epoch   uint64
	recent  []*agent
	down    []*agent // see the primary down (threshold met)
	failing []*agent // latest probe of the primary failed (down included)
	healthy int      // recent agents with RecoverProbes healthy probes in a row
	flagged [3][]*agent
	free    [3]bool // every recent agent is clear of the flag for RecoverProbes heartbeats
	lost    bool
	noInfo  bool // nobody recent, and not silent long enough to say AGENT_LOST
	cond    events.AlertCode
}

func (s *Shard) vote(now time.Time) vote {
	v := vote{now: now, epoch: s.maxEpoch, free: [3]bool{true, true, true},
		recent: s.scratch[0][:0], failing: s.scratch[1][:0]}
	defer func() { s.scratch[0], s.scratch[1] = v.recent[:0], v.failing[:0] }()
	for _, a := range s.agents {
		if now.Sub(a.arrived) <= a.recencyWindow(s.cfg) {
			v.recent = append(v.recent, a)
		}
	}
	if len(v.recent) == 0 {
		if now.Sub(s.lastArrival) >= s.cfg.AgentLostAfter {
			v.lost, v.cond = true, events.AlertAgentLost
		} else {
			v.noInfo = true
		}
		if len(s.agents) > 0 {
			v.primary = s.agents[0].primary
			if s.p.Incident != nil && s.p.Incident.Primary != "" {
				v.primary = s.p.Incident.Primary
			}
		}
		return v
	}
	v.primary = s.currentPrimary(v.recent)
	R := s.cfg.RecoverProbes
	for _, a := range v.recent {
		if a.primary == v.primary {
			if !a.ok {
				v.failing = append(v.failing, a)
				if a.consecFail >= s.cfg.FailThreshold && a.downFor() >= s.cfg.DownAfter {
					v.down = append(v.down, a)
				}
			} else if a.healthyStreak >= R {
				v.healthy++
			}
		}
		for i, on := range [3]bool{a.regressed, a.role, a.drift} {
			if on {
				v.flagged[i] = append(v.flagged[i], a)
			}
		}
		for i, free := range [3]int{a.regressFree, a.roleFree, a.driftFree} {
			if free < R {
				v.free[i] = false
			}
		}
	}
	n := len(v.recent)
	var primaryCond events.AlertCode
	switch {
	case 2*len(v.down) > n:
		primaryCond = events.AlertPrimaryDown
	case 2*len(v.failing) > n:
		// Enough agents are failing to make a majority once they reach the threshold:
		// wait for them rather than call it a replica problem.
	case len(v.down) > 0:
		primaryCond = events.AlertReplicaProblem
	}
	for _, c := range []events.AlertCode{primaryCond, s.flagCond(v, flagRegressed), s.flagCond(v, flagRole), s.flagCond(v, flagDrift)} {
		if c != "" && rank(c) > rank(v.cond) {
			v.cond = c
		}
	}
	return v
}

func (s *Shard) flagCond(v vote, i int) events.AlertCode {
	if len(v.flagged[i]) == 0 {
		return ""
	}
	return [3]events.AlertCode{events.AlertPrimaryDataRegressed, events.AlertPrimaryRoleChanged, events.AlertConfigDrift}[i]
}

// currentPrimary is the address of the highest epoch among the recent agents; among
// equals, the one most agents probe, then the one heard last.
func (s *Shard) currentPrimary(recent []*agent) string {
	same := true
	for _, a := range recent[1:] {
		if a.primary != recent[0].primary {
			same = false
			break
		}
	}
	if same {
		return recent[0].primary // the common case: every agent probes the same node
	}
	type cand struct {
		epoch uint64
		votes int
		last  time.Time
	}
	cands := map[string]*cand{}
	best := ""
	for _, a := range recent {
		c := cands[a.primary]
		if c == nil {
			c = &cand{}
			cands[a.primary] = c
		}
		c.epoch = max(c.epoch, a.epoch)
		c.votes++
		if a.arrived.After(c.last) {
			c.last = a.arrived
		}
	}
	for addr, c := range cands {
		if best == "" {
			best = addr
			continue
		}
		b := cands[best]
		if c.epoch > b.epoch || c.epoch == b.epoch && (c.votes > b.votes || c.votes == b.votes && (c.last.After(b.last) || c.last.Equal(b.last) && addr < best)) {
			best = addr
		}
	}
	return best
}

// rank orders alert codes by how much they demand; an open incident escalates to a
// code of higher rank.
func rank(c events.AlertCode) int {
	switch c {
	case events.AlertPrimaryDataRegressed:
		return 6
	case events.AlertPrimaryRoleChanged:
		return 5
	case events.AlertPrimaryDown:
		return 4
	case events.AlertReplicaProblem:
		return 3
	case events.AlertAgentLost:
		return 2
	case events.AlertConfigDrift:
		return 1
	}
	return 0
}

func severity(c events.AlertCode) events.Severity {
	switch c {
	case events.AlertPrimaryDataRegressed, events.AlertPrimaryRoleChanged, events.AlertPrimaryDown:
		return events.SeverityCritical
	}
	return events.SeverityWarning
}

// stateOf is the shard's state given the vote and the open incident.
func (s *Shard) stateOf(v vote, inc *Incident) events.State {
	switch {
	case inc != nil && inc.Severity == events.SeverityCritical:
		return events.StateHard
	case v.lost:
		return events.StateAgentLost
	case len(v.failing) > 0 || inc != nil && inc.Code == events.AlertReplicaProblem:
		return events.StateSoft
	}
	return events.StateOK
}

// recovered reports whether the open incident's condition has been clear long enough.
func (s *Shard) recovered(inc *Incident, v vote) bool {
	n := len(v.recent)
	if n == 0 {
		return false
	}
	majorityHealthy := 2*v.healthy > n
	switch inc.Code {
	case events.AlertPrimaryDown, events.AlertAgentLost:
		return majorityHealthy
	case events.AlertReplicaProblem:
		return v.healthy == n
	case events.AlertPrimaryDataRegressed:
		return v.free[flagRegressed] && majorityHealthy
	case events.AlertPrimaryRoleChanged:
		return v.free[flagRole] && majorityHealthy
	case events.AlertConfigDrift:
		return v.free[flagDrift]
	}
	return majorityHealthy
}

func (s *Shard) evaluate(now time.Time, byTimer bool) []Decision {
	v := s.vote(now)
	if v.noInfo {
		return nil
	}
	var out []Decision
	changes := 0
	if inc := s.p.Incident; inc != nil {
		switch {
		case s.recovered(inc, v):
			out = append(out, s.resolve(v))
			changes++
		case v.cond != "" && rank(v.cond) > rank(inc.Code):
			out = append(out, s.escalate(v, inc, v.cond, &changes, ""))
		case v.cond == events.AlertPrimaryDown && inc.Code == events.AlertPrimaryDown && len(v.down) > inc.MaxAgentsDown:
			out = append(out, s.escalate(v, inc, v.cond, &changes,
				fmt.Sprintf("More agents see it down now (%d, was %d). ", len(v.down), inc.MaxAgentsDown)))
		}
	}
	if s.p.Incident == nil && v.cond != "" {
		out = append(out, s.open(v))
		changes++
	}
	s.state = s.stateOf(v, s.p.Incident)
	for ; changes > 0; changes-- {
		s.p.Changes = append(s.p.Changes, now)
	}
	// Flapping starts and stops with the number of changes inside the window.
	keep := s.p.Changes[:0]
	for _, t := range s.p.Changes {
		if now.Sub(t) < s.cfg.FlapWindow {
			keep = append(keep, t)
		}
	}
	s.p.Changes = keep
	note := ""
	switch {
	case !s.p.Flapping && len(s.p.Changes) > s.cfg.FlapChanges:
		s.p.Flapping = true
		note = fmt.Sprintf(" The shard is FLAPPING: %d state changes within %s; automatic failover should hold off.",
			len(s.p.Changes), s.cfg.FlapWindow)
	case s.p.Flapping && len(s.p.Changes) <= s.cfg.FlapChanges/2:
		s.p.Flapping = false
		note = fmt.Sprintf(" The shard stopped flapping (%d state changes within %s).", len(s.p.Changes), s.cfg.FlapWindow)
	}
	if note != "" && len(out) == 0 && s.p.Incident != nil {
		inc := s.p.Incident
		d := s.decision(events.KindAlertEscalated, v, inc)
		d.Alert.Reason = "Still open: " + s.reason(inc.Code, v, inc)
		out = append(out, d)
	}
	for i := range out {
		out[i].Alert.Flapping = s.p.Flapping
		out[i].ByTimer = byTimer
	}
	if note != "" && len(out) > 0 {
		out[len(out)-1].Alert.Reason += note
	}
	return out
}

func (s *Shard) open(v vote) Decision {
	inc := &Incident{ID: s.newID(), Code: v.cond, Severity: severity(v.cond), CorrelationID: s.lastID,
		Epoch: v.epoch, Primary: v.primary, OpenedAt: v.now, MaxAgentsDown: len(v.down)}
	s.correlate(inc, v)
	inc.State = s.stateOf(v, inc)
	s.p.Incident = inc
	s.p.LastIncidentID = inc.ID
	d := s.decision(events.KindAlertOpened, v, inc)
	d.Alert.Reason = s.reason(inc.Code, v, inc)
	return d
}

// correlate finds the heartbeat that started the incident: the earliest first failure
// among the agents that see the primary down, or the first heartbeat that carried the
// flag; for AGENT_LOST the last heartbeat heard.
func (s *Shard) correlate(inc *Incident, v vote) {
	set := func(at time.Time, id string) {
		if id != "" && (inc.FirstFailure.IsZero() || at.Before(inc.FirstFailure)) {
			inc.FirstFailure, inc.CorrelationID = at, id
		}
	}
	switch inc.Code {
	case events.AlertPrimaryDown, events.AlertReplicaProblem:
		for _, a := range v.down {
			set(a.firstFail, a.firstFailID)
		}
	case events.AlertPrimaryDataRegressed, events.AlertPrimaryRoleChanged, events.AlertConfigDrift:
		i := map[events.AlertCode]int{events.AlertPrimaryDataRegressed: flagRegressed,
			events.AlertPrimaryRoleChanged: flagRole, events.AlertConfigDrift: flagDrift}[inc.Code]
		for _, a := range v.flagged[i] {
			at, id := a.flagSince[i].at, a.flagSince[i].id
			if inc.Code != events.AlertConfigDrift && a.lastStreak.id != "" && !a.lastStreak.at.After(at) && at.Sub(a.lastStreak.at) <= failureLinksFlag {
				at, id = a.lastStreak.at, a.lastStreak.id
			}
			set(at, id)
		}
	}
}

func (s *Shard) escalate(v vote, inc *Incident, code events.AlertCode, changes *int, prefix string) Decision {
	if inc.Code != code {
		inc.Code, inc.Severity = code, severity(code)
		if inc.FirstFailure.IsZero() {
			// The incident keeps its correlation id; only the evidence is filled in.
			corr := inc.CorrelationID
			s.correlate(inc, v)
			inc.CorrelationID = corr
		}
	}
	inc.MaxAgentsDown = max(inc.MaxAgentsDown, len(v.down))
	inc.Epoch = max(inc.Epoch, v.epoch)
	if v.primary != "" {
		inc.Primary = v.primary
	}
	if st := s.stateOf(v, inc); st != inc.State {
		inc.State = st
		*changes++
	}
	d := s.decision(events.KindAlertEscalated, v, inc)
	d.Alert.Reason = prefix + s.reason(code, v, inc)
	return d
}

func (s *Shard) resolve(v vote) Decision {
	inc := s.p.Incident
	s.p.Incident = nil
	d := s.decision(events.KindAlertResolved, v, inc)
	d.Alert.State = s.stateOf(v, nil)
	d.Alert.Reason = s.resolvedReason(inc, v)
	return d
}

func (s *Shard) decision(k events.Kind, v vote, inc *Incident) Decision {
	a := events.Alert{IncidentID: inc.ID, Code: inc.Code, Severity: inc.Severity, State: inc.State,
		Primary: inc.Primary, AgentsReporting: len(v.recent), AgentsDown: len(v.down),
		FirstFailure: inc.FirstFailure, LastHeartbeatID: s.lastID, LastHeartbeatAt: s.lastPublished}
	if v.primary != "" && k != events.KindAlertResolved {
		a.Primary = v.primary
	}
	for _, x := range v.failing {
		a.FailedProbes = max(a.FailedProbes, x.consecFail)
		a.DownFor = max(a.DownFor, x.downFor())
	}
	if k == events.KindAlertResolved && !inc.FirstFailure.IsZero() {
		// How long the incident lasted, from its first failure to the heartbeat that
		// cleared it (both on agents' clocks).
		for _, x := range v.recent {
			if x.id == s.lastID {
				a.DownFor = max(0, x.time.Sub(inc.FirstFailure))
			}
		}
	}
	return Decision{Kind: k, Shard: s.id, CorrelationID: inc.CorrelationID, Epoch: max(inc.Epoch, v.epoch), Alert: a}
}
