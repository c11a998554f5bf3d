package runner

import (
	"context"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/stream"
)

// watcher follows the heartbeats, alerts, failovers and chaos topics with private
// consumer groups that start at the latest message, and keeps what it saw.
type watcher struct {
	mu     sync.Mutex
	events []events.Event
	open   map[string]events.AlertCode
	bad    int
}

// watchedTopics are the topics a run follows.
var watchedTopics = []string{events.TopicHeartbeats, events.TopicAlerts, events.TopicFailovers, events.TopicChaos}

func newWatcher() *watcher { return &watcher{open: map[string]events.AlertCode{}} }

// run consumes until ctx is done. group is the run's private group prefix.
func (w *watcher) run(ctx context.Context, c stream.Consumer, group string, log zerolog.Logger) {
	var wg sync.WaitGroup
	for _, topic := range watchedTopics {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sub := stream.Subscription{Topic: topic, Group: group + "-" + topic[:2], Instance: group, Start: stream.StartLatest, Ephemeral: true}
			for ctx.Err() == nil {
				err := c.Consume(ctx, sub, func(_ context.Context, d stream.Delivery) error {
					e, err := events.Decode(d.Data)
					if err != nil {
						w.mu.Lock()
						w.bad++
						w.mu.Unlock()
						return nil // not ours to judge; the report counts it
					}
					w.observe(e)
					return nil
				})
				if ctx.Err() != nil {
					return
				}
				log.Warn().Err(err).Str("topic", topic).Msg("watch consumer stopped; resubscribing")
				select {
				case <-ctx.Done():
				case <-time.After(500 * time.Millisecond):
				}
			}
		}()
	}
	wg.Wait()
}

func (w *watcher) observe(e events.Event) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.events) < 200000 {
		w.events = append(w.events, e)
	}
	if a, ok := e.Payload.(*events.Alert); ok {
		switch e.Kind {
		case events.KindAlertOpened, events.KindAlertEscalated:
			w.open[e.Shard] = a.Code
		case events.KindAlertResolved:
			delete(w.open, e.Shard)
		}
	}
}

// openAlerts lists the shards with an alert opened (and not resolved) since the watch
// started.
func (w *watcher) openAlerts() map[string]events.AlertCode {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make(map[string]events.AlertCode, len(w.open))
	for k, v := range w.open {
		out[k] = v
	}
	return out
}

// all returns every event seen, in arrival order.
func (w *watcher) all() []events.Event {
	w.mu.Lock()
	defer w.mu.Unlock()
	return append([]events.Event(nil), w.events...)
}

// first returns the first event at or after t0 matching f.
func (w *watcher) first(t0 time.Time, f func(events.Event) bool) (events.Event, bool) {
	var best events.Event
	found := false
	for _, e := range w.all() {
		if e.Time.Before(t0) || !f(e) {
			continue
		}
		if !found || e.Time.Before(best.Time) {
			best, found = e, true
		}
	}
	return best, found
}
