package kinesisstream

import (
	"context"
	"errors"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"

	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/stream"
)

// Publish publishes one message.
func (b *Backend) Publish(ctx context.Context, topic string, m stream.Message) error {
	return b.PublishBatch(ctx, topic, []stream.Message{m})
}

// keyQueue is the unsent messages of one key, in order.
type keyQueue struct {
	key  string
	msgs []stream.Message
}

// PublishBatch publishes msgs with PutRecords, keeping their order per key. Every
// message is checked first: one bad message publishes nothing. It retries throttling
// and transient errors with backoff until ctx ends, resending only the records that
// failed; it returns nil only when every message was accepted.
//
// Order per key: a key's messages are packed into records of at most 1 MiB, and each
// PutRecords call carries at most one record per key; the key's next record goes in a
// later call, after this one was accepted. A failed record is resent before anything
// after it, so a partial failure never reorders a key's messages.
func (b *Backend) PublishBatch(ctx context.Context, topic string, msgs []stream.Message) error {
	for _, m := range msgs {
		if err := stream.CheckMessage(topic, m); err != nil {
			return err
		}
	}
	if len(msgs) == 0 {
		return nil
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if b.isClosed() {
		return stream.ErrClosed
	}
	name := b.StreamName(topic)
	// Queue per key, keys in order of first appearance.
	var queues []*keyQueue
	byKey := map[string]*keyQueue{}
	for _, m := range msgs {
		q := byKey[m.Key]
		if q == nil {
			q = &keyQueue{key: m.Key}
			byKey[m.Key] = q
			queues = append(queues, q)
		}
		q.msgs = append(q.msgs, m)
	}
	sent, failures := 0, 0
	for {
		if err := b.ensureStream(ctx, name); err != nil {
			return fmt.Errorf("kinesisstream: not publishing %d messages to %s: %w", len(msgs)-sent, topic, err)
		}
		entries, counts, qs := buildCall(queues)
		if len(entries) == 0 {
			return nil
		}
		out, err := b.opts.Client.PutRecords(ctx, &kinesis.PutRecordsInput{StreamName: aws.String(name), Records: entries}, noSDKRetry)
		failedCode := ""
		switch {
		case err == nil && len(out.Records) != len(entries):
			failedCode = "MalformedResponse"
			err = fmt.Errorf("PutRecords answered %d results for %d records", len(out.Records), len(entries))
		case err == nil:
			for i, r := range out.Records {
				code := aws.ToString(r.ErrorCode)
				if code == "" {
					sent += counts[i]
					qs[i].msgs = qs[i].msgs[counts[i]:]
					continue
				}
				if !throttleCodes[code] {
					return fmt.Errorf("%w: not publishing the remaining %d messages to %s: key %q: %s: %s",
						ErrRejected, len(msgs)-sent, topic, qs[i].key, code, aws.ToString(r.ErrorMessage))
				}
				if failedCode == "" {
					failedCode = code
				}
			}
			if failedCode == "" {
				failures = 0
				continue
			}
		case ctx.Err() != nil:
			return fmt.Errorf("kinesisstream: %d of %d messages to %s not published: %w", len(msgs)-sent, len(msgs), topic, ctx.Err())
		case isCode(err, "ResourceNotFoundException"):
			if !b.opts.Create {
				return fmt.Errorf("%w: %s (topic %s): %d messages not published: %w", ErrStreamNotFound, name, topic, len(msgs)-sent, err)
			}
			b.forget(name) // deleted under us: create it again
		case isCode(err, "InvalidArgumentException") || isCode(err, "ValidationException"):
			return fmt.Errorf("%w: kinesis refused the batch for %s: %w", stream.ErrInvalid, topic, err)
		case !retryable(ctx, err):
			return fmt.Errorf("kinesisstream: %d of %d messages to %s not published: %w", len(msgs)-sent, len(msgs), topic, err)
		}
		failures++
		d := b.opts.PublishRetry.Delay(failures)
		ev := b.log.Debug()
		if failures >= 5 {
			ev = b.log.Warn()
		}
		ev.Err(err).Str("topic", topic).Str("code", failedCode).Int("attempt", failures).Int("unsent", len(msgs)-sent).
			Dur("backoff", d).Msg("PutRecords throttled or failed; retrying the unsent records")
		if serr := backoff.Sleep(ctx, d); serr != nil {
			return fmt.Errorf("kinesisstream: %d of %d messages to %s not published: %w", len(msgs)-sent, len(msgs), topic, errors.Join(serr, err))
		}
	}
}

// buildCall takes, for each key with unsent messages, one record packing as many of
// its next messages as fit in a record, while the call stays within PutRecords' limits.
// counts[i] is how many messages entries[i] carries, qs[i] its key's queue.
func buildCall(queues []*keyQueue) (entries []types.PutRecordsRequestEntry, counts []int, qs []*keyQueue) {
	callBytes := 0
	for _, q := range queues {
		if len(q.msgs) == 0 {
			continue
		}
		if len(entries) == maxCallRecords {
			break
		}
		budget := maxRecord - len(q.key)
		n, size := 0, len(magic)
		for n < len(q.msgs) {
			s := size + msgSize(q.msgs[n])
			if s+uvarintLen(uint64(n+1)) > budget {
				break
			}
			size = s
			n++
		}
		if n == 0 {
			n, size = 1, size+msgSize(q.msgs[0]) // cannot happen for checked messages; Kinesis would refuse it
		}
		size += uvarintLen(uint64(n)) + len(q.key)
		if callBytes+size > maxCallBytes {
			continue // a later call takes it; smaller records of other keys may still fit
		}
		callBytes += size
		entries = append(entries, types.PutRecordsRequestEntry{PartitionKey: aws.String(q.key), Data: encode(q.msgs[:n])})
		counts = append(counts, n)
		qs = append(qs, q)
	}
	return entries, counts, qs
}
