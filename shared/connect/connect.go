// Package connect opens the stream and key-value store a service is configured with,
// from two settings every service shares:
//
//	HEARTLINE_STREAM  (-stream)   "" or "embedded": an embedded NATS server with
//	                              JetStream, in this process (the default: a local run
//	                              needs nothing but redis-server);
//	                              "nats://host:4222[,nats://...]": a NATS cluster;
//	                              "kinesis://PREFIX?region=R[&endpoint=URL]": Amazon
//	                              Kinesis streams named PREFIX-<topic>; optional
//	                              shards=N (created streams), create=true|false,
//	                              poll=D and min_get=D (GetRecords pacing).
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
	"net"
	"net/url"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/dynamodb"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/config"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/kv/dynamokv"
	"github.com/heartline/heartline/shared/kv/filekv"
	"github.com/heartline/heartline/shared/kv/natskv"
	"github.com/heartline/heartline/shared/localaws"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/kinesisstream"
	"github.com/heartline/heartline/shared/stream/natsstream"
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
		if u != nil {
			for _, k := range []string{"poll", "min_get"} {
				if v := u.Query().Get(k); v != "" {
					if _, err := time.ParseDuration(v); err != nil {
						p.Addf("stream %q: %s=%q is not a duration", c.Stream, k, v)
					}
				}
			}
			if v := u.Query().Get("shards"); v != "" {
				if n, err := strconv.Atoi(v); err != nil || n < 1 {
					p.Addf("stream %q: shards=%q: want a positive number", c.Stream, v)
				}
			}
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

// Open connects to the configured stream and kv store. For the embedded profile it
// starts the NATS server first; Platform.Close stops it last.
func Open(ctx context.Context, c Config, log zerolog.Logger) (*Platform, error) {
	var p config.Problems
	c.Validate(&p)
	if err := p.Err(); err != nil {
		return nil, err
	}
	pl := &Platform{}
	var err error
	switch c.Kind() {
	case "embedded", "nats":
		err = pl.openNATS(ctx, c, log)
	case "kinesis":
		err = pl.openKinesis(ctx, c, log)
	}
	if err != nil {
		_ = pl.Close()
		return nil, err
	}
	return pl, nil
}

func (pl *Platform) openNATS(ctx context.Context, c Config, log zerolog.Logger) error {
	url := c.Stream
	if c.Kind() == "embedded" {
		host, port, err := splitListen(c.NATSListen)
		if err != nil {
			return err
		}
		e, err := natsstream.StartEmbedded(natsstream.EmbeddedOptions{StoreDir: filepath.Join(c.DataDir, "nats"),
			Host: host, Port: port, Log: log})
		if err != nil {
			return fmt.Errorf("starting the embedded NATS server: %w", err)
		}
		pl.closers = append(pl.closers, func() error { e.Shutdown(); return nil })
		url = e.ClientURL()
		log.Info().Str("url", url).Str("store_dir", filepath.Join(c.DataDir, "nats")).Msg("embedded NATS server with JetStream started")
	}
	pl.NATSURL = url
	nc, err := natskv.Dial(ctx, url, natskv.DialOptions{Name: c.Instance, Log: log})
	if err != nil {
		return fmt.Errorf("connecting to NATS at %s: %w", logging.RedactURL(url), err)
	}
	pl.closers = append(pl.closers, func() error { nc.Close(); return nil })
	var store kv.Store
	switch {
	case c.KV == "" || c.KV == "nats":
		s, err := natskv.New(ctx, natskv.Options{Conn: nc, Log: log})
		if err != nil {
			return fmt.Errorf("opening the NATS KV bucket: %w", err)
		}
		pl.closers = append(pl.closers, s.Close)
		store = s
	default:
		if store, err = pl.openKV(ctx, c, log); err != nil {
			return err
		}
	}
	pl.KV = store
	b, err := natsstream.New(ctx, natsstream.Options{Conn: nc, Name: c.Instance, KV: store, Log: log})
	if err != nil {
		return fmt.Errorf("opening the JetStream stream backend: %w", err)
	}
	pl.closers = append(pl.closers, b.Close)
	pl.Stream = b
	return nil
}

func (pl *Platform) openKinesis(ctx context.Context, c Config, log zerolog.Logger) error {
	u, _ := url.Parse(c.Stream)
	q := u.Query()
	region, endpoint := q.Get("region"), q.Get("endpoint")
	var client *kinesis.Client
	if isLoopback(endpoint) {
		client = localaws.KinesisClient(endpoint, func(o *kinesis.Options) { o.Region = region })
	} else {
		cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region))
		if err != nil {
			return fmt.Errorf("loading AWS configuration: %w", err)
		}
		client = kinesis.NewFromConfig(cfg, func(o *kinesis.Options) {
			if endpoint != "" {
				o.BaseEndpoint = &endpoint
			}
		})
	}
	store, err := pl.openKV(ctx, c, log)
	if err != nil {
		return err
	}
	pl.KV = store
	shards, _ := strconv.Atoi(q.Get("shards"))
	// poll and min_get tune GetRecords pacing: AWS allows 5 calls per second per shard
	// (the 200 ms default); kinesalite has no such limit.
	poll, _ := time.ParseDuration(q.Get("poll"))
	minGet, _ := time.ParseDuration(q.Get("min_get"))
	b, err := kinesisstream.New(kinesisstream.Options{Client: client, StreamPrefix: u.Host,
		Create: createWanted(q, endpoint), ShardCount: int32(shards), Checkpoints: store,
		PollInterval: poll, MinGetInterval: minGet, Log: log})
	if err != nil {
		return fmt.Errorf("opening the Kinesis stream backend: %w", err)
	}
	pl.closers = append(pl.closers, b.Close)
	pl.Stream = b
	return nil
}

// openKV opens a kv store that is not the NATS bucket: DynamoDB or a file (the default
// for Kinesis without a configured store).
func (pl *Platform) openKV(ctx context.Context, c Config, log zerolog.Logger) (kv.Store, error) {
	switch {
	case strings.HasPrefix(c.KV, "dynamodb://"):
		u, _ := url.Parse(c.KV)
		q := u.Query()
		region, endpoint := q.Get("region"), q.Get("endpoint")
		var client *dynamodb.Client
		if isLoopback(endpoint) {
			client = localaws.DynamoClient(endpoint, func(o *dynamodb.Options) { o.Region = region })
		} else {
			cfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(region))
			if err != nil {
				return nil, fmt.Errorf("loading AWS configuration: %w", err)
			}
			client = dynamodb.NewFromConfig(cfg, func(o *dynamodb.Options) {
				if endpoint != "" {
					o.BaseEndpoint = &endpoint
				}
			})
		}
		s, err := dynamokv.Open(ctx, dynamokv.Options{Client: client, Table: u.Host, Create: createWanted(q, endpoint), Log: log})
		if err != nil {
			return nil, fmt.Errorf("opening the DynamoDB kv table %s: %w", u.Host, err)
		}
		return s, nil
	case strings.HasPrefix(c.KV, "file://"):
		return filekv.Open(strings.TrimPrefix(c.KV, "file://"))
	case c.KV == "":
		path := filepath.Join(c.DataDir, "heartline-kv.json")
		log.Warn().Str("file", path).Msg("no kv store configured for Kinesis: using a local file, which only processes of this machine share")
		return filekv.Open(path)
	default:
		return nil, fmt.Errorf("kv %q is not available with this stream", c.KV)
	}
}

// createWanted: create missing streams/tables when ?create=true, and by default for a
// local endpoint (kinesalite, dynalite); production resources come from Terraform.
func createWanted(q url.Values, endpoint string) bool {
	if v := q.Get("create"); v != "" {
		return v == "true" || v == "1"
	}
	return isLoopback(endpoint)
}

func isLoopback(endpoint string) bool {
	if endpoint == "" {
		return false
	}
	u, err := url.Parse(endpoint)
	if err != nil {
		return false
	}
	h := u.Hostname()
	if h == "localhost" {
		return true
	}
	ip := net.ParseIP(h)
	return ip != nil && ip.IsLoopback()
}

func splitListen(s string) (string, int, error) {
	if s == "" {
		return "127.0.0.1", -1, nil
	}
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return "", 0, fmt.Errorf("nats-listen %q: want host:port (port -1 for a random one): %w", s, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return "", 0, fmt.Errorf("nats-listen %q: bad port", s)
	}
	return host, n, nil
}
