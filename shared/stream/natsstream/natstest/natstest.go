// Package natstest starts real NATS servers (nats-server/v2 with JetStream, in the test
// process) for integration tests of anything that talks to NATS.
package natstest

import (
	"testing"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/stream/natsstream"
)

// Start starts an embedded NATS server with JetStream on a random loopback port and a
// fresh store directory; it is shut down when the test ends.
func Start(t testing.TB) *natsstream.Embedded {
	t.Helper()
	return StartIn(t, t.TempDir(), -1)
}

// StartIn starts an embedded server on storeDir and port (-1 for a random one), for
// tests that restart a server on the same data and address.
func StartIn(t testing.TB, storeDir string, port int) *natsstream.Embedded {
	t.Helper()
	e, err := natsstream.StartEmbedded(natsstream.EmbeddedOptions{StoreDir: storeDir, Port: port, Log: zerolog.Nop()})
	if err != nil {
		t.Fatalf("embedded nats-server: %v", err)
	}
	t.Cleanup(e.Shutdown)
	return e
}
