package natsstream

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/rs/zerolog"
)

// EmbeddedOptions configure StartEmbedded.
type EmbeddedOptions struct {
	// StoreDir is where JetStream keeps its streams and KV buckets (required). A server
	// started again on the same directory finds its messages and consumers again.
	StoreDir string
	// Host is the listen address (default 127.0.0.1). Other processes connect to it by
	// ClientURL: use 0.0.0.0 for processes on other machines.
	Host string
	// Port is the client port; -1 picks a free one, 0 means the NATS default 4222.
	Port int
	// ServerName names the server in logs and monitoring (default "heartline").
	ServerName string
	// MaxStore bounds JetStream file storage in bytes (default: the server's own limit,
	// a share of the free disk).
	MaxStore int64
	Log      zerolog.Logger
}

// Embedded is a nats-server with JetStream running inside this process.
type Embedded struct {
	srv  *server.Server
	opts EmbeddedOptions
}

// StartEmbedded starts a NATS server with JetStream in this process and waits until it
// accepts connections. It serves other processes on its listen address like any NATS
// server (the game day's services connect to it by ClientURL).
func StartEmbedded(o EmbeddedOptions) (*Embedded, error) {
	if o.StoreDir == "" {
		return nil, errors.New("not starting the embedded NATS server: StoreDir is required")
	}
	if o.Host == "" {
		o.Host = "127.0.0.1"
	}
	if o.ServerName == "" {
		o.ServerName = "heartline"
	}
	sopts := &server.Options{
		ServerName:        o.ServerName,
		Host:              o.Host,
		Port:              o.Port,
		JetStream:         true,
		StoreDir:          o.StoreDir,
		JetStreamMaxStore: o.MaxStore,
		NoSigs:            true,
		MaxPayload:        1 << 20,
	}
	srv, err := server.NewServer(sopts)
	if err != nil {
		return nil, fmt.Errorf("not starting the embedded NATS server: %w", err)
	}
	srv.SetLogger(serverLog{o.Log.With().Str("component", "nats-server").Logger()}, false, false)
	srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		srv.Shutdown()
		return nil, fmt.Errorf("not starting the embedded NATS server on %s: not ready for connections after 30s",
			net.JoinHostPort(o.Host, strconv.Itoa(o.Port)))
	}
	if !srv.JetStreamEnabled() {
		srv.Shutdown()
		return nil, errors.New("not starting the embedded NATS server: JetStream did not start")
	}
	o.Log.Info().Str("url", srv.ClientURL()).Str("store_dir", o.StoreDir).Msg("embedded NATS server with JetStream ready")
	return &Embedded{srv: srv, opts: o}, nil
}

// ClientURL is the URL clients connect to (nats://host:port, with the real port when
// Port was -1).
func (e *Embedded) ClientURL() string { return e.srv.ClientURL() }

// Port is the client port the server listens on.
func (e *Embedded) Port() int {
	if a, ok := e.srv.Addr().(*net.TCPAddr); ok {
		return a.Port
	}
	return e.opts.Port
}

// Server exposes the server for tests and monitoring.
func (e *Embedded) Server() *server.Server { return e.srv }

// Shutdown stops the server and waits until it has stopped. Its data stays in
// StoreDir.
func (e *Embedded) Shutdown() {
	e.srv.Shutdown()
	e.srv.WaitForShutdown()
}

// serverLog routes the server's log lines to zerolog.
type serverLog struct{ log zerolog.Logger }

func (l serverLog) Noticef(format string, v ...any) { l.log.Debug().Msgf(format, v...) }
func (l serverLog) Warnf(format string, v ...any)   { l.log.Warn().Msgf(format, v...) }
func (l serverLog) Fatalf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l serverLog) Errorf(format string, v ...any)  { l.log.Error().Msgf(format, v...) }
func (l serverLog) Debugf(format string, v ...any)  { l.log.Debug().Msgf(format, v...) }
func (l serverLog) Tracef(format string, v ...any)  { l.log.Trace().Msgf(format, v...) }
