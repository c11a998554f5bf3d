// Package checker is Ratequeue's Jepsen-style total-queue check: from a history file
// (package history) it decides whether every acknowledged enqueue was delivered, what
// was delivered that nobody enqueued, and whether per-queue order and per-queue rate
// limits held.
//
// Definitions (a "message" is a message id):
//
//   - acknowledged: at least one enqueue attempt has status ok.
//   - delivered: at least one deliver record.
//   - lost: acknowledged and never delivered. Conclusive only when the history ends
//     with a drain (end record with drained=true); Report.Drained says so.
//   - unexpected: delivered but never attempted, or delivered from another queue
//     than it was enqueued to.
//   - corrupt: delivered with body_ok=false.
//   - duplicated: delivered more than once (at-least-once allows this: a redelivery
//     after the visibility timeout or after a failover); duplicated_after_ack counts
//     deliveries written after a successful ack of the same message.
//   - unknown outcome: no ok attempt but an unknown one; delivered or not, both are
//     legal (informational). failed_delivered: every attempt definitely failed and
//     yet the message was delivered (a client that misreports a stored write).
//   - reordered: the order Ratequeue guarantees is per queue, between acknowledged
//     messages whose enqueues do not overlap in time: if A's enqueue was
//     acknowledged (complete_us of its first ok attempt) before B's first attempt was
//     invoked, A's first delivery precedes B's first delivery (server time).
//     Redeliveries are not ordered (an expired message goes back to the head of its
//     queue and may follow messages delivered meanwhile), nor are concurrent
//     enqueues. A reordered message is one first-delivered before such an A.
//   - rate violation: deliveries of a queue sorted by server time must satisfy, for
//     every pair i < j, ts[j] - ts[i] >= sum of interval_us[i..j-1] - tolerance:
//     no window holds more deliveries than the rate allows. Each offending delivery
//     counts once; the worst window is reported. The tolerance (default 1 ms) allows
//     for clock differences between a shard's nodes across a failover.
package checker

import (
	"errors"
	"fmt"
	"io"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heartline/heartline/services/ratequeue/history"
)

// Options tune the check.
type Options struct {
	// RateTolerance is subtracted from every window's required duration.
	RateTolerance time.Duration
	// MaxListed caps the ids and examples listed per anomaly (default 20).
	MaxListed int
	// FailOn names extra anomalies that make the report invalid: "duplicated",
	// "duplicated_after_ack", "reordered", "rate", "failed_delivered",
	// "undrained". Lost, unexpected and corrupt always do.
	FailOn []string
}

// Reorder is one reordering example.
type Reorder struct {
	Queue string `json:"queue"`
	// Early was first-delivered before Late although Late's enqueue was acknowledged
	// before Early's was invoked.
	Early         string `json:"early"`
	Late          string `json:"late"`
	EarlyServerUS int64  `json:"early_server_us"`
	LateServerUS  int64  `json:"late_server_us"`
}

// RateViolation is one window with more deliveries than the queue's rate allows.
type RateViolation struct {
	Queue      string  `json:"queue"`
	Deliveries int     `json:"deliveries"`
	FromUS     int64   `json:"from_server_us"`
	ToUS       int64   `json:"to_server_us"`
	WindowUS   int64   `json:"window_us"`
	RequiredUS int64   `json:"required_us"`
	Rate       float64 `json:"rate_per_s"`
	FirstID    string  `json:"first_id"`
	LastID     string  `json:"last_id"`
}

// Report is the check's result.
type Report struct {
	Valid    bool     `json:"valid"`
	Problems []string `json:"problems,omitempty"`
	Run      string   `json:"run"`
	Drained  bool     `json:"drained"`

	EnqueueAttempts     int `json:"enqueue_attempts"`
	Attempted           int `json:"attempted"`
	Acknowledged        int `json:"acknowledged"`
	Failed              int `json:"failed"`
	Unknown             int `json:"unknown_outcome"`
	UnknownDelivered    int `json:"unknown_delivered"`
	UnknownNotDelivered int `json:"unknown_not_delivered"`
	FailedDelivered     int `json:"failed_delivered"`

	Delivered          int `json:"delivered"`
	Deliveries         int `json:"deliveries"`
	Redeliveries       int `json:"redeliveries"`
	Duplicated         int `json:"duplicated"`
	DuplicatedAfterAck int `json:"duplicated_after_ack"`
	Acks               int `json:"acks"`
	AcksOK             int `json:"acks_ok"`

	Lost       int `json:"lost"`
	Unexpected int `json:"unexpected"`
	// Foreign counts deliveries of another run's messages (id not <run>-...): left in
	// the shards by an earlier run that did not drain. Reported, not judged.
	Foreign        int `json:"foreign"`
	Corrupt        int `json:"corrupt"`
	Reordered      int `json:"reordered"`
	RateViolations int `json:"rate_violations"`
	Queues         int `json:"queues"`

	LostIDs       []string        `json:"lost_ids,omitempty"`
	UnexpectedIDs []string        `json:"unexpected_ids,omitempty"`
	ForeignIDs    []string        `json:"foreign_ids,omitempty"`
	CorruptIDs    []string        `json:"corrupt_ids,omitempty"`
	DuplicatedIDs []string        `json:"duplicated_after_ack_ids,omitempty"`
	Reorders      []Reorder       `json:"reorders,omitempty"`
	RateWorst     []RateViolation `json:"rate_worst,omitempty"`
	RateTolerance string          `json:"rate_tolerance"`
}

type msg struct {
	queue       string
	attempted   bool
	firstInvoke int64
	ackedAt     int64 // complete_us of the first ok attempt; 0 if none
	ok, unknown bool
	deliveries  []delivery
	ackOKLine   int // line of the first ok ack
}

// delivery is what the check keeps of a deliver record.
type delivery struct {
	id       string
	queue    string
	serverUS int64
	interval int64
	line     int
	corrupt  bool
}

// Checker accumulates a history one event at a time (so that a long history is never
// held in memory as a whole) and reports at the end.
type Checker struct {
	opt     Options
	r       Report
	msgs    map[string]*msg
	order   []string
	byQueue map[string][]delivery
	// enqueued: the queues this history enqueued to.
	enqueued map[string]bool
}

// New returns an empty checker.
func New(opt Options) *Checker {
	if opt.MaxListed <= 0 {
		opt.MaxListed = 20
	}
	if opt.RateTolerance < 0 {
		opt.RateTolerance = 0
	}
	return &Checker{opt: opt, r: Report{RateTolerance: opt.RateTolerance.String()}, msgs: map[string]*msg{}, byQueue: map[string][]delivery{}, enqueued: map[string]bool{}}
}

func (c *Checker) get(id string) *msg {
	m := c.msgs[id]
	if m == nil {
		m = &msg{}
		c.msgs[id] = m
		c.order = append(c.order, id)
	}
	return m
}

// foreign reports whether a message this history never enqueued is another run's: its
// id is not of this run (load ids are <run>-<seq>) and it came only from queues this
// history never enqueued to.
func (c *Checker) foreign(id string, m *msg) bool {
	if c.r.Run == "" || strings.HasPrefix(id, c.r.Run+"-") {
		return false
	}
	for _, d := range m.deliveries {
		if c.enqueued[d.queue] {
			return false
		}
	}
	return true
}

// Add takes one event (in file order).
func (c *Checker) Add(e history.Event) {
	r := &c.r
	switch e.Type {
	case history.TypeHeader:
		r.Run = e.Run
	case history.TypeEnd:
		r.Drained = e.Drained
	case history.TypeEnqueue:
		r.EnqueueAttempts++
		c.enqueued[e.Queue] = true
		m := c.get(e.ID)
		if !m.attempted || e.InvokeUS < m.firstInvoke {
			m.firstInvoke = e.InvokeUS
		}
		if !m.attempted {
			m.queue = e.Queue
		}
		m.attempted = true
		switch e.Status {
		case history.StatusOK:
			if !m.ok || e.CompleteUS < m.ackedAt {
				m.ackedAt = e.CompleteUS
			}
			m.ok = true
		case history.StatusUnknown:
			m.unknown = true
		}
	case history.TypeDeliver:
		r.Deliveries++
		m := c.get(e.ID)
		d := delivery{id: e.ID, queue: e.Queue, serverUS: e.ServerUS, interval: e.IntervalUS, line: e.Line,
			corrupt: e.BodyOK != nil && !*e.BodyOK}
		m.deliveries = append(m.deliveries, d)
		c.byQueue[e.Queue] = append(c.byQueue[e.Queue], d)
	case history.TypeAck:
		r.Acks++
		if e.Status == history.StatusOK {
			r.AcksOK++
			m := c.get(e.ID)
			if m.ackOKLine == 0 {
				m.ackOKLine = e.Line
			}
		}
	}
}

// CheckReader checks a history stream without holding it in memory.
func CheckReader(rd io.Reader, opt Options) (Report, error) {
	c := New(opt)
	hr := history.NewReader(rd)
	for {
		e, err := hr.Next()
		if errors.Is(err, io.EOF) {
			return c.Report(), nil
		}
		if err != nil {
			return Report{}, err
		}
		c.Add(e)
	}
}

// Check runs the check over a history's events (as read by history.ReadAll).
func Check(events []history.Event, opt Options) Report {
	c := New(opt)
	for _, e := range events {
		c.Add(e)
	}
	return c.Report()
}

// Report finishes the check.
func (c *Checker) Report() Report {
	r := c.r
	opt := c.opt
	msgs, order, byQueue := c.msgs, c.order, c.byQueue
	list := func(dst *[]string, id string) {
		if len(*dst) < opt.MaxListed {
			*dst = append(*dst, id)
		}
	}
	for _, id := range order {
		m := msgs[id]
		if m.attempted {
			r.Attempted++
		}
		delivered := len(m.deliveries) > 0
		if delivered {
			r.Delivered++
			r.Redeliveries += len(m.deliveries) - 1
			if len(m.deliveries) > 1 {
				r.Duplicated++
			}
		}
		switch {
		case m.ok:
			r.Acknowledged++
			if !delivered {
				r.Lost++
				list(&r.LostIDs, id)
			}
		case m.unknown:
			r.Unknown++
			if delivered {
				r.UnknownDelivered++
			} else {
				r.UnknownNotDelivered++
			}
		case m.attempted:
			r.Failed++
			if delivered {
				r.FailedDelivered++
			}
		}
		if delivered && !m.attempted && c.foreign(id, m) {
			// Another run's message: consumers take the next ready message of a shard,
			// whichever run left it behind. Not judged here.
			r.Foreign++
			list(&r.ForeignIDs, id)
		} else if delivered && !m.attempted {
			r.Unexpected++
			list(&r.UnexpectedIDs, id)
		} else if delivered {
			for _, d := range m.deliveries {
				if d.queue != m.queue {
					r.Unexpected++
					list(&r.UnexpectedIDs, id)
					break
				}
			}
		}
		corrupt := false
		for _, d := range m.deliveries {
			corrupt = corrupt || d.corrupt
		}
		if corrupt {
			r.Corrupt++
			list(&r.CorruptIDs, id)
		}
		if m.ackOKLine > 0 {
			for _, d := range m.deliveries {
				if d.line > m.ackOKLine {
					r.DuplicatedAfterAck++
					list(&r.DuplicatedIDs, id)
					break
				}
			}
		}
	}
	queues := make([]string, 0, len(byQueue))
	for q := range byQueue {
		queues = append(queues, q)
	}
	sort.Strings(queues)
	r.Queues = len(queues)
	for _, q := range queues {
		ds := byQueue[q]
		sort.SliceStable(ds, func(i, j int) bool { return ds[i].serverUS < ds[j].serverUS })
		checkOrder(&r, q, ds, msgs, opt)
		checkRate(&r, q, ds, opt)
	}
	sort.SliceStable(r.RateWorst, func(i, j int) bool {
		return excess(r.RateWorst[i]) > excess(r.RateWorst[j])
	})
	if len(r.RateWorst) > opt.MaxListed {
		r.RateWorst = r.RateWorst[:opt.MaxListed]
	}
	r.judge(opt)
	return r
}

func excess(v RateViolation) int64 { return v.RequiredUS - v.WindowUS }

// checkOrder: first deliveries of acknowledged messages, in server-time order; a
// message is reordered when a later-delivered message was acknowledged before it was
// first invoked.
func checkOrder(r *Report, q string, ds []delivery, msgs map[string]*msg, opt Options) {
	type first struct {
		id      string
		server  int64
		invoke  int64
		ackedAt int64
	}
	var fs []first
	done := map[string]bool{}
	for _, d := range ds {
		m := msgs[d.id]
		if done[d.id] || m == nil || !m.ok || m.queue != q {
			continue
		}
		done[d.id] = true
		fs = append(fs, first{id: d.id, server: d.serverUS, invoke: m.firstInvoke, ackedAt: m.ackedAt})
	}
	// suffix minimum of ackedAt
	minIdx := -1
	for i := len(fs) - 1; i >= 0; i-- {
		if minIdx >= 0 && fs[minIdx].ackedAt < fs[i].invoke {
			r.Reordered++
			if len(r.Reorders) < opt.MaxListed {
				r.Reorders = append(r.Reorders, Reorder{Queue: q, Early: fs[i].id, Late: fs[minIdx].id,
					EarlyServerUS: fs[i].server, LateServerUS: fs[minIdx].server})
			}
		}
		if minIdx < 0 || fs[i].ackedAt < fs[minIdx].ackedAt {
			minIdx = i
		}
	}
}

// checkRate finds deliveries j with ts[j]-ts[i] < sum(iv[i..j-1]) - tol for some i<j:
// with x_k = ts[k] - S_k (S_k the prefix sum of intervals), that is x_j < max x_i - tol.
func checkRate(r *Report, q string, ds []delivery, opt Options) {
	tol := opt.RateTolerance.Microseconds()
	var s int64
	best := -1
	var bestX, bestS int64
	for j, d := range ds {
		x := d.serverUS - s
		if best >= 0 && x < bestX-tol {
			r.RateViolations++
			v := RateViolation{Queue: q, Deliveries: j - best + 1, FromUS: ds[best].serverUS, ToUS: d.serverUS,
				WindowUS: d.serverUS - ds[best].serverUS, RequiredUS: s - bestS, FirstID: ds[best].id, LastID: d.id}
			if d.interval > 0 {
				v.Rate = 1e6 / float64(d.interval)
			}
			if len(r.RateWorst) < 100*opt.MaxListed {
				r.RateWorst = append(r.RateWorst, v)
			}
		}
		if best < 0 || x > bestX {
			best, bestX, bestS = j, x, s
		}
		s += d.interval
	}
}

func (r *Report) judge(opt Options) {
	add := func(bad bool, format string, args ...any) {
		if bad {
			r.Problems = append(r.Problems, fmt.Sprintf(format, args...))
		}
	}
	add(r.Lost > 0, "%d acknowledged messages lost", r.Lost)
	add(r.Unexpected > 0, "%d unexpected messages delivered", r.Unexpected)
	add(r.Corrupt > 0, "%d messages delivered with a corrupt body", r.Corrupt)
	for _, f := range opt.FailOn {
		switch strings.TrimSpace(f) {
		case "duplicated":
			add(r.Duplicated > 0, "%d messages delivered more than once", r.Duplicated)
		case "duplicated_after_ack":
			add(r.DuplicatedAfterAck > 0, "%d messages delivered again after an ack", r.DuplicatedAfterAck)
		case "reordered":
			add(r.Reordered > 0, "%d messages delivered out of order", r.Reordered)
		case "rate":
			add(r.RateViolations > 0, "%d deliveries broke their queue's rate", r.RateViolations)
		case "failed_delivered":
			add(r.FailedDelivered > 0, "%d messages reported failed were delivered", r.FailedDelivered)
		case "undrained":
			add(!r.Drained, "the history does not end with a complete drain")
		}
	}
	r.Valid = len(r.Problems) == 0
}

// FailOnNames are the names Options.FailOn accepts.
var FailOnNames = []string{"duplicated", "duplicated_after_ack", "reordered", "rate", "failed_delivered", "undrained"}

// WriteTable prints the report for people.
func (r Report) WriteTable(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	row := func(k string, v any, note string) { fmt.Fprintf(tw, "%s\t%v\t%s\n", k, v, note) }
	row("run", r.Run, "")
	row("drained", r.Drained, "lost is conclusive only after a full drain")
	row("enqueue attempts", r.EnqueueAttempts, "")
	row("acknowledged", r.Acknowledged, "enqueues with an ok attempt")
	row("failed", r.Failed, "definitely not stored")
	row("unknown outcome", r.Unknown, fmt.Sprintf("%d delivered, %d not (both legal)", r.UnknownDelivered, r.UnknownNotDelivered))
	row("failed but delivered", r.FailedDelivered, "a failure report that was wrong")
	row("delivered", r.Delivered, fmt.Sprintf("%d deliveries, %d redeliveries", r.Deliveries, r.Redeliveries))
	row("acks", r.Acks, fmt.Sprintf("%d ok", r.AcksOK))
	row("LOST", r.Lost, "acknowledged, never delivered")
	row("UNEXPECTED", r.Unexpected, "delivered, never enqueued (or from another queue)")
	if r.Foreign > 0 {
		row("foreign", r.Foreign, "another run's messages delivered (left undrained by it; not judged)")
	}
	row("CORRUPT", r.Corrupt, "body differs from the enqueued one")
	row("duplicated", r.Duplicated, fmt.Sprintf("%d delivered again after an ack", r.DuplicatedAfterAck))
	row("reordered", r.Reordered, "first deliveries out of acknowledged enqueue order")
	row("rate violations", r.RateViolations, fmt.Sprintf("over %d queues, tolerance %s", r.Queues, r.RateTolerance))
	verdict := "VALID"
	if !r.Valid {
		verdict = "INVALID: " + strings.Join(r.Problems, "; ")
	}
	row("verdict", verdict, "")
	_ = tw.Flush()
	if len(r.LostIDs) > 0 {
		fmt.Fprintf(w, "lost ids (first %d): %s\n", len(r.LostIDs), strings.Join(r.LostIDs, " "))
	}
	if len(r.UnexpectedIDs) > 0 {
		fmt.Fprintf(w, "unexpected ids: %s\n", strings.Join(r.UnexpectedIDs, " "))
	}
	for _, v := range r.RateWorst {
		if len(r.RateWorst) > 5 {
			break
		}
		fmt.Fprintf(w, "rate: queue %s: %d deliveries in %d µs, %d µs required (%s..%s)\n", v.Queue, v.Deliveries, v.WindowUS, v.RequiredUS, v.FirstID, v.LastID)
	}
	for i, o := range r.Reorders {
		if i >= 5 {
			break
		}
		fmt.Fprintf(w, "reorder: queue %s: %s delivered at %d before %s (acknowledged before %s was enqueued) at %d\n", o.Queue, o.Early, o.EarlyServerUS, o.Late, o.Early, o.LateServerUS)
	}
}
