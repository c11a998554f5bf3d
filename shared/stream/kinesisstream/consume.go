package kinesisstream

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/lease"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/group"
)

// Consume works this member's share of the topic's shards until ctx is cancelled.
func (b *Backend) Consume(ctx context.Context, sub stream.Subscription, h stream.Handler) error {
	if err := sub.Validate(); err != nil {
		return err
	}
	if h == nil {
		return fmt.Errorf("%w: nil handler", stream.ErrInvalid)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	untrack, err := b.track(cancel)
	if err != nil {
		return err
	}
	defer untrack()
	member := sub.Instance
	if member == "" {
		member = "c-" + randomID()
	}
	member = group.MemberID(member)
	log := b.log.With().Str("topic", sub.Topic).Str("group", sub.Group).Str("member", member).Logger()
	c := &consumer{b: b, sub: sub, h: h, name: b.StreamName(sub.Topic), member: member, log: log,
		runner: stream.Runner{Group: sub.Group, Retry: b.opts.HandlerRetry, Publish: b, Log: log}}
	err = group.Run(ctx, group.Config{
		Leases: lease.Manager{Store: b.opts.Checkpoints}, Prefix: kv.Key("stream", sub.Topic, sub.Group),
		Member: member, TTL: b.opts.LeaseTTL, Partitions: c.eligible, Work: c.work, Log: log,
	})
	if err != nil {
		return fmt.Errorf("kinesisstream: not consuming %s as %s: %w", sub.Topic, sub.Group, err)
	}
	return nil
}

// consumer is one Consume call.
type consumer struct {
	b      *Backend
	sub    stream.Subscription
	h      stream.Handler
	name   string
	member string
	log    zerolog.Logger
	runner stream.Runner
}

// listShards lists every shard of a stream, open and closed, following NextToken.
func (b *Backend) listShards(ctx context.Context, name string) ([]types.Shard, error) {
	var all []types.Shard
	in := &kinesis.ListShardsInput{StreamName: aws.String(name)}
	for {
		out, err := b.opts.Client.ListShards(ctx, in)
		if err != nil {
			return nil, err
		}
		all = append(all, out.Shards...)
		if aws.ToString(out.NextToken) == "" {
			return all, nil
		}
		in = &kinesis.ListShardsInput{NextToken: out.NextToken}
	}
}

func parents(s types.Shard) []string {
	var p []string
	for _, id := range []*string{s.ParentShardId, s.AdjacentParentShardId} {
		if aws.ToString(id) != "" {
			p = append(p, *id)
		}
	}
	return p
}

// eligible lists the shards the group may read now: those not finished whose parents
// (after a reshard) are finished or no longer listed.
func (c *consumer) eligible(ctx context.Context) ([]string, error) {
	if err := c.b.ensureStream(ctx, c.name); err != nil {
		return nil, err
	}
	shards, err := c.b.listShards(ctx, c.name)
	if isCode(err, "ResourceNotFoundException") {
		c.b.forget(c.name)
		return nil, fmt.Errorf("%w: %s (topic %s); waiting for it", ErrStreamNotFound, c.name, c.sub.Topic)
	}
	if err != nil {
		return nil, fmt.Errorf("kinesisstream: listing shards of %s: %w", c.name, err)
	}
	cps, err := c.checkpoints(ctx)
	if err != nil {
		return nil, fmt.Errorf("kinesisstream: reading checkpoints of %s/%s: %w", c.sub.Topic, c.sub.Group, err)
	}
	listed := map[string]bool{}
	for _, s := range shards {
		listed[aws.ToString(s.ShardId)] = true
	}
	var out []string
	for _, s := range shards {
		id := aws.ToString(s.ShardId)
		if cps[id].End {
			continue
		}
		ready := true
		for _, p := range parents(s) {
			if listed[p] && !cps[p].End {
				ready = false
			}
		}
		if ready {
			out = append(out, id)
		}
	}
	return out, nil
}

// reader reads one shard for the group while this member holds its lease.
type reader struct {
	*consumer
	shard  string
	key    string
	log    zerolog.Logger
	cp     Checkpoint // the position so far (saved or not)
	rev    uint64     // revision of the saved checkpoint
	dirty  bool       // cp has progress not saved yet
	fresh  bool       // cp.LatestAt was just set: start at LATEST, not AT_TIMESTAMP
	skipAt string     // resuming inside record skipAt: skip its first skip messages
	skip   int
}

var retryPolicy = backoff.Policy{Initial: 100 * time.Millisecond, Max: 5 * time.Second}

// work reads a shard until ctx is cancelled, the lease is lost (the checkpoint moved
// under us), or the shard was read to its end.
func (c *consumer) work(ctx context.Context, shard string) {
	r := &reader{consumer: c, shard: shard, key: CheckpointKey(c.sub.Topic, c.sub.Group, shard),
		log: c.log.With().Str("shard", shard).Logger()}
	for attempt := 1; ; attempt++ {
		cp, rev, err := c.loadCheckpoint(ctx, r.key)
		if err == nil {
			r.cp, r.rev = cp, rev
			break
		}
		if ctx.Err() != nil {
			return
		}
		r.log.Warn().Err(err).Msg("checkpoint not readable; retrying before reading the shard")
		if backoff.Sleep(ctx, retryPolicy.Delay(attempt)) != nil {
			return
		}
	}
	if r.cp.End {
		return
	}
	if !r.start(ctx) {
		return
	}
	r.log.Debug().Str("seq", r.cp.Seq).Int("next", r.cp.Next).Msg("reading shard")
	r.loop(ctx)
}

// start decides where a group without a position begins. It returns false when there
// is nothing to read.
func (r *reader) start(ctx context.Context) bool {
	if r.cp.Seq != "" || !r.cp.LatestAt.IsZero() || r.sub.Start != stream.StartLatest {
		return true
	}
	// A StartLatest group that meets this shard for the first time. A child of a shard
	// the group has read continues from the child's start (TRIM_HORIZON): the group
	// existed when those records were written.
	shards, err := r.b.listShards(ctx, r.name)
	if err != nil {
		r.log.Warn().Err(err).Msg("listing shards failed; will retry")
		return false
	}
	var me *types.Shard
	for i := range shards {
		if aws.ToString(shards[i].ShardId) == r.shard {
			me = &shards[i]
		}
	}
	if me == nil {
		return false
	}
	for _, p := range parents(*me) {
		pcp, _, err := r.loadCheckpoint(ctx, CheckpointKey(r.sub.Topic, r.sub.Group, p))
		if err != nil {
			r.log.Warn().Err(err).Msg("parent checkpoint not readable; will retry")
			return false
		}
		if pcp.End && !pcp.Skipped {
			return true
		}
	}
	if me.SequenceNumberRange != nil && me.SequenceNumberRange.EndingSequenceNumber != nil {
		// Closed before the group existed: nothing new can arrive in it.
		r.cp.End, r.cp.Skipped = true, true
	} else {
		r.cp.LatestAt = time.Now().UTC()
		r.fresh = true
	}
	rev, err := r.saveCheckpoint(ctx, r.key, r.cp, r.rev)
	if err != nil {
		if !errors.Is(err, errLost) {
			r.log.Warn().Err(err).Msg("starting point not recorded; will retry")
		}
		return false
	}
	r.rev = rev
	return !r.cp.End
}

// iteratorInput is the GetShardIterator request that resumes at r.cp.
func (r *reader) iteratorInput() *kinesis.GetShardIteratorInput {
	in := &kinesis.GetShardIteratorInput{StreamName: aws.String(r.name), ShardId: aws.String(r.shard)}
	r.skipAt, r.skip = "", 0
	switch {
	case r.cp.Seq != "" && r.cp.Next > 0:
		in.ShardIteratorType = types.ShardIteratorTypeAtSequenceNumber
		in.StartingSequenceNumber = aws.String(r.cp.Seq)
		r.skipAt, r.skip = r.cp.Seq, r.cp.Next
	case r.cp.Seq != "":
		in.ShardIteratorType = types.ShardIteratorTypeAfterSequenceNumber
		in.StartingSequenceNumber = aws.String(r.cp.Seq)
	case !r.cp.LatestAt.IsZero() && r.fresh:
		in.ShardIteratorType = types.ShardIteratorTypeLatest
	case !r.cp.LatestAt.IsZero():
		in.ShardIteratorType = types.ShardIteratorTypeAtTimestamp
		in.Timestamp = aws.Time(r.cp.LatestAt)
	default:
		in.ShardIteratorType = types.ShardIteratorTypeTrimHorizon
	}
	return in
}

// iterator gets a shard iterator at the current position, retrying transient errors.
// It returns "" when the shard cannot be read (gone, or ctx ended).
func (r *reader) iterator(ctx context.Context) string {
	for attempt := 1; ; attempt++ {
		in := r.iteratorInput()
		// AT_TIMESTAMP may take long on kinesalite when nothing arrived since; bound it.
		cctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		out, err := r.b.opts.Client.GetShardIterator(cctx, in, noSDKRetry)
		cancel()
		switch {
		case err == nil && aws.ToString(out.ShardIterator) != "":
			r.fresh = false
			return *out.ShardIterator
		case ctx.Err() != nil:
			return ""
		case isCode(err, "ResourceNotFoundException"):
			r.log.Warn().Err(err).Msg("shard or stream gone; giving the shard up")
			return ""
		case isCode(err, "InvalidArgumentException") && in.StartingSequenceNumber != nil:
			r.log.Error().Err(err).Str("seq", r.cp.Seq).
				Msg("checkpointed sequence number refused; reading the shard from its oldest record (duplicates, no loss)")
			r.cp.Seq, r.cp.Next = "", 0
			continue
		case err == nil:
			err = errors.New("GetShardIterator returned no iterator")
		}
		r.log.Warn().Err(err).Int("attempt", attempt).Str("type", string(in.ShardIteratorType)).Msg("GetShardIterator failed; retrying")
		if backoff.Sleep(ctx, retryPolicy.Delay(attempt)) != nil {
			return ""
		}
	}
}

func (r *reader) loop(ctx context.Context) {
	defer r.final(ctx)
	iter := r.iterator(ctx)
	if iter == "" {
		return
	}
	failures := 0
	var next time.Time // earliest time of the next GetRecords call
	for ctx.Err() == nil {
		if d := time.Until(next); d > 0 && backoff.Sleep(ctx, d) != nil {
			return
		}
		called := time.Now()
		out, err := r.b.opts.Client.GetRecords(ctx, &kinesis.GetRecordsInput{ShardIterator: aws.String(iter), Limit: aws.Int32(r.b.opts.BatchSize)}, noSDKRetry)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			failures++
			switch {
			case isCode(err, "ExpiredIteratorException"):
				r.log.Info().Str("seq", r.cp.Seq).Msg("shard iterator expired; renewing it from the last processed record")
				failures = 0
			case isCode(err, "ResourceNotFoundException"):
				r.log.Warn().Err(err).Msg("shard or stream gone; giving the shard up")
				return
			case retryable(ctx, err):
				r.log.Debug().Err(err).Int("attempt", failures).Msg("GetRecords throttled or failed; backing off")
				if backoff.Sleep(ctx, retryPolicy.Delay(failures)) != nil {
					return
				}
				continue // the iterator is still good
			default:
				r.log.Warn().Err(err).Int("attempt", failures).Msg("GetRecords failed; renewing the iterator after a backoff")
				if backoff.Sleep(ctx, retryPolicy.Delay(failures)) != nil {
					return
				}
			}
			if iter = r.iterator(ctx); iter == "" {
				return
			}
			continue
		}
		failures = 0
		for _, rec := range out.Records {
			if !r.handleRecord(ctx, rec) {
				return
			}
		}
		if r.dirty && !r.save(ctx) {
			return
		}
		if out.NextShardIterator == nil {
			r.cp.End = true
			r.dirty = true
			if r.save(ctx) {
				r.log.Info().Msg("shard closed and read to its end; its children may start")
			}
			return
		}
		iter = *out.NextShardIterator
		if len(out.Records) == 0 && aws.ToInt64(out.MillisBehindLatest) == 0 {
			next = time.Now().Add(r.b.opts.PollInterval)
		} else {
			next = called.Add(r.b.opts.MinGetInterval)
		}
	}
}

// handleRecord delivers a record's messages in order. It returns false when the
// reader must stop (ctx ended while a message was unacknowledged).
func (r *reader) handleRecord(ctx context.Context, rec types.Record) bool {
	seq := aws.ToString(rec.SequenceNumber)
	msgs, err := decode(rec.Data)
	if err != nil {
		// Not ours (or corrupt): deliver it as it is; the handler decides (a decoder
		// error is permanent and dead-letters it). Nothing is dropped.
		r.log.Warn().Err(err).Str("seq", seq).Msg("record is not a Heartline envelope; delivering its data as is")
		msgs = []decoded{{Data: rec.Data}}
	}
	start := 0
	if r.skip > 0 {
		if seq == r.skipAt {
			start = min(r.skip, len(msgs))
		}
		r.skipAt, r.skip = "", 0
	}
	published := time.Now()
	if rec.ApproximateArrivalTimestamp != nil {
		published = *rec.ApproximateArrivalTimestamp
	}
	for i := start; i < len(msgs); i++ {
		pos := seq
		if len(msgs) > 1 {
			pos = seq + "/" + strconv.Itoa(i)
		}
		d := stream.Delivery{
			Message: stream.Message{Key: aws.ToString(rec.PartitionKey), ID: msgs[i].ID, Data: msgs[i].Data},
			Topic:   r.sub.Topic, Partition: r.shard, Position: pos, Attempt: 1, Published: published,
		}
		if !r.runner.Handle(ctx, d, r.h) {
			return false
		}
		r.cp.Seq, r.cp.Next = seq, i+1
		if i+1 == len(msgs) {
			r.cp.Next = 0
		}
		r.cp.LatestAt = time.Time{}
		r.dirty = true
	}
	if start == len(msgs) && start > 0 {
		r.cp.Seq, r.cp.Next = seq, 0
		r.dirty = true
	}
	return true
}

// save writes the checkpoint. It returns false when the shard moved to another member.
// A store error is logged and the progress kept for the next save.
func (r *reader) save(ctx context.Context) bool {
	rev, err := r.saveCheckpoint(ctx, r.key, r.cp, r.rev)
	switch {
	case err == nil:
		r.rev, r.dirty = rev, false
		return true
	case errors.Is(err, errLost):
		r.log.Warn().Msg("checkpoint written by another member: the shard moved; stopping")
		return false
	default:
		if ctx.Err() == nil {
			r.log.Warn().Err(err).Str("seq", r.cp.Seq).Msg("checkpoint not saved; keeping the progress for the next save")
		}
		return true
	}
}

// final saves progress not saved yet, also after ctx was cancelled.
func (r *reader) final(ctx context.Context) {
	if !r.dirty {
		return
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	for attempt := 1; r.dirty; attempt++ {
		if !r.save(sctx) || sctx.Err() != nil {
			return
		}
		if r.dirty && backoff.Sleep(sctx, retryPolicy.Delay(attempt)) != nil {
			return
		}
	}
}
