// Package e2e holds lazarus's end-to-end tests on a whole local topology
// (shared/localstack): real redis-server nodes, the agent, alerter, lazarus and
// ratequeue binaries, and the stream and kv store of a profile (kinesalite and
// dynalite for Kinesis). It has no code of its own.
package e2e
