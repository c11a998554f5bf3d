package detector

import "errors"

// ErrNotHeartbeat: the event is not a heartbeat (FromEvent).
var ErrNotHeartbeat = errors.New("not a heartbeat event")
