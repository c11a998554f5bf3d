package runner

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"math"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/heartline/heartline/shared/topology"
)

// record is the part of a `ratequeue load` history line (JSON lines, version 1; see
// the ratequeue README) that chaos reads. Unknown fields are ignored: chaos only
// reads, and `ratequeue check` is the strict judge of the file.
type record struct {
	Type       string `json:"type"`
	Status     string `json:"status"`
	Queue      string `json:"queue"`
	ID         string `json:"id"`
	InvokeUS   int64  `json:"invoke_us"`
	CompleteUS int64  `json:"complete_us"`
	Shard      string `json:"shard"`
	TimeUS     int64  `json:"t_us"`
	Count      int64  `json:"count"`
	Error      string `json:"error"`
	Drained    bool   `json:"drained"`
}

// op is one enqueue attempt or delivery, reduced to what the probes and the report use.
type op struct {
	deliver bool
	ok      bool
	shard   string
	invoke  time.Time // enqueue: invoked; deliver: received
	done    time.Time // enqueue: completed; deliver: received
	first   bool      // deliver: first delivery of the message
	err     string
}

func (o op) latency() time.Duration { return o.done.Sub(o.invoke) }

// History tails a history file as `ratequeue load` writes it (it may end in a partial
// line) and keeps the operations in memory.
type History struct {
	path string
	topo topology.Map

	mu     sync.Mutex
	off    int64
	ops    []op
	ended  bool
	bad    int
	rest   []byte
	failed map[string]bool
}

// NewHistory follows path; topo maps a failed enqueue's queue to its shard (the file
// names the shard only for acknowledged ones).
func NewHistory(path string, topo topology.Map) *History {
	return &History{path: path, topo: topo}
}

// Poll reads what was appended since the last call.
func (h *History) Poll() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	f, err := os.Open(h.path)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Seek(h.off, io.SeekStart); err != nil {
		return err
	}
	b, err := io.ReadAll(io.LimitReader(f, 64<<20))
	if err != nil {
		return err
	}
	h.off += int64(len(b))
	data := append(h.rest, b...)
	last := bytes.LastIndexByte(data, '\n')
	if last < 0 {
		h.rest = data
		return nil
	}
	h.rest = append([]byte(nil), data[last+1:]...)
	sc := bufio.NewScanner(bytes.NewReader(data[:last+1]))
	sc.Buffer(make([]byte, 64<<10), 4<<20)
	for sc.Scan() {
		var r record
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			h.bad++
			continue
		}
		h.add(r)
	}
	return sc.Err()
}

func us(v int64) time.Time { return time.UnixMicro(v) }

func (h *History) add(r record) {
	switch r.Type {
	case "enqueue":
		shard := r.Shard
		if shard == "" && r.Queue != "" {
			if s, err := h.topo.ShardFor(r.Queue); err == nil {
				shard = s.ID
			}
		}
		h.ops = append(h.ops, op{ok: r.Status == "ok", shard: shard, invoke: us(r.InvokeUS), done: us(r.CompleteUS), err: r.Error})
	case "deliver":
		shard := r.Shard
		if shard == "" && r.Queue != "" {
			if s, err := h.topo.ShardFor(r.Queue); err == nil {
				shard = s.ID
			}
		}
		t := us(r.TimeUS)
		h.ops = append(h.ops, op{deliver: true, ok: true, shard: shard, invoke: t, done: t, first: r.Count <= 1})
	case "end":
		h.ended = true
	}
}

// Window is what the probes see over a span of time.
type Window struct {
	Attempts, OK, Failed int
	FirstDeliveries      int
	LatencyP99           time.Duration
	FailedLatencyP99     time.Duration
}

// SuccessRate is OK/Attempts (NaN without attempts).
func (w Window) SuccessRate() float64 {
	if w.Attempts == 0 {
		return math.NaN()
	}
	return float64(w.OK) / float64(w.Attempts)
}

// DequeueRatio is first deliveries / acknowledged enqueues (NaN without enqueues).
func (w Window) DequeueRatio() float64 {
	if w.OK == 0 {
		return math.NaN()
	}
	return float64(w.FirstDeliveries) / float64(w.OK)
}

// Stats summarises operations completed in [from, to) on the given shards (nil: all).
func (h *History) Stats(from, to time.Time, shards map[string]bool) Window {
	h.mu.Lock()
	defer h.mu.Unlock()
	var w Window
	var okLat, failLat []time.Duration
	for _, o := range h.ops {
		if o.done.Before(from) || !o.done.Before(to) {
			continue
		}
		if shards != nil && !shards[o.shard] {
			continue
		}
		if o.deliver {
			if o.first {
				w.FirstDeliveries++
			}
			continue
		}
		w.Attempts++
		if o.ok {
			w.OK++
			okLat = append(okLat, o.latency())
		} else {
			w.Failed++
			failLat = append(failLat, o.latency())
		}
	}
	w.LatencyP99 = percentile(okLat, 0.99)
	w.FailedLatencyP99 = percentile(failLat, 0.99)
	return w
}

// ShardStats is one shard's traffic over the report window.
type ShardStats struct {
	Shard       string        `json:"shard"`
	Attacked    bool          `json:"attacked"`
	Attempts    int           `json:"attempts"`
	OK          int           `json:"acknowledged"`
	Failed      int           `json:"failed"`
	SuccessRate float64       `json:"success_rate"`
	LatencyP50  time.Duration `json:"latency_p50_ns"`
	LatencyP99  time.Duration `json:"latency_p99_ns"`
	Delivered   int           `json:"delivered"`
}

// PerShard returns each shard's stats over [from, to), enqueues by completion time.
func (h *History) PerShard(from, to time.Time, shards []string, attacked map[string]bool) []ShardStats {
	h.mu.Lock()
	defer h.mu.Unlock()
	by := map[string]*ShardStats{}
	lat := map[string][]time.Duration{}
	for _, s := range shards {
		by[s] = &ShardStats{Shard: s, Attacked: attacked[s]}
	}
	for _, o := range h.ops {
		if o.done.Before(from) || !o.done.Before(to) {
			continue
		}
		st := by[o.shard]
		if st == nil {
			continue
		}
		if o.deliver {
			st.Delivered++
			continue
		}
		st.Attempts++
		if o.ok {
			st.OK++
			lat[o.shard] = append(lat[o.shard], o.latency())
		} else {
			st.Failed++
		}
	}
	out := make([]ShardStats, 0, len(shards))
	for _, s := range shards {
		st := by[s]
		if st.Attempts > 0 {
			st.SuccessRate = float64(st.OK) / float64(st.Attempts)
		} else {
			st.SuccessRate = math.NaN()
		}
		st.LatencyP50 = percentile(lat[s], 0.5)
		st.LatencyP99 = percentile(lat[s], 0.99)
		out = append(out, *st)
	}
	return out
}

// WriteEvents are the write outage's marks on the given shards after t0.
type WriteEvents struct {
	// FirstFailure is the completion of the first failed enqueue invoked at or after t0.
	FirstFailure time.Time
	FirstError   string
	// Resumed is the completion of the first acknowledged enqueue invoked at or after
	// the later of t0 and FirstFailure's invocation.
	Resumed time.Time
}

// Writes finds the first failed write after t0 and when writes resumed.
func (h *History) Writes(t0 time.Time, shards map[string]bool) WriteEvents {
	h.mu.Lock()
	defer h.mu.Unlock()
	var we WriteEvents
	enq := make([]op, 0, len(h.ops))
	for _, o := range h.ops {
		if !o.deliver && !o.invoke.Before(t0) && (shards == nil || shards[o.shard]) {
			enq = append(enq, o)
		}
	}
	sort.Slice(enq, func(i, j int) bool { return enq[i].done.Before(enq[j].done) })
	from := t0
	for _, o := range enq {
		if !o.ok {
			we.FirstFailure, we.FirstError = o.done, o.err
			from = o.invoke
			break
		}
	}
	for _, o := range enq {
		if o.ok && !o.invoke.Before(from) {
			we.Resumed = o.done
			break
		}
	}
	return we
}

// Ended reports whether the history's end record was read.
func (h *History) Ended() bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.ended
}

// Len is how many operations were read.
func (h *History) Len() int {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.ops)
}

func percentile(d []time.Duration, q float64) time.Duration {
	if len(d) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), d...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	i := int(math.Ceil(q*float64(len(s)))) - 1
	if i < 0 {
		i = 0
	}
	return s[i]
}
