// Package alerter is Heartline's threshold alerter (the Nagios role). It consumes the
// agents' heartbeats as consumer group "alerter", runs the per-shard state machine of
// package detector, and publishes alert.opened, alert.escalated and alert.resolved
// events on the alerts topic, keyed by shard.
//
// Restart safety and several instances: the open incident of each shard lives in the kv
// store under alerter.incident.<shard>, written with compare-and-set before its alert is
// published. The record carries the encoded alert events until they are published, so
// an alert decided just before a crash is published by the next incarnation (with the
// same event id, which the stream de-duplicates) rather than decided twice. A write that
// loses the race reloads the record and decides again, so two instances (or an instance
// and its restarted self) never publish two alerts for one change. Everything else is
// rebuilt from heartbeats.
//
// Timer decisions (AGENT_LOST, the end of flapping) are taken only by the instance that
// last claimed the shard (alerter.owner.<shard>, written when an instance first handles
// a shard's heartbeat): an instance whose partition moved to another must not call the
// shard's agents lost just because it no longer receives them.
package alerter
