package stream

import (
	"context"
	"errors"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/backoff"
)

// DefaultRetry is the backoff between redeliveries of a message whose handler failed.
var DefaultRetry = backoff.Policy{Initial: 50 * time.Millisecond, Max: 5 * time.Second}

// DeadLetter is the envelope of a message moved to the dead-letter topic.
type DeadLetter struct {
	Topic     string    `json:"topic"`
	Group     string    `json:"group"`
	Key       string    `json:"key"`
	ID        string    `json:"id"`
	Position  string    `json:"position"`
	Error     string    `json:"error"`
	Data      []byte    `json:"data"`
	Attempts  int       `json:"attempts"`
	MovedAt   time.Time `json:"moved_at"`
	Partition string    `json:"partition"`
}

// Runner applies the handler contract for backends: it calls the handler for one
// delivery until it returns nil, retrying errors with backoff (the message's partition
// waits), moving a permanently failed message to the dead-letter topic, and giving up
// only when ctx ends. Backends ack the message when Handle returns true.
type Runner struct {
	Group   string
	Retry   backoff.Policy
	Publish Publisher // for the dead-letter topic
	Log     zerolog.Logger
	// Touch is called before each retry (JetStream uses it to extend the ack deadline).
	Touch func()
}

// Handle processes d with h. It returns true when d may be acknowledged.
func (r Runner) Handle(ctx context.Context, d Delivery, h Handler) bool {
	pol := r.Retry
	if pol.Initial == 0 {
		pol = DefaultRetry
	}
	for attempt := max(d.Attempt, 1); ; attempt++ {
		if ctx.Err() != nil {
			return false
		}
		d.Attempt = attempt
		err := callHandler(ctx, d, h)
		if err == nil {
			return true
		}
		if ctx.Err() != nil {
			return false // stopping: the message stays unacknowledged and comes back
		}
		if errors.Is(err, ErrPermanent) {
			return r.deadLetter(ctx, d, err)
		}
		r.Log.Warn().Err(err).Str("topic", d.Topic).Str("key", d.Key).Str("id", d.ID).Int("attempt", attempt).
			Msg("handler failed; redelivering after backoff")
		if r.Touch != nil {
			r.Touch()
		}
		if backoff.Sleep(ctx, pol.Delay(attempt)) != nil {
			return false
		}
	}
}

// callHandler turns a handler panic into a permanent error: a message that crashes its
// handler must not crash the service, and must not be lost either.
func callHandler(ctx context.Context, d Delivery, h Handler) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = Permanent(errors.New("handler panicked: " + toString(p)))
		}
	}()
	return h(ctx, d)
}

func toString(p any) string {
	switch v := p.(type) {
	case error:
		return v.Error()
	case string:
		return v
	default:
		return "non-error panic value"
	}
}

func (r Runner) deadLetter(ctx context.Context, d Delivery, cause error) bool {
	if r.Publish == nil {
		r.Log.Error().Err(cause).Str("topic", d.Topic).Str("id", d.ID).Msg("permanent handler error and no dead-letter topic; message acknowledged and dropped")
		return true
	}
	dl := DeadLetter{Topic: d.Topic, Group: r.Group, Key: d.Key, ID: d.ID, Position: d.Position, Partition: d.Partition,
		Error: cause.Error(), Data: d.Data, Attempts: d.Attempt, MovedAt: time.Now().UTC()}
	b, err := jsonMarshal(dl)
	if err != nil {
		return false
	}
	msg := Message{Key: d.Key, ID: "dl-" + r.Group + "-" + d.ID, Data: b}
	if len(b) > MaxMessageSize {
		msg.Data = b[:0]
		dl.Data = nil
		dl.Error += " (payload too large to keep in the dead-letter topic)"
		msg.Data, _ = jsonMarshal(dl)
	}
	for attempt := 1; ; attempt++ {
		err := r.Publish.Publish(ctx, DeadLetterTopic, msg)
		if err == nil {
			r.Log.Error().Err(cause).Str("topic", d.Topic).Str("key", d.Key).Str("id", d.ID).
				Msg("message moved to the dead-letter topic")
			return true
		}
		r.Log.Warn().Err(err).Msg("dead-letter publish failed; retrying")
		if backoff.Sleep(ctx, DefaultRetry.Delay(attempt)) != nil {
			return false
		}
	}
}
