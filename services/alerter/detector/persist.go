package detector

import (
	"slices"
	"time"

	"github.com/heartline/heartline/shared/events"
)

// Persisted is the part of a shard's state that must survive a restart of the alerter
// and move with the shard to another instance: the open incident and the flap history.
// Everything else is rebuilt from heartbeats.
type Persisted struct {
	// Incident is the open incident, nil when none is open.
	Incident *Incident `json:"incident,omitempty"`
	// LastIncidentID is the id of the last incident, open or resolved.
	LastIncidentID string `json:"last_incident_id,omitempty"`
	// Changes are the times of the state changes inside the flap window.
	Changes  []time.Time `json:"changes,omitempty"`
	Flapping bool        `json:"flapping"`
}

// Incident is one open incident of a shard.
type Incident struct {
	ID       string           `json:"id"`
	Code     events.AlertCode `json:"code"`
	Severity events.Severity  `json:"severity"`
	State    events.State     `json:"state"`
	// CorrelationID is the id of the incident's first failed (or flagged) heartbeat.
	CorrelationID string    `json:"correlation_id"`
	Epoch         uint64    `json:"epoch,omitempty"`
	Primary       string    `json:"primary,omitempty"`
	OpenedAt      time.Time `json:"opened_at"`
	FirstFailure  time.Time `json:"first_failure,omitzero"`
	// MaxAgentsDown is the most agents that saw the primary down during the incident; a
	// PRIMARY_DOWN escalates when more do.
	MaxAgentsDown int `json:"max_agents_down"`
}

// Clone returns a deep copy.
func (p Persisted) Clone() Persisted {
	if p.Incident != nil {
		inc := *p.Incident
		p.Incident = &inc
	}
	p.Changes = slices.Clone(p.Changes)
	return p
}
