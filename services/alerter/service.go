package alerter

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/alerter/detector"
	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/stream"
)

// Options are the Service's dependencies.
type Options struct {
	Config    Config
	Consumer  stream.Consumer
	Publisher stream.Publisher
	KV        kv.Store
	Log       zerolog.Logger
	// Registry receives the metrics and serves /metrics (required: never the global one).
	Registry *prometheus.Registry
	// Now is the clock of the decisions (default time.Now).
	Now func() time.Time
	// NewID makes incident ids (default events.NewID).
	NewID func() string
	// StartOldest makes a new consumer group begin at the oldest retained heartbeat
	// (tests). By default a new group begins with the heartbeats published after it was
	// created: a new alerter does not decide on history.
	StartOldest bool
	// ManualTick: Run starts no ticker; the caller calls Tick (tests with a fake clock).
	ManualTick bool
}

// Service is one alerter instance.
type Service struct {
	cfg      Config
	consumer stream.Consumer
	pub      stream.Publisher
	kv       kv.Store
	log      zerolog.Logger
	reg      *prometheus.Registry
	m        *metrics
	now      func() time.Time
	newID    func() string
	instance string
	src      events.Source
	start    stream.Start
	manual   bool

	mu     sync.Mutex
	shards map[string]*entry

	ready   atomic.Bool
	running atomic.Bool
	// parts holds, per stream partition, the delay (stream acceptance to handled) of its
	// last handled heartbeat: *atomic.Int64 by partition name.
	parts sync.Map
	// stalled: most shards went silent at once; see Tick.
	stalled atomic.Bool
}

// entry is one shard's state machine and its kv bookkeeping, guarded by mu.
type entry struct {
	mu      sync.Mutex
	id      string
	m       *detector.Shard
	loaded  bool // the incident record was read
	claimed bool // this instance claimed the shard
	rev     uint64
	pending []json.RawMessage
	dirty   bool // a decision was rolled back: evaluate again at the next chance
	stale   bool // the record still lists alerts already published (see flush)
	// gone: dropped from the map (another instance has the shard); a holder of a
	// stale pointer must look the shard up again.
	gone bool
	// heard is when (Service.now, unix ns) the shard's last heartbeat was handled.
	heard atomic.Int64
	// part is the delay of the shard's stream partition (see Service.parts).
	part  atomic.Pointer[atomic.Int64]
	state events.State // as counted in the shards gauge ("" before the first count)
	// publishedAt is when flush last published an alert (wall clock, for the latency).
	publishedAt time.Time
	flapping    bool
}

// New builds an alerter from its dependencies.
func New(o Options) (*Service, error) {
	var errs []error
	if o.Consumer == nil || o.Publisher == nil || o.KV == nil {
		errs = append(errs, errors.New("a stream consumer, a publisher and a kv store are required"))
	}
	if o.Registry == nil {
		errs = append(errs, errors.New("a Prometheus registry is required"))
	}
	if err := o.Config.Validate(); err != nil {
		errs = append(errs, err)
	}
	if err := errors.Join(errs...); err != nil {
		return nil, fmt.Errorf("not starting the alerter: %w", err)
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.NewID == nil {
		o.NewID = events.NewID
	}
	inst := o.Config.InstanceName()
	start := stream.StartLatest
	if o.StartOldest {
		start = stream.StartOldest
	}
	return &Service{cfg: o.Config, consumer: o.Consumer, pub: o.Publisher, kv: o.KV,
		log: o.Log, reg: o.Registry, m: newMetrics(o.Registry), now: o.Now, newID: o.NewID,
		instance: inst, src: events.Source{Service: "alerter", Instance: inst}, start: start, manual: o.ManualTick, shards: map[string]*entry{}}, nil
}

// Instance is this instance's name.
func (s *Service) Instance() string { return s.instance }

// Run loads the open incidents, then consumes heartbeats and ticks until ctx is done.
func (s *Service) Run(ctx context.Context) error {
	pol := backoff.Policy{Initial: 200 * time.Millisecond, Max: 10 * time.Second}
	for attempt := 1; ; attempt++ {
		err := s.preload(ctx)
		if err == nil {
			break
		}
		if ctx.Err() != nil {
			return nil
		}
		s.log.Warn().Err(err).Int("attempt", attempt).Msg("loading open incidents failed; retrying")
		if backoff.Sleep(ctx, pol.Delay(attempt)) != nil {
			return nil
		}
	}
	var wg sync.WaitGroup
	tickCtx, stopTick := context.WithCancel(ctx)
	wg.Add(1)
	go func() {
		defer wg.Done()
		if s.manual {
			return
		}
		t := time.NewTicker(s.cfg.Tick)
		defer t.Stop()
		for {
			select {
			case <-tickCtx.Done():
				return
			case <-t.C:
				s.Tick(tickCtx)
			}
		}
	}()
	s.running.Store(true)
	s.ready.Store(true)
	s.log.Info().Str("group", s.cfg.Group).Msg("alerter consuming heartbeats")
	err := s.consumer.Consume(ctx, stream.Subscription{Topic: events.TopicHeartbeats, Group: s.cfg.Group,
		Instance: s.instance, Start: s.start}, s.Handle)
	s.ready.Store(false)
	s.running.Store(false)
	stopTick()
	wg.Wait()
	s.clearAll()
	if err != nil {
		return fmt.Errorf("alerter stopped consuming heartbeats: %w", err)
	}
	return nil
}

// clearAll clears the published alerts from every record on the way out.
func (s *Service) clearAll() {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	s.mu.Lock()
	all := make([]*entry, 0, len(s.shards))
	for _, e := range s.shards {
		all = append(all, e)
	}
	s.mu.Unlock()
	for _, e := range all {
		e.mu.Lock()
		if !e.gone {
			if err := s.clear(ctx, e); err != nil {
				s.log.Warn().Err(err).Msg("published alerts left in the record; the next start publishes them again with the same ids")
			}
		}
		e.mu.Unlock()
	}
}

// preload reads every incident record: open incidents are known before the first
// heartbeat, and alerts decided but not published before a crash are published now.
func (s *Service) preload(ctx context.Context) error {
	entries, err := s.kv.List(ctx, incidentPrefix)
	if err != nil {
		s.m.kvErrors.WithLabelValues("list").Inc()
		return fmt.Errorf("listing incident records: %w", err)
	}
	open := 0
	for _, kvE := range entries {
		r, err := decodeRecord(kvE.Value)
		if err != nil || !events.ValidShardID(r.Shard) || incidentKey(r.Shard) != kvE.Key {
			s.log.Error().Err(err).Str("key", kvE.Key).Msg("ignoring an unreadable incident record; it is overwritten at the shard's next decision")
			continue
		}
		e := s.lookup(r.Shard)
		e.mu.Lock()
		if !e.loaded {
			e.m.Restore(r.Persisted)
			e.rev, e.pending, e.loaded = kvE.Revision, r.Pending, true
		}
		if r.Incident != nil {
			open++
		}
		if err := s.flush(ctx, e); err != nil {
			s.log.Warn().Err(err).Str(logging.FieldShard, r.Shard).Msg("alert pending from a previous run not published yet; retrying on the next tick")
		}
		s.count(e)
		e.mu.Unlock()
	}
	s.log.Info().Int("records", len(entries)).Int("open", open).Msg("incident records loaded")
	return nil
}

// lookup returns the shard's entry, creating it.
func (s *Service) lookup(shard string) *entry {
	s.mu.Lock()
	defer s.mu.Unlock()
	e := s.shards[shard]
	if e == nil {
		e = &entry{id: shard, m: detector.NewShard(shard, s.cfg.Detector, s.newID)}
		s.shards[shard] = e
	}
	return e
}

// lock returns the shard's entry locked, loaded and claimed by this instance.
func (s *Service) lock(ctx context.Context, shard string) (*entry, error) {
	for {
		e := s.lookup(shard)
		e.mu.Lock()
		if e.gone {
			e.mu.Unlock()
			continue
		}
		if !e.loaded {
			r, rev, err := s.getRecord(ctx, shard)
			if err != nil {
				e.mu.Unlock()
				return nil, err
			}
			e.m.Restore(r.Persisted)
			e.rev, e.pending, e.loaded = rev, r.Pending, true
		}
		if !e.claimed {
			if err := s.claim(ctx, shard); err != nil {
				e.mu.Unlock()
				return nil, err
			}
			e.claimed = true
		}
		return e, nil
	}
}

// Handle is the heartbeat handler (stream.Handler). A message that is not a valid
// heartbeat is rejected permanently (the stream dead-letters it); kv and stream errors
// are returned for redelivery.
func (s *Service) Handle(ctx context.Context, d stream.Delivery) error {
	ev, err := events.Decode(d.Data)
	if err != nil {
		s.m.heartbeats.WithLabelValues("malformed").Inc()
		return stream.Permanent(fmt.Errorf("rejecting message %q (key %q, position %s): %w", d.ID, d.Key, d.Position, err))
	}
	hb, err := detector.FromEvent(ev, d.Published)
	if err != nil {
		s.m.heartbeats.WithLabelValues("rejected").Inc()
		return stream.Permanent(fmt.Errorf("rejecting event %s of kind %s on the heartbeats topic: %w", ev.ID, ev.Kind, ErrNotHeartbeat))
	}
	if d.Key != ev.Shard {
		s.m.heartbeats.WithLabelValues("rejected").Inc()
		return stream.Permanent(fmt.Errorf("rejecting heartbeat %s: key %q, shard %q: %w", ev.ID, d.Key, ev.Shard, ErrKeyMismatch))
	}
	e, err := s.lock(ctx, ev.Shard)
	if err != nil {
		return fmt.Errorf("not handling heartbeat %s: %w", ev.ID, err)
	}
	defer e.mu.Unlock()
	if err := s.flush(ctx, e); err != nil {
		return fmt.Errorf("not handling heartbeat %s: %w", ev.ID, err)
	}
	now := s.now()
	before := e.m.Persisted()
	res, ds := e.m.Observe(now, hb)
	if res != detector.Accepted && e.dirty {
		ds = e.m.Evaluate(now)
	}
	e.dirty = false
	if err := s.commit(ctx, e, before, ds, now); err != nil {
		return fmt.Errorf("heartbeat %s: %w", ev.ID, err)
	}
	s.m.heartbeats.WithLabelValues(res.String()).Inc()
	s.count(e)
	e.heard.Store(now.UnixNano())
	if !d.Published.IsZero() {
		age := time.Since(d.Published)
		s.m.delay.Observe(age.Seconds())
		p, ok := s.parts.Load(d.Partition)
		if !ok {
			p, _ = s.parts.LoadOrStore(d.Partition, new(atomic.Int64))
		}
		pd := p.(*atomic.Int64)
		pd.Store(int64(age))
		if e.part.Load() != pd {
			e.part.Store(pd)
		}
	}
	return nil
}

// Silence is measured on the alerter's clock, so it is only evidence while this
// instance keeps up with the stream. A shard's timer decisions are suspended while the
// last heartbeat handled on its partition was older than half of agent-lost-after (the
// consumer is behind there), or while at least massSilenceShards shards, and at least
// massSilencePercent of the tracked ones, of its partition went silent together; and
// every shard's are suspended while that holds over all shards: the stream, or this
// consumer, stalled (a whole shard's agents die one host at a time, not by the thousand
// within seconds).
const (
	massSilenceShards  = 10
	massSilencePercent = 10
)

// Tick evaluates every shard on the clock. Run calls it every Config.Tick; tests call
// it directly.
func (s *Service) Tick(ctx context.Context) {
	s.mu.Lock()
	all := make([]*entry, 0, len(s.shards))
	for _, e := range s.shards {
		all = append(all, e)
	}
	s.mu.Unlock()
	now := s.now()
	lost := s.cfg.Detector.AgentLostAfter
	// Count silent shards over all, and per stream partition: a partition whose
	// consumer stalls silences its shards alone.
	type count struct{ tracked, silent int }
	var total count
	perPart := map[*atomic.Int64]*count{}
	for _, e := range all {
		h := e.heard.Load()
		if h == 0 {
			continue
		}
		p := e.part.Load()
		c := perPart[p]
		if c == nil {
			c = &count{}
			perPart[p] = c
		}
		total.tracked++
		c.tracked++
		if now.Sub(time.Unix(0, h)) >= lost {
			total.silent++
			c.silent++
		}
	}
	massSilent := func(c count) bool {
		return c.silent >= massSilenceShards && 100*c.silent >= massSilencePercent*c.tracked
	}
	maxLag := time.Duration(0)
	s.parts.Range(func(_, v any) bool {
		maxLag = max(maxLag, time.Duration(v.(*atomic.Int64).Load()))
		return true
	})
	s.m.lag.Set(maxLag.Seconds())
	stalled := massSilent(total)
	if stalled != s.stalled.Swap(stalled) {
		s.m.stalled.Set(map[bool]float64{true: 1}[stalled])
		if stalled {
			s.log.Error().Int("silent_shards", total.silent).Int("tracked_shards", total.tracked).Dur("silent_for", lost).
				Msg("no heartbeats from many shards at once: the stream or this alerter's consumer is stalled; not calling their agents lost")
		} else {
			s.log.Info().Int("silent_shards", total.silent).Int("tracked_shards", total.tracked).Msg("heartbeats flow again")
		}
	}
	for _, e := range all {
		if ctx.Err() != nil {
			return
		}
		// A shard's silence means nothing while its partition's consumer is behind or
		// stalled.
		blind := stalled
		if p := e.part.Load(); p != nil {
			blind = blind || time.Duration(p.Load()) > lost/2 || massSilent(*perPart[p])
		}
		s.tickOne(ctx, e, blind)
	}
}

// tickOne evaluates one shard on the clock; with blind set (silence is no evidence now)
// it only retries pending publications.
func (s *Service) tickOne(ctx context.Context, e *entry, blind bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.gone || !e.loaded {
		return
	}
	log := func() *zerolog.Logger { l := logging.Shard(s.log, e.id); return &l }
	if err := s.flush(ctx, e); err != nil {
		log().Warn().Err(err).Msg("alert still not published; retrying on the next tick")
		return
	}
	if err := s.clear(ctx, e); err != nil {
		log().Warn().Err(err).Msg("retrying on the next tick")
	}
	if blind {
		return
	}
	now := s.now()
	before := e.m.Persisted()
	ds := e.m.Tick(now)
	if e.dirty && len(ds) == 0 {
		ds = e.m.Evaluate(now)
	}
	if len(ds) == 0 {
		s.count(e)
		return
	}
	mine, err := s.owns(ctx, e.id, e.m.LastArrival())
	if err != nil {
		e.m.Restore(before)
		log().Warn().Err(err).Msg("timer decision postponed: cannot read the shard's owner")
		return
	}
	if !mine {
		e.m.Restore(before)
		s.drop(e)
		log().Debug().Msg("shard handed over to another instance; dropped from memory")
		return
	}
	e.dirty = false
	if err := s.commit(ctx, e, before, ds, now); err != nil {
		log().Warn().Err(err).Msg("timer decision postponed")
	}
	s.count(e)
}

// drop forgets a shard another instance took over. Called with e.mu held.
func (s *Service) drop(e *entry) {
	s.mu.Lock()
	if s.shards[e.id] == e {
		delete(s.shards, e.id)
	}
	s.mu.Unlock()
	e.gone = true
	if e.state != "" {
		s.m.shards.WithLabelValues(string(e.state)).Dec()
	}
	if e.flapping {
		s.m.flapping.Dec()
	}
	s.m.droppedShard.Inc()
}

// count keeps the state gauges in step with the shard's state. Called with e.mu held.
func (s *Service) count(e *entry) {
	if e.m.Agents() == 0 && e.state == "" {
		return // known from the store only; counted once heartbeats arrive
	}
	if st := e.m.State(); st != e.state {
		if e.state != "" {
			s.m.shards.WithLabelValues(string(e.state)).Dec()
		}
		s.m.shards.WithLabelValues(string(st)).Inc()
		e.state = st
	}
	if f := e.m.Flapping(); f != e.flapping {
		if f {
			s.m.flapping.Inc()
		} else {
			s.m.flapping.Dec()
		}
		e.flapping = f
	}
}

// maxAttempts bounds the reload-and-decide-again loop of one decision.
const maxAttempts = 5

// commit persists the decisions with the shard's new state (compare-and-set), then
// publishes them. Losing the compare-and-set means another instance or incarnation
// changed the incident: its record is loaded and the decision taken again on it.
// Called with e.mu held.
func (s *Service) commit(ctx context.Context, e *entry, before detector.Persisted, ds []detector.Decision, now time.Time) error {
	for attempt := 1; len(ds) > 0; attempt++ {
		pending := make([]json.RawMessage, 0, len(ds))
		for _, d := range ds {
			b, err := events.Encode(d.Event(s.src, now))
			if err != nil {
				e.m.Restore(before)
				return fmt.Errorf("not publishing %s for shard %s: %w", d.Kind, e.id, err)
			}
			pending = append(pending, b)
		}
		// Alerts still unpublished stay in the record (flush ran first, so normally none).
		pending = append(slices.Clone(e.pending), pending...)
		rev, err := s.putRecord(ctx, record{Shard: e.id, Persisted: e.m.Persisted(), Pending: pending}, e.rev)
		if errors.Is(err, kv.ErrConflict) || errors.Is(err, kv.ErrExists) {
			s.m.conflicts.Inc()
			if attempt >= maxAttempts {
				e.m.Restore(before)
				e.dirty = true
				return fmt.Errorf("not publishing %d alert(s) for shard %s: %w", len(ds), e.id, ErrContention)
			}
			r, rev, err := s.getRecord(ctx, e.id)
			if err != nil {
				e.m.Restore(before)
				e.dirty = true
				return fmt.Errorf("not publishing %d alert(s) for shard %s: %w", len(ds), e.id, err)
			}
			e.m.Restore(r.Persisted)
			e.rev, e.pending, e.stale = rev, r.Pending, false
			if err := s.flush(ctx, e); err != nil {
				e.dirty = true
				return err
			}
			before = e.m.Persisted()
			ds = e.m.Evaluate(now)
			continue
		}
		if err != nil {
			e.m.Restore(before)
			e.dirty = true
			return fmt.Errorf("not publishing %d alert(s) for shard %s: %w", len(ds), e.id, err)
		}
		e.rev, e.pending, e.stale = rev, pending, false
		if err := s.flush(ctx, e); err != nil {
			return err
		}
		for _, d := range ds {
			// Decision latency: from the stream's acceptance of the heartbeat that
			// completed the decision to the alert's publication. Timer decisions
			// (AGENT_LOST, the end of flapping) have no such heartbeat.
			if !d.ByTimer && !d.Alert.LastHeartbeatAt.IsZero() {
				s.m.latency.Observe(e.publishedAt.Sub(d.Alert.LastHeartbeatAt).Seconds())
			}
		}
		return nil
	}
	return nil
}

// flush publishes the shard's pending alerts. Their record keeps listing them until the
// next write of the record or the next tick clears them (clear): the decisions behind
// them on the same partition do not wait for that write. A crash in between publishes
// them again at start, with the same ids, which the stream drops as duplicates.
// Called with e.mu held.
func (s *Service) flush(ctx context.Context, e *entry) error {
	for len(e.pending) > 0 {
		b := e.pending[0]
		ev, err := events.Decode(b)
		if err == nil {
			if err := s.pub.Publish(ctx, events.TopicAlerts, stream.Message{Key: e.id, ID: ev.ID, Data: b}); err != nil {
				s.m.publishErrs.Inc()
				return fmt.Errorf("alert %s for shard %s is recorded but not published yet: %w", ev.ID, e.id, err)
			}
			e.publishedAt = time.Now()
			s.published(ev)
		} else {
			// Written by an incompatible build: it cannot be published as it is.
			s.log.Error().Err(err).Str(logging.FieldShard, e.id).Msg("dropping an unreadable pending alert from the incident record")
		}
		e.pending = e.pending[1:]
		e.stale = true
	}
	return nil
}

// clear rewrites the shard's record without the alerts flush published. Called with
// e.mu held.
func (s *Service) clear(ctx context.Context, e *entry) error {
	if !e.stale || len(e.pending) > 0 {
		return nil
	}
	rev, err := s.putRecord(ctx, record{Shard: e.id, Persisted: e.m.Persisted()}, e.rev)
	switch {
	case err == nil:
		e.rev, e.stale = rev, false
	case errors.Is(err, kv.ErrConflict) || errors.Is(err, kv.ErrExists):
		// Someone else wrote the record since: take theirs (and publish what it holds).
		s.m.conflicts.Inc()
		r, rev, gerr := s.getRecord(ctx, e.id)
		if gerr != nil {
			return gerr
		}
		e.m.Restore(r.Persisted)
		e.rev, e.pending, e.stale = rev, r.Pending, false
		e.dirty = true
	default:
		return fmt.Errorf("alerts of shard %s published but not cleared from the incident record yet: %w", e.id, err)
	}
	return nil
}

// published accounts for and logs one published alert.
func (s *Service) published(ev events.Event) {
	a, _ := ev.Payload.(*events.Alert)
	if a == nil {
		return
	}
	s.m.alerts.WithLabelValues(string(ev.Kind), string(a.Code)).Inc()
	log := logging.Incident(s.log, ev.Shard, ev.CorrelationID, ev.Epoch)
	lvl := zerolog.InfoLevel
	if a.Severity == events.SeverityCritical && ev.Kind != events.KindAlertResolved {
		lvl = zerolog.WarnLevel
	}
	log.WithLevel(lvl).Str("alert", string(ev.Kind)).Str("incident_id", a.IncidentID).Str("code", string(a.Code)).
		Str("severity", string(a.Severity)).Str("state", string(a.State)).Bool("flapping", a.Flapping).
		Str("primary", a.Primary).Int("agents_down", a.AgentsDown).Int("agents_reporting", a.AgentsReporting).
		Str("event_id", ev.ID).Msg(a.Reason)
}

// ShardState returns the state of a shard this instance tracks.
func (s *Service) ShardState(shard string) (events.State, bool) {
	s.mu.Lock()
	e := s.shards[shard]
	s.mu.Unlock()
	if e == nil {
		return "", false
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.m.State(), true
}

// Handler serves /healthz (the process is alive), /readyz (incidents loaded and
// consuming) and /metrics.
func (s *Service) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		_, _ = w.Write([]byte("ok\n"))
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, _ *http.Request) {
		if !s.ready.Load() {
			http.Error(w, "not ready: loading incidents or not consuming heartbeats", http.StatusServiceUnavailable)
			return
		}
		if s.stalled.Load() {
			http.Error(w, "not ready: no heartbeats from most shards at once (stream or consumer stalled)", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("ready\n"))
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{Registry: s.reg}))
	return mux
}
