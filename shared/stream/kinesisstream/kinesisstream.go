// Package kinesisstream is the stream backend on Amazon Kinesis Data Streams.
//
// Each topic is one Kinesis stream named "<prefix>-<topic>" (created with ShardCount
// shards when missing, if Create is set). A topic's partitions are its shards: the
// members of a consumer group share them through leases in a kv.Store
// (shared/stream/group, keys "stream.<topic>.<group>.{p,m}.*"), and each group keeps
// a checkpoint per shard in the same store ("checkpoint.<topic>.<group>.<shardId>",
// written with compare-and-set after each processed GetRecords batch and on shutdown).
//
// Publishing packs a key's consecutive messages into one record (an envelope carrying
// each message's id and data; the record's partition key is the message key), puts at
// most one record per key in each PutRecords call, and retries only the records that
// failed, with backoff. A record lands whole or not at all and a key's next record is
// sent only after the previous one landed, so a partial failure never lets a later
// message of a key overtake an earlier one. What remains is at-least-once: a call that
// fails ambiguously (a timeout) is sent again and may duplicate records.
//
// Consuming reads each owned shard with its own iterator, strictly sequentially
// through stream.Runner (retries, dead-lettering to "<prefix>-deadletter"). Shards from
// a reshard are followed: a child shard is read only after its parents were read to
// their end (SHARD_END is recorded in the checkpoint) or are no longer listed, so a
// key's order holds across SplitShard and MergeShards. An expired iterator is renewed
// from the last processed position.
//
// GetRecords is paced for Kinesis's limit of 5 calls per second per shard, shared by
// every group reading the stream: MinGetInterval between calls on a shard (default
// 200 ms), PollInterval after a call that returned nothing (default 200 ms).
package kinesisstream

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"regexp"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/stream"
)

var (
	_ stream.Backend   = (*Backend)(nil)
	_ stream.Publisher = (*Backend)(nil)
	_ stream.Consumer  = (*Backend)(nil)
	_ Client           = (*kinesis.Client)(nil)
)

// Client is the part of the Kinesis API the backend uses; *kinesis.Client has it.
type Client interface {
	CreateStream(ctx context.Context, in *kinesis.CreateStreamInput, optFns ...func(*kinesis.Options)) (*kinesis.CreateStreamOutput, error)
	DescribeStreamSummary(ctx context.Context, in *kinesis.DescribeStreamSummaryInput, optFns ...func(*kinesis.Options)) (*kinesis.DescribeStreamSummaryOutput, error)
	ListShards(ctx context.Context, in *kinesis.ListShardsInput, optFns ...func(*kinesis.Options)) (*kinesis.ListShardsOutput, error)
	GetShardIterator(ctx context.Context, in *kinesis.GetShardIteratorInput, optFns ...func(*kinesis.Options)) (*kinesis.GetShardIteratorOutput, error)
	GetRecords(ctx context.Context, in *kinesis.GetRecordsInput, optFns ...func(*kinesis.Options)) (*kinesis.GetRecordsOutput, error)
	PutRecords(ctx context.Context, in *kinesis.PutRecordsInput, optFns ...func(*kinesis.Options)) (*kinesis.PutRecordsOutput, error)
}

// Options configure a Backend.
type Options struct {
	Client Client
	// StreamPrefix names the streams: topic T is the Kinesis stream "<prefix>-T".
	StreamPrefix string
	// Create makes missing streams (CreateStream with ShardCount shards, then waits
	// until ACTIVE). Off, a missing stream is ErrStreamNotFound when publishing and is
	// waited for when consuming.
	Create bool
	// ShardCount of created streams (default 2).
	ShardCount int32
	// Checkpoints holds the consumer groups' leases and checkpoints (required).
	Checkpoints kv.Store
	// LeaseTTL of shard leases (default 10 s): a dead member's shards move after it.
	LeaseTTL time.Duration
	// PollInterval is the wait after a GetRecords call that returned nothing (default
	// 200 ms).
	PollInterval time.Duration
	// MinGetInterval is the least time between two GetRecords calls on one shard
	// (default 200 ms: Kinesis allows 5 per second per shard). Negative: no pacing.
	MinGetInterval time.Duration
	// BatchSize is GetRecords' Limit (default 1000, at most 10000).
	BatchSize int32
	// PublishRetry is the backoff between PutRecords attempts after throttling or
	// transient errors (default 100 ms doubling to 5 s). Publish retries until its ctx
	// ends.
	PublishRetry backoff.Policy
	// HandlerRetry is the backoff between redeliveries of a message whose handler
	// failed (default stream.DefaultRetry).
	HandlerRetry backoff.Policy
	Log          zerolog.Logger
}

var prefixRE = regexp.MustCompile(`^[A-Za-z0-9_.-]{1,60}$`)

func (o *Options) defaults() error {
	if o.Client == nil {
		return errors.New("kinesisstream: Options.Client is required")
	}
	if o.Checkpoints == nil {
		return errors.New("kinesisstream: Options.Checkpoints (a kv.Store for leases and checkpoints) is required")
	}
	if !prefixRE.MatchString(o.StreamPrefix) {
		return fmt.Errorf("kinesisstream: stream prefix %q: want 1-60 of A-Z a-z 0-9 _ . -", o.StreamPrefix)
	}
	if o.ShardCount <= 0 {
		o.ShardCount = 2
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 10 * time.Second
	}
	if o.PollInterval <= 0 {
		o.PollInterval = 200 * time.Millisecond
	}
	if o.MinGetInterval == 0 {
		o.MinGetInterval = 200 * time.Millisecond
	}
	if o.BatchSize <= 0 || o.BatchSize > 10000 {
		o.BatchSize = 1000
	}
	if o.PublishRetry.Initial <= 0 {
		o.PublishRetry = backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second}
	}
	if o.HandlerRetry.Initial <= 0 {
		o.HandlerRetry = stream.DefaultRetry
	}
	return nil
}

// Backend is a stream.Backend on Kinesis. It is safe for concurrent use.
type Backend struct {
	opts Options
	log  zerolog.Logger

	mu      sync.Mutex
	closed  bool
	cancels map[int]context.CancelFunc
	nextID  int
	ready   map[string]bool // streams known to exist
	creates sync.Mutex      // one CreateStream at a time
}

// New returns a backend. It does not call Kinesis: streams are checked (and created)
// on first use.
func New(o Options) (*Backend, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	return &Backend{opts: o, log: o.Log.With().Str("stream_backend", "kinesis").Logger(),
		cancels: map[int]context.CancelFunc{}, ready: map[string]bool{}}, nil
}

// StreamName is the Kinesis stream of a topic.
func (b *Backend) StreamName(topic string) string { return b.opts.StreamPrefix + "-" + topic }

// Close stops this backend's consumers and refuses further use. It closes neither the
// Kinesis client nor the checkpoint store.
func (b *Backend) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closed = true
	for _, c := range b.cancels {
		c()
	}
	return nil
}

func (b *Backend) isClosed() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.closed
}

// track registers a consumer's cancel so that Close stops it.
func (b *Backend) track(cancel context.CancelFunc) (untrack func(), err error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.closed {
		return nil, stream.ErrClosed
	}
	id := b.nextID
	b.nextID++
	b.cancels[id] = cancel
	return func() {
		b.mu.Lock()
		delete(b.cancels, id)
		b.mu.Unlock()
	}, nil
}

func randomID() string {
	var r [6]byte
	_, _ = rand.Read(r[:])
	return hex.EncodeToString(r[:])
}
