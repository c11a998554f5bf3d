// Package events defines the versioned events that cross Heartline's stream, and their
// strict decoder.
//
// Every event is an envelope (Event) with a kind-specific payload:
//
//	{"id":"0193...","schema":"1.0","kind":"alert.opened","shard":"shard-1",
//	 "source":{"service":"alerter","instance":"alerter-0"},"time":"2026-...Z",
//	 "correlation_id":"<id of the heartbeat or attack that started the chain>",
//	 "epoch":3,"payload":{...}}
//
// Versioning: schema is "major.minor". A reader accepts any minor version of its own
// major version; fields added by a newer minor version are ignored, while unknown
// fields in an event of the reader's own or an older minor version are an error (they
// are a producer bug, not an upgrade). A newer major version is refused with
// ErrUnsupportedVersion so that an old consumer never misreads a changed meaning.
//
// Decoding never panics: every problem is a *FieldError naming the field and wrapping
// one of the sentinel errors in errors.go.
package events
