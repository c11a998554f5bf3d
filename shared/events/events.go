package events

import (
	"time"

	"github.com/google/uuid"
)

// Schema version written by this build.
const (
	SchemaMajor = 1
	SchemaMinor = 0
)

// SchemaVersion is the "major.minor" string written into every event.
const SchemaVersion = "1.0"

// MaxEncodedSize bounds an encoded event. It keeps every event well inside the limits of
// every backend (a Kinesis record may be 1 MiB, a NATS message 1 MiB by default).
const MaxEncodedSize = 256 << 10

// Kind names what an event reports.
type Kind string

// Every kind of event. The payload type of each kind is given in payloadTypes.
const (
	KindHeartbeat          Kind = "heartbeat"
	KindAlertOpened        Kind = "alert.opened"
	KindAlertEscalated     Kind = "alert.escalated"
	KindAlertResolved      Kind = "alert.resolved"
	KindFailoverDecision   Kind = "failover.decision"
	KindFailoverStarted    Kind = "failover.started"
	KindFailoverStep       Kind = "failover.step"
	KindFailoverCompleted  Kind = "failover.completed"
	KindFailoverAborted    Kind = "failover.aborted"
	KindTopologyChanged    Kind = "topology.changed"
	KindChaosAttackStarted Kind = "chaos.attack.started"
	KindChaosAttackRecover Kind = "chaos.attack.recovered"
	KindChaosAttackHalted  Kind = "chaos.attack.halted"
	KindExperimentResult   Kind = "experiment.result"
)

// Topics: the stream topic each kind of event is published to. Consumers subscribe to a
// topic; events of one shard keep their order within a topic.
const (
	TopicHeartbeats = "heartbeats"
	TopicAlerts     = "alerts"
	TopicFailovers  = "failovers" // failover.* and topology.changed
	TopicChaos      = "chaos"     // chaos.* and experiment.result
)

// Topics lists every topic, for creating streams up front.
var Topics = []string{TopicHeartbeats, TopicAlerts, TopicFailovers, TopicChaos}

// kindInfo says what each kind requires.
type kindInfo struct {
	topic      string
	needsShard bool
	needsEpoch bool
	newPayload func() Payload
}

var kinds = map[Kind]kindInfo{
	KindHeartbeat:          {TopicHeartbeats, true, false, func() Payload { return &Heartbeat{} }},
	KindAlertOpened:        {TopicAlerts, true, false, func() Payload { return &Alert{} }},
	KindAlertEscalated:     {TopicAlerts, true, false, func() Payload { return &Alert{} }},
	KindAlertResolved:      {TopicAlerts, true, false, func() Payload { return &Alert{} }},
	KindFailoverDecision:   {TopicFailovers, true, false, func() Payload { return &Failover{} }},
	KindFailoverStarted:    {TopicFailovers, true, true, func() Payload { return &Failover{} }},
	KindFailoverStep:       {TopicFailovers, true, true, func() Payload { return &Failover{} }},
	KindFailoverCompleted:  {TopicFailovers, true, true, func() Payload { return &Failover{} }},
	KindFailoverAborted:    {TopicFailovers, true, false, func() Payload { return &Failover{} }},
	KindTopologyChanged:    {TopicFailovers, true, true, func() Payload { return &TopologyChanged{} }},
	KindChaosAttackStarted: {TopicChaos, false, false, func() Payload { return &ChaosAttack{} }},
	KindChaosAttackRecover: {TopicChaos, false, false, func() Payload { return &ChaosAttack{} }},
	KindChaosAttackHalted:  {TopicChaos, false, false, func() Payload { return &ChaosAttack{} }},
	KindExperimentResult:   {TopicChaos, false, false, func() Payload { return &ExperimentResult{} }},
}

// Known reports whether k is a kind this build understands.
func (k Kind) Known() bool { _, ok := kinds[k]; return ok }

// Topic is the stream topic events of kind k are published to ("" for an unknown kind).
func (k Kind) Topic() string { return kinds[k].topic }

// Kinds returns every known kind.
func Kinds() []Kind {
	out := make([]Kind, 0, len(kinds))
	for k := range kinds {
		out = append(out, k)
	}
	return out
}

// Source names the process that wrote an event.
type Source struct {
	Service  string `json:"service"`
	Instance string `json:"instance"`
}

// Event is the envelope every event travels in.
type Event struct {
	// ID is unique per event (a time-ordered UUIDv7); the stream de-duplicates on it.
	ID string `json:"id"`
	// Schema is the "major.minor" schema version of the writer.
	Schema string `json:"schema"`
	Kind   Kind   `json:"kind"`
	// Shard is the shard the event is about; the stream partition key. Required for
	// heartbeat, alert, failover and topology events.
	Shard  string    `json:"shard,omitempty"`
	Source Source    `json:"source"`
	Time   time.Time `json:"time"`
	// CorrelationID is the id of the heartbeat or chaos attack that started the chain
	// of events; the alerter and lazarus carry it unchanged. A heartbeat's own
	// correlation id is its id.
	CorrelationID string `json:"correlation_id"`
	// Epoch is the shard's failover epoch where it applies (required, and above zero,
	// for failover steps and topology changes).
	Epoch uint64 `json:"epoch,omitempty"`
	// Payload is one of the payload types of this package, matching Kind.
	Payload Payload `json:"payload"`
}

// Payload is implemented by every payload type.
type Payload interface {
	validate(k Kind) []*FieldError
}

// New returns an event of kind k with a fresh id, the current schema version and time.
// The correlation id defaults to the event's own id; set it to continue a chain.
func New(k Kind, src Source, shard string, p Payload) Event {
	id := NewID()
	return Event{ID: id, Schema: SchemaVersion, Kind: k, Shard: shard, Source: src,
		Time: time.Now().UTC(), CorrelationID: id, Payload: p}
}

// NewID returns a new time-ordered unique id.
func NewID() string {
	u, err := uuid.NewV7()
	if err != nil {
		return uuid.NewString()
	}
	return u.String()
}

// Continue returns a copy of e's chain identity for a follow-up event: same shard,
// correlation id and epoch.
func Continue(k Kind, src Source, cause Event, p Payload) Event {
	e := New(k, src, cause.Shard, p)
	e.CorrelationID = cause.CorrelationID
	e.Epoch = cause.Epoch
	return e
}
