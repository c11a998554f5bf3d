// Package loadgen drives a bounded Ratequeue workload and records its history: a
// producing phase (enqueues at a fixed total rate over a fixed duration, spread over a
// fixed set of queues, each with an idempotency key and retried with it when the
// outcome is unknown), consumers that dequeue shard by shard and ack, then a drain in
// which consumers go on until every queue is empty and nothing is in flight (bounded
// by a drain timeout). Every enqueue attempt, delivery and ack goes into the history
// file (package history) for `ratequeue check`.
//
// It talks to Ratequeue through a Driver: HTTP service instances (client-side
// round-robin with failover between instances) or the Go client directly.
package loadgen

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/ratequeue/history"
)

// Outcome of an enqueue attempt.
type Outcome struct {
	Status    string // history.StatusOK, StatusFailed or StatusUnknown
	ID        string // the stored id (ok)
	Shard     string
	Node      string
	Epoch     uint64
	Duplicate bool
	ServerUS  int64
	Err       error
}

// Delivery is a dequeued message.
type Delivery struct {
	ID, Queue, Shard, Node string
	Body                   []byte
	Epoch                  uint64
	Count                  int64
	ServerUS               int64
	IntervalUS             int64
}

// Driver is how the load generator reaches Ratequeue.
type Driver interface {
	Mode() string
	Enqueue(ctx context.Context, queue, id, idem string, body []byte) Outcome
	// Dequeue returns a delivery, or nil and how long until something may be ready.
	Dequeue(ctx context.Context, shard string, visibility time.Duration) (*Delivery, time.Duration, error)
	// Ack returns history.StatusOK, StatusNotInFlight, StatusFailed or StatusUnknown.
	Ack(ctx context.Context, queue, id string) (string, error)
	Shards(ctx context.Context) ([]string, error)
	// Pending returns the number of non-empty queues plus in-flight messages over
	// every shard; an error when any shard could not be read.
	Pending(ctx context.Context) (int64, error)
}

// Config is a workload.
type Config struct {
	Run          string        // run id (default: a timestamp)
	Queues       int           // number of queues (default 100)
	QueuePrefix  string        // default "lg-<run>-"
	EnqueueRate  float64       // total enqueues per second (default 200)
	Duration     time.Duration // producing phase (default 10 s)
	Concurrency  int           // producers (default 8)
	Consumers    int           // consumers (default 8)
	Visibility   time.Duration // per dequeue (default 5 s)
	DrainTimeout time.Duration // default 60 s
	BodySize     int           // bytes per body (default 64)
	Retries      int           // re-attempts of an unknown-outcome enqueue (0: none; the CLI defaults to 3)
	AckDrop      float64       // fraction of deliveries deliberately not acked (default 0)
	Seed         uint64
	// StopProducing, when closed, ends the producing phase early; the drain follows as
	// usual, so every acknowledged message is still delivered and recorded. Cancelling
	// ctx instead stops everything at once (the history ends undrained).
	StopProducing <-chan struct{}
}

func (c *Config) defaults() {
	if c.Run == "" {
		c.Run = time.Now().UTC().Format("20060102T150405")
	}
	if c.Queues <= 0 {
		c.Queues = 100
	}
	if c.QueuePrefix == "" {
		c.QueuePrefix = "lg-" + c.Run + "-"
	}
	if c.EnqueueRate <= 0 {
		c.EnqueueRate = 200
	}
	if c.Duration <= 0 {
		c.Duration = 10 * time.Second
	}
	if c.Concurrency <= 0 {
		c.Concurrency = 8
	}
	if c.Consumers <= 0 {
		c.Consumers = 8
	}
	if c.Visibility <= 0 {
		c.Visibility = 5 * time.Second
	}
	if c.DrainTimeout <= 0 {
		c.DrainTimeout = 60 * time.Second
	}
	if c.BodySize <= 0 {
		c.BodySize = 64
	}
	if c.Retries < 0 {
		c.Retries = 0
	}
}

// Summary is what a run did.
type Summary struct {
	Run          string        `json:"run"`
	Mode         string        `json:"mode"`
	Attempts     int64         `json:"enqueue_attempts"`
	EnqueuedOK   int64         `json:"enqueued_ok"`
	Failed       int64         `json:"enqueue_failed"`
	Unknown      int64         `json:"enqueue_unknown"`
	Deliveries   int64         `json:"deliveries"`
	Acks         int64         `json:"acks_ok"`
	AckErrors    int64         `json:"ack_errors"`
	DequeueErrs  int64         `json:"dequeue_errors"`
	Produced     time.Duration `json:"produce_duration_ns"`
	Drained      bool          `json:"drained"`
	DrainTime    time.Duration `json:"drain_duration_ns"`
	EnqueueRate  float64       `json:"enqueue_ok_per_s"`
	DeliveryRate float64       `json:"deliveries_per_s"`
}

// String is a one-screen summary.
func (s Summary) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "run %s (%s)\n", s.Run, s.Mode)
	fmt.Fprintf(&b, "enqueue attempts %d: ok %d, failed %d, unknown %d (%.0f ok/s over %s)\n", s.Attempts, s.EnqueuedOK, s.Failed, s.Unknown, s.EnqueueRate, s.Produced.Round(time.Millisecond))
	fmt.Fprintf(&b, "deliveries %d (%.0f/s), acks ok %d, ack errors %d, dequeue errors %d\n", s.Deliveries, s.DeliveryRate, s.Acks, s.AckErrors, s.DequeueErrs)
	fmt.Fprintf(&b, "drained %v after %s\n", s.Drained, s.DrainTime.Round(time.Millisecond))
	return b.String()
}

// Body returns the body the generator sends for a message id; a delivery whose body
// differs is recorded with body_ok=false.
func Body(id string, size int) []byte {
	b := make([]byte, 0, max(size, len(id)+1))
	b = append(b, id...)
	b = append(b, '|')
	for len(b) < size {
		b = append(b, 'x')
	}
	return b
}

func nowUS() int64 { return time.Now().UnixMicro() }

// Run executes the workload, writing the history to w. It returns when the drain
// finished or timed out, or ctx ended.
func Run(ctx context.Context, cfg Config, d Driver, w *history.Writer, log zerolog.Logger) (Summary, error) {
	cfg.defaults()
	sum := Summary{Run: cfg.Run, Mode: d.Mode()}
	if err := w.Write(history.Event{Type: history.TypeHeader, Version: history.Version, Run: cfg.Run, Mode: d.Mode(), TimeUS: nowUS(),
		Note: fmt.Sprintf("queues=%d enqueue_rate=%g duration=%s producers=%d consumers=%d visibility=%s ack_drop=%g",
			cfg.Queues, cfg.EnqueueRate, cfg.Duration, cfg.Concurrency, cfg.Consumers, cfg.Visibility, cfg.AckDrop)}); err != nil {
		return sum, fmt.Errorf("writing the history: %w", err)
	}
	sctx, scancel := context.WithTimeout(ctx, 30*time.Second)
	shards, err := shardsRetry(sctx, d)
	scancel()
	if err != nil {
		return sum, fmt.Errorf("not running the load: listing shards: %w", err)
	}
	var (
		attempts, ok, failed, unknown, deliveries, acks, ackErrs, deqErrs atomic.Int64
		seq                                                               atomic.Int64
	)
	var writeErr atomic.Pointer[error]
	record := func(e history.Event) {
		if err := w.Write(e); err != nil {
			writeErr.CompareAndSwap(nil, &err)
		}
	}

	// Producers.
	start := time.Now()
	jobs := make(chan int64, cfg.Concurrency)
	var pwg sync.WaitGroup
	for p := 0; p < cfg.Concurrency; p++ {
		pwg.Add(1)
		go func() {
			defer pwg.Done()
			name := fmt.Sprintf("p%d", p)
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(p)+1))
			for n := range jobs {
				q := fmt.Sprintf("%s%d", cfg.QueuePrefix, rng.IntN(cfg.Queues))
				id := fmt.Sprintf("%s-%d", cfg.Run, n)
				body := Body(id, cfg.BodySize)
				for a := 1; a <= 1+cfg.Retries; a++ {
					inv := nowUS()
					out := d.Enqueue(ctx, q, id, id, body)
					e := history.Event{Type: history.TypeEnqueue, Status: out.Status, Queue: q, ID: id, Idem: id, Attempt: a,
						Client: name, InvokeUS: inv, CompleteUS: max(nowUS(), inv)}
					attempts.Add(1)
					switch out.Status {
					case history.StatusOK:
						ok.Add(1)
						e.Shard, e.Node, e.Epoch, e.Duplicate, e.ServerUS = out.Shard, out.Node, out.Epoch, out.Duplicate, out.ServerUS
						if out.ID != "" && out.ID != id {
							e.Error = "stored under id " + out.ID
						}
					case history.StatusFailed:
						failed.Add(1)
					default:
						unknown.Add(1)
					}
					if out.Err != nil {
						e.Error = out.Err.Error()
					}
					record(e)
					if out.Status != history.StatusUnknown || ctx.Err() != nil {
						break
					}
					select {
					case <-ctx.Done():
					case <-time.After(time.Duration(a) * 50 * time.Millisecond):
					}
				}
			}
		}()
	}
	go func() {
		defer close(jobs)
		interval := time.Duration(float64(time.Second) / cfg.EnqueueRate)
		end := start.Add(cfg.Duration)
		next := start
		for {
			now := time.Now()
			if now.After(end) {
				return
			}
			for !next.After(now) {
				select {
				case jobs <- seq.Add(1) - 1:
				case <-ctx.Done():
					return
				case <-cfg.StopProducing:
					return
				}
				next = next.Add(interval)
				if time.Now().After(end) {
					return
				}
			}
			select {
			case <-ctx.Done():
				return
			case <-cfg.StopProducing:
				return
			case <-time.After(time.Until(next)):
			}
		}
	}()
	producing := make(chan struct{})
	go func() {
		pwg.Wait()
		close(producing)
	}()

	// Consumers.
	stop := make(chan struct{})
	var cwg sync.WaitGroup
	for c := 0; c < cfg.Consumers; c++ {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			name := fmt.Sprintf("c%d", c)
			rng := rand.New(rand.NewPCG(cfg.Seed, uint64(1000+c)))
			i := c
			idle := 0
			var nextIn time.Duration
			for {
				select {
				case <-stop:
					return
				case <-ctx.Done():
					return
				default:
				}
				shard := shards[i%len(shards)]
				del, hint, err := d.Dequeue(ctx, shard, cfg.Visibility)
				if err != nil {
					deqErrs.Add(1)
					log.Debug().Err(err).Str("shard", shard).Msg("dequeue failed")
					i++
					sleep(ctx, stop, 20*time.Millisecond)
					continue
				}
				if del == nil {
					if hint > 0 && (nextIn == 0 || hint < nextIn) {
						nextIn = hint
					}
					i++
					idle++
					if idle >= len(shards) {
						sleep(ctx, stop, min(max(nextIn, time.Millisecond), 20*time.Millisecond))
						idle, nextIn = 0, 0
					}
					continue
				}
				idle, nextIn = 0, 0
				deliveries.Add(1)
				bodyOK := string(del.Body) == string(Body(del.ID, cfg.BodySize))
				record(history.Event{Type: history.TypeDeliver, Queue: del.Queue, ID: del.ID, ServerUS: del.ServerUS, Count: del.Count,
					IntervalUS: del.IntervalUS, Shard: del.Shard, Node: del.Node, Epoch: del.Epoch, Client: name, TimeUS: nowUS(), BodyOK: &bodyOK})
				if cfg.AckDrop > 0 && rng.Float64() < cfg.AckDrop {
					continue // a consumer that "crashed": the message comes back after its visibility timeout
				}
				st, err := d.Ack(ctx, del.Queue, del.ID)
				e := history.Event{Type: history.TypeAck, Queue: del.Queue, ID: del.ID, Client: name, Status: st, TimeUS: nowUS()}
				if err != nil {
					e.Error = err.Error()
				}
				if st == history.StatusOK {
					acks.Add(1)
				} else {
					ackErrs.Add(1)
				}
				record(e)
			}
		}()
	}

	// Produce, then drain.
	select {
	case <-producing:
	case <-ctx.Done():
	}
	sum.Produced = time.Since(start)
	log.Info().Int64("enqueued_ok", ok.Load()).Dur("took", sum.Produced).Msg("producing done; draining")
	drainStart := time.Now()
	deadline := time.NewTimer(cfg.DrainTimeout)
	defer deadline.Stop()
	zeros := 0
	for !sum.Drained && ctx.Err() == nil {
		select {
		case <-ctx.Done():
		case <-deadline.C:
			log.Warn().Dur("drain_timeout", cfg.DrainTimeout).Msg("drain timed out; the history ends undrained")
			goto done
		case <-time.After(100 * time.Millisecond):
		}
		pctx, pcancel := context.WithTimeout(ctx, 5*time.Second)
		n, err := d.Pending(pctx)
		pcancel()
		if err != nil {
			log.Debug().Err(err).Msg("drain check failed")
			zeros = 0
			continue
		}
		if n == 0 {
			zeros++
		} else {
			zeros = 0
		}
		sum.Drained = zeros >= 2
	}
done:
	close(stop)
	cwg.Wait()
	sum.DrainTime = time.Since(drainStart)
	record(history.Event{Type: history.TypeEnd, Drained: sum.Drained, TimeUS: nowUS()})
	sum.Attempts, sum.EnqueuedOK, sum.Failed, sum.Unknown = attempts.Load(), ok.Load(), failed.Load(), unknown.Load()
	sum.Deliveries, sum.Acks, sum.AckErrors, sum.DequeueErrs = deliveries.Load(), acks.Load(), ackErrs.Load(), deqErrs.Load()
	if s := sum.Produced.Seconds(); s > 0 {
		sum.EnqueueRate = float64(sum.EnqueuedOK) / s
	}
	if s := (sum.Produced + sum.DrainTime).Seconds(); s > 0 {
		sum.DeliveryRate = float64(sum.Deliveries) / s
	}
	if err := w.Flush(); err != nil {
		return sum, fmt.Errorf("writing the history: %w", err)
	}
	if p := writeErr.Load(); p != nil {
		return sum, fmt.Errorf("writing the history: %w", *p)
	}
	if ctx.Err() != nil {
		return sum, fmt.Errorf("load interrupted: %w", ctx.Err())
	}
	return sum, nil
}

func sleep(ctx context.Context, stop <-chan struct{}, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-stop:
	case <-t.C:
	}
}

func shardsRetry(ctx context.Context, d Driver) ([]string, error) {
	for {
		s, err := d.Shards(ctx)
		if err == nil && len(s) > 0 {
			return s, nil
		}
		if err == nil {
			err = errors.New("no shards")
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-time.After(200 * time.Millisecond):
		}
	}
}
