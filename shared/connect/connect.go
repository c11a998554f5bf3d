// Package connect opens the stream and key-value store a service is configured with,
// from two settings every service shares:
//
//	HEARTLINE_STREAM  (-stream)   "" or "embedded": an embedded NATS server with
//	                              JetStream, in this process (the default: a local run
//	                              needs nothing but redis-server);
//	                              "nats://host:4222[,nats://...]": a NATS cluster;
//	                              "kinesis://PREFIX?region=R[&endpoint=URL]": Amazon
//	                              Kinesis streams named PREFIX-<topic>.
//	HEARTLINE_KV      (-kv)       "" follows the stream: JetStream KV for NATS, and for
//	                              Kinesis a file next to the data dir;
//	                              "nats": JetStream KV bucket "heartline";
//	                              "dynamodb://TABLE?region=R[&endpoint=URL]": DynamoDB;
//	                              "file:///path/store.json": one machine only.
//	HEARTLINE_DATA_DIR (-data-dir) the embedded server's JetStream directory.
//	HEARTLINE_NATS_LISTEN (-nats-listen) host:port where the embedded server accepts
//	                              other processes ("" = 127.0.0.1, random port).
package connect

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/config"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/stream"
)

// Config is the part of every service's configuration that says where the stream and
// the kv store are.
type Config struct {
	Stream     string
	KV         string
	DataDir    string
	NATSListen string
	// Instance names this process in leases and consumer groups.
	Instance string
}

// Register binds the settings to flags with HEARTLINE_ environment variables.
func (c *Config) Register(l *config.Loader) {
	l.String(&c.Stream, "stream", "", `stream: "" or "embedded" (in-process NATS), nats://host:port, or kinesis://PREFIX?region=R[&endpoint=URL]`)
	l.Shared("stream")
	l.String(&c.KV, "kv", "", `kv store: "" (follow the stream), nats, dynamodb://TABLE?region=R[&endpoint=URL], or file:///path`)
	l.Shared("kv")
	l.String(&c.DataDir, "data-dir", "data", "directory for the embedded NATS server's JetStream files and local state")
	l.Shared("data-dir")
	l.String(&c.NATSListen, "nats-listen", "127.0.0.1:-1", "where the embedded NATS server listens for other processes (port -1: random)")
	l.Shared("nats-listen")
}

// Kind of stream backend configured.
func (c Config) Kind() string {
	switch {
	case c.Stream == "" || c.Stream == "embedded":
		return "embedded"
	case strings.HasPrefix(c.Stream, "nats://") || strings.HasPrefix(c.Stream, "tls://"):
		return "nats"
	case strings.HasPrefix(c.Stream, "kinesis://"):
		return "kinesis"
	default:
		return ""
	}
}

// Validate adds every problem with the settings to p.
func (c Config) Validate(p *config.Problems) {
	if c.Kind() == "" {
		p.Addf("stream %q: want embedded, nats://host:port or kinesis://PREFIX?region=R", c.Stream)
	}
	if c.Kind() == "kinesis" {
		u, err := url.Parse(c.Stream)
		if err != nil || u.Host == "" {
			p.Addf("stream %q: kinesis://PREFIX needs a stream name prefix", c.Stream)
		} else if u.Query().Get("region") == "" {
			p.Addf("stream %q: kinesis needs ?region=", c.Stream)
		}
	}
	switch {
	case c.KV == "", c.KV == "nats":
		if c.KV == "nats" && c.Kind() == "kinesis" {
			p.Addf("kv nats needs a NATS stream, not kinesis")
		}
	case strings.HasPrefix(c.KV, "dynamodb://"):
		u, err := url.Parse(c.KV)
		if err != nil || u.Host == "" || u.Query().Get("region") == "" {
			p.Addf("kv %q: want dynamodb://TABLE?region=R[&endpoint=URL]", c.KV)
		}
	case strings.HasPrefix(c.KV, "file://"):
		if strings.TrimPrefix(c.KV, "file://") == "" {
			p.Addf("kv %q: want file:///path/to/store.json", c.KV)
		}
	default:
		p.Addf("kv %q: want nats, dynamodb://TABLE?region=R or file:///path", c.KV)
	}
}

// Platform is an opened stream and kv store.
type Platform struct {
	Stream stream.Backend
	KV     kv.Store
	// NATSURL is the client URL of the NATS server in use (the embedded one's when
	// embedded), for handing to other processes; "" for Kinesis.
	NATSURL string
	closers []func() error
}

// Close closes the stream, the store and any embedded server, in that order.
func (p *Platform) Close() error {
	var errs []error
	for i := len(p.closers) - 1; i >= 0; i-- {
		if err := p.closers[i](); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// ErrNotBuilt is returned for a backend this build does not include yet.
var ErrNotBuilt = errors.New("backend not available in this build")

// Open connects to the configured stream and kv store.
func Open(ctx context.Context, c Config, log zerolog.Logger) (*Platform, error) {
	var p config.Problems
	c.Validate(&p)
	if err := p.Err(); err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("connect: %s stream: %w", c.Kind(), ErrNotBuilt)
}
