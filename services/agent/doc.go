// Package agent is Heartline's replica-side heartbeat agent: one runs beside each
// replica. Every interval it reads its replica's replication state (INFO), pings the
// shard's primary over its own connection with a short timeout, reads the primary's
// identity, and publishes one events.Heartbeat on the heartbeats topic. It flags at
// once, without thresholds, a restarted primary, a primary whose data regressed, a
// primary that reports itself as a replica, and configuration drift.
//
// It also guards the replica against the restart-wipe: it keeps a watch connection to
// the primary (a SUBSCRIBE that nobody publishes to), so it learns within milliseconds
// that the primary's process died, and it parks ("freezes") the replica with
// REPLICAOF 127.0.0.1 1 (the park address, on loopback; -park-addr) before the replica can full-resync from a primary that came
// back empty. It unparks the replica only when a partial resync is certain (same
// primary, same epoch, same replication id, offset at or above the replica's, for
// unfreeze-after). See README.md and docs/design.md, "Freezing replication".
//
// Heartbeats never wait for the stream: they go to a bounded buffer that a separate
// goroutine publishes in order, with backoff while the stream is down.
package agent
