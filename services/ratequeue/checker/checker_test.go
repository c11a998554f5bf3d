package checker

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/heartline/heartline/services/ratequeue/history"
)

// h builds a history from short specs, numbering lines like a file would.
type h struct{ evs []history.Event }

func newH() *h {
	return &h{evs: []history.Event{{Type: history.TypeHeader, Version: 1, Run: "t"}}}
}

func (x *h) add(e history.Event) *h {
	e.Line = len(x.evs) + 1
	x.evs = append(x.evs, e)
	return x
}

func (x *h) enq(q, id, status string, invoke, complete int64) *h {
	e := history.Event{Type: history.TypeEnqueue, Status: status, Queue: q, ID: id, Attempt: 1, InvokeUS: invoke, CompleteUS: complete}
	if status == history.StatusOK {
		e.Shard, e.Epoch = "shard-0", 1
	}
	return x.add(e)
}

func (x *h) del(q, id string, server, iv int64) *h {
	return x.add(history.Event{Type: history.TypeDeliver, Queue: q, ID: id, ServerUS: server, Count: 1, IntervalUS: iv})
}

func (x *h) ack(q, id string) *h {
	return x.add(history.Event{Type: history.TypeAck, Queue: q, ID: id, Status: history.StatusOK})
}

func (x *h) end() *h { return x.add(history.Event{Type: history.TypeEnd, Drained: true}) }

func TestCleanHistoryIsValid(t *testing.T) {
	x := newH().enq("q", "a", "ok", 1, 2).enq("q", "b", "ok", 3, 4).
		del("q", "a", 100, 1000).ack("q", "a").del("q", "b", 1100, 1000).ack("q", "b").end()
	r := Check(x.evs, Options{FailOn: FailOnNames})
	if !r.Valid || r.Acknowledged != 2 || r.Delivered != 2 || r.Lost+r.Unexpected+r.Reordered+r.RateViolations+r.Duplicated != 0 || !r.Drained {
		t.Fatalf("%+v", r)
	}
}

func TestLost(t *testing.T) {
	x := newH().enq("q", "a", "ok", 1, 2).enq("q", "b", "ok", 3, 4).del("q", "a", 100, 0).end()
	r := Check(x.evs, Options{})
	if r.Valid || r.Lost != 1 || r.LostIDs[0] != "b" {
		t.Fatalf("%+v", r)
	}
}

func TestUnexpectedAndWrongQueue(t *testing.T) {
	x := newH().enq("q", "a", "ok", 1, 2).del("q", "a", 100, 0).del("q", "ghost", 200, 0).
		enq("q", "c", "ok", 5, 6).del("other", "c", 300, 0).end()
	r := Check(x.evs, Options{})
	if r.Valid || r.Unexpected != 2 {
		t.Fatalf("%+v", r)
	}
}

func TestDuplicatesAndRedeliveries(t *testing.T) {
	x := newH().enq("q", "a", "ok", 1, 2).enq("q", "b", "ok", 3, 4).
		del("q", "a", 100, 0).del("q", "a", 200, 0). // redelivery without ack: legal
		ack("q", "a").
		del("q", "b", 300, 0).ack("q", "b").del("q", "b", 400, 0). // after an ack
		end()
	r := Check(x.evs, Options{})
	if !r.Valid || r.Duplicated != 2 || r.DuplicatedAfterAck != 1 || r.Redeliveries != 2 || r.DuplicatedIDs[0] != "b" {
		t.Fatalf("%+v", r)
	}
	if r := Check(x.evs, Options{FailOn: []string{"duplicated_after_ack"}}); r.Valid {
		t.Fatal("fail-on duplicated_after_ack ignored")
	}
}

func TestUnknownOutcomesAreInformational(t *testing.T) {
	x := newH().enq("q", "a", "unknown", 1, 2).enq("q", "b", "unknown", 3, 4).enq("q", "c", "failed", 5, 6).
		del("q", "a", 100, 0).del("q", "c", 200, 0).end()
	r := Check(x.evs, Options{})
	if !r.Valid || r.UnknownDelivered != 1 || r.UnknownNotDelivered != 1 || r.FailedDelivered != 1 || r.Failed != 1 {
		t.Fatalf("%+v", r)
	}
	// A retry that succeeded makes the message acknowledged.
	x = newH().enq("q", "a", "unknown", 1, 2).add(history.Event{Type: history.TypeEnqueue, Status: "ok", Queue: "q", ID: "a",
		Attempt: 2, InvokeUS: 3, CompleteUS: 4, Shard: "s", Epoch: 1}).end()
	if r := Check(x.evs, Options{}); r.Lost != 1 || r.Acknowledged != 1 {
		t.Fatalf("%+v", r)
	}
}

func TestReordered(t *testing.T) {
	// a acknowledged (t=2) before b invoked (t=3): a must come first.
	x := newH().enq("q", "a", "ok", 1, 2).enq("q", "b", "ok", 3, 4).
		del("q", "b", 100, 0).del("q", "a", 200, 0).end()
	r := Check(x.evs, Options{})
	if r.Reordered != 1 || r.Reorders[0].Early != "b" || r.Reorders[0].Late != "a" || !r.Valid {
		t.Fatalf("%+v", r)
	}
	if r := Check(x.evs, Options{FailOn: []string{"reordered"}}); r.Valid {
		t.Fatal("fail-on reordered ignored")
	}
	// Concurrent enqueues (overlapping) may be delivered in either order.
	x = newH().enq("q", "a", "ok", 1, 10).enq("q", "b", "ok", 5, 6).del("q", "b", 100, 0).del("q", "a", 200, 0).end()
	if r := Check(x.evs, Options{}); r.Reordered != 0 {
		t.Fatalf("%+v", r)
	}
	// A redelivery after later messages is not a reorder.
	x = newH().enq("q", "a", "ok", 1, 2).enq("q", "b", "ok", 3, 4).
		del("q", "a", 100, 0).del("q", "b", 200, 0).del("q", "a", 300, 0).end()
	if r := Check(x.evs, Options{}); r.Reordered != 0 {
		t.Fatalf("%+v", r)
	}
	// Different queues are not ordered with each other.
	x = newH().enq("q1", "a", "ok", 1, 2).enq("q2", "b", "ok", 3, 4).del("q2", "b", 100, 0).del("q1", "a", 200, 0).end()
	if r := Check(x.evs, Options{}); r.Reordered != 0 {
		t.Fatalf("%+v", r)
	}
}

func TestRateViolations(t *testing.T) {
	// 10/s = 100000 µs apart.
	ok := newH()
	for i, ts := range []int64{0, 100000, 250000, 350000, 450000} {
		id := string(rune('a' + i))
		ok.enq("q", id, "ok", 1, 2).del("q", id, 1e6+ts, 100000)
	}
	if r := Check(ok.end().evs, Options{}); r.RateViolations != 0 {
		t.Fatalf("%+v", r)
	}
	// One pair too close.
	bad := newH()
	for i, ts := range []int64{0, 100000, 150000, 300000} {
		id := string(rune('a' + i))
		bad.enq("q", id, "ok", 1, 2).del("q", id, 1e6+ts, 100000)
	}
	r := Check(bad.end().evs, Options{RateTolerance: time.Millisecond})
	if r.RateViolations != 1 || r.RateWorst[0].LastID != "c" || r.RateWorst[0].Deliveries != 3 || r.RateWorst[0].RequiredUS != 200000 || !r.Valid {
		t.Fatalf("%+v", r)
	}
	if r := Check(bad.evs, Options{FailOn: []string{"rate"}}); r.Valid {
		t.Fatal("fail-on rate ignored")
	}
	// Every gap fine except over a longer window? Impossible with equal intervals,
	// but not with changing ones: a burst after a slow stretch still counts per pair.
	w := newH()
	for i, ts := range []int64{0, 50000, 100000} { // 3 deliveries in 100 ms at 20/s (50 ms) OK
		id := string(rune('a' + i))
		w.enq("q", id, "ok", 1, 2).del("q", id, 1e6+ts, 50000)
	}
	if r := Check(w.end().evs, Options{}); r.RateViolations != 0 {
		t.Fatalf("%+v", r)
	}
	// The tolerance absorbs small clock steps.
	tl := newH().enq("q", "a", "ok", 1, 2).del("q", "a", 1e6, 100000).enq("q", "b", "ok", 1, 2).del("q", "b", 1e6+99500, 100000).end()
	if r := Check(tl.evs, Options{RateTolerance: time.Millisecond}); r.RateViolations != 0 {
		t.Fatalf("%+v", r)
	}
	if r := Check(tl.evs, Options{}); r.RateViolations != 1 {
		t.Fatalf("%+v", r)
	}
}

func TestCorruptAndUndrained(t *testing.T) {
	f := false
	x := newH().enq("q", "a", "ok", 1, 2).add(history.Event{Type: history.TypeDeliver, Queue: "q", ID: "a", ServerUS: 5, Count: 1, BodyOK: &f})
	r := Check(x.evs, Options{FailOn: []string{"undrained"}})
	if r.Valid || r.Corrupt != 1 || r.Drained || len(r.Problems) != 2 {
		t.Fatalf("%+v", r)
	}
	var buf bytes.Buffer
	r.WriteTable(&buf)
	if !strings.Contains(buf.String(), "INVALID") {
		t.Fatal(buf.String())
	}
}

func TestCheckReaderStreamsTheSameReport(t *testing.T) {
	x := newH().enq("q", "a", "ok", 1, 2).enq("q", "b", "ok", 3, 4).del("q", "b", 100, 50).del("q", "a", 120, 50).
		ack("q", "a").enq("q", "c", "unknown", 5, 6).del("q", "ghost", 300, 0).end()
	var buf bytes.Buffer
	w := history.NewWriter(&buf)
	for _, e := range x.evs {
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	got, err := CheckReader(&buf, Options{})
	if err != nil {
		t.Fatal(err)
	}
	want := Check(x.evs, Options{})
	if fmt.Sprintf("%+v", got) != fmt.Sprintf("%+v", want) || got.Reordered != 1 || got.RateViolations != 1 || got.Unexpected != 1 {
		t.Fatalf("stream %+v\nslice %+v", got, want)
	}
	if _, err := CheckReader(strings.NewReader("{}\n"), Options{}); err == nil {
		t.Fatal("a malformed stream was accepted")
	}
}

// Messages an earlier run left in its own queues are reported as foreign, not as
// unexpected; an unknown id in one of this run's queues is still unexpected.
func TestForeignMessagesFromAnotherRun(t *testing.T) {
	x := newH().enq("lg-t-1", "t-1", "ok", 1, 2).del("lg-t-1", "t-1", 100, 0).ack("lg-t-1", "t-1").
		del("lg-old-3", "old-7", 200, 0).ack("lg-old-3", "old-7").
		del("lg-t-1", "old-8", 300, 0).end()
	r := Check(x.evs, Options{})
	if r.Foreign != 1 || r.ForeignIDs[0] != "old-7" || r.Unexpected != 1 || r.UnexpectedIDs[0] != "old-8" || r.Valid {
		t.Fatalf("%+v", r)
	}
	var b bytes.Buffer
	r.WriteTable(&b)
	if !strings.Contains(b.String(), "foreign") {
		t.Errorf("table does not show the foreign messages:\n%s", b.String())
	}
}
