// Package detector is the alerter's decision core: a pure, clock-injected state machine
// per shard. It is fed heartbeats (and timer ticks) with the current time passed in, and
// returns alert decisions; it does no I/O, so the same golden scenarios run against it
// directly and through the service.
//
// Per shard it keeps the latest view of every agent (one per Source.Instance) and at most
// one open incident. The rules, in the words the README uses:
//
//   - A probe fails when the heartbeat's Primary.OK is false. An agent sees the primary
//     down when it reported at least FailThreshold consecutive failed probes and at least
//     DownAfter passed (on the agent's own clock) since it last saw the primary healthy.
//   - Quorum: the agents that reported within their recency window (RecencyIntervals
//     heartbeat intervals, at least RecencyMin) vote. When a strict majority of them see
//     the primary down, the shard is HARD and PRIMARY_DOWN (critical) opens. When only a
//     minority see it down and the rest see it healthy, REPLICA_PROBLEM (warning) opens
//     instead. While enough agents are still failing below the threshold to make a
//     majority, the shard waits in SOFT.
//   - Silence is not failure: when every agent of the shard was silent for AgentLostAfter,
//     AGENT_LOST (warning) opens; never PRIMARY_DOWN.
//   - The agent's flags bypass the thresholds: PRIMARY_DATA_REGRESSED and
//     PRIMARY_ROLE_CHANGED open a critical alert at once, CONFIG_DRIFT a warning.
//     REPLICATION_FROZEN alone is no alert.
//   - Duplicates and out-of-order heartbeats (same agent and AgentStart, Seq not above
//     the last one; or an older AgentStart) are ignored and never counted twice.
//   - Alerts only on change: opened, escalated (a more severe code, more agents seeing the
//     primary down, flapping started or stopped), resolved (the incident's condition has
//     been clear for RecoverProbes consecutive heartbeats).
//   - Flapping: more than FlapChanges state changes (alerts opened or resolved, and
//     changes of an open incident's state) within FlapWindow mark the shard FLAPPING; it
//     stops when the window holds FlapChanges/2 changes or fewer.
package detector
