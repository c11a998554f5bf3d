package kinesisstream

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/aws/aws-sdk-go-v2/service/kinesis/types"
	smithy "github.com/aws/smithy-go"

	"github.com/heartline/heartline/shared/backoff"
)

// ensureStream makes sure the topic's stream exists and is usable (ACTIVE or UPDATING),
// creating it when Create is set.
func (b *Backend) ensureStream(ctx context.Context, name string) error {
	b.mu.Lock()
	ok := b.ready[name]
	b.mu.Unlock()
	if ok {
		return nil
	}
	if !b.opts.Create {
		// Publishing and consuming report a missing stream themselves.
		return nil
	}
	b.creates.Lock()
	defer b.creates.Unlock()
	pol := backoff.Policy{Initial: 50 * time.Millisecond, Max: time.Second}
	created := false
	for attempt := 1; ; attempt++ {
		out, err := b.opts.Client.DescribeStreamSummary(ctx, &kinesis.DescribeStreamSummaryInput{StreamName: aws.String(name)})
		switch {
		case err == nil && out.StreamDescriptionSummary != nil:
			st := out.StreamDescriptionSummary.StreamStatus
			if st == types.StreamStatusActive || st == types.StreamStatusUpdating {
				b.mu.Lock()
				b.ready[name] = true
				b.mu.Unlock()
				return nil
			}
			if st == types.StreamStatusDeleting {
				b.log.Warn().Str("kinesis_stream", name).Msg("stream is being deleted; waiting to create it again")
			}
		case isCode(err, "ResourceNotFoundException") && !created:
			_, cerr := b.opts.Client.CreateStream(ctx, &kinesis.CreateStreamInput{StreamName: aws.String(name), ShardCount: aws.Int32(b.opts.ShardCount)})
			switch {
			case cerr == nil:
				created = true
				b.log.Info().Str("kinesis_stream", name).Int32("shards", b.opts.ShardCount).Msg("created Kinesis stream")
			case isCode(cerr, "ResourceInUseException"):
				created = true // someone else is creating it
			case !retryable(ctx, cerr):
				return fmt.Errorf("kinesisstream: not creating stream %s: %w", name, cerr)
			}
		case isCode(err, "ResourceNotFoundException"):
			// created, not visible yet
		case err != nil && !retryable(ctx, err):
			return fmt.Errorf("kinesisstream: describing stream %s: %w", name, err)
		}
		if err := backoff.Sleep(ctx, pol.Delay(attempt)); err != nil {
			return fmt.Errorf("kinesisstream: waiting for stream %s to become active: %w", name, err)
		}
	}
}

// forget drops a stream from the known-good cache (it was deleted under us).
func (b *Backend) forget(name string) {
	b.mu.Lock()
	delete(b.ready, name)
	b.mu.Unlock()
}

func isCode(err error, code string) bool {
	var ae smithy.APIError
	return err != nil && errors.As(err, &ae) && ae.ErrorCode() == code
}

// throttleCodes are the error codes that mean "slow down and try again".
var throttleCodes = map[string]bool{
	"ProvisionedThroughputExceededException": true,
	"LimitExceededException":                 true,
	"KMSThrottlingException":                 true,
	"ThrottlingException":                    true,
	"Throttling":                             true,
	"RequestLimitExceeded":                   true,
	"InternalFailure":                        true,
	"InternalFailureException":               true,
	"InternalServerError":                    true,
	"ServiceUnavailable":                     true,
	"ServiceUnavailableException":            true,
}

// retryable says whether err is worth retrying: throttling, server faults (5xx) and
// network errors are; the service's client errors (bad arguments, missing resources)
// and cancellation are not.
func retryable(ctx context.Context, err error) bool {
	if err == nil || ctx.Err() != nil || errors.Is(err, context.Canceled) {
		return false
	}
	var ae smithy.APIError
	if errors.As(err, &ae) {
		if throttleCodes[ae.ErrorCode()] || ae.ErrorFault() == smithy.FaultServer {
			return true
		}
		var st interface{ HTTPStatusCode() int }
		if errors.As(err, &st) && (st.HTTPStatusCode() >= 500 || st.HTTPStatusCode() == 429) {
			return true
		}
		return false
	}
	var st interface{ HTTPStatusCode() int }
	if errors.As(err, &st) {
		return st.HTTPStatusCode() >= 500 || st.HTTPStatusCode() == 429
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return true
	}
	// Anything else below the API (a reset connection, a truncated response, a
	// per-attempt timeout) is transient too.
	return true
}

// noSDKRetry turns off the SDK's own retries for a call the backend retries itself
// (with its backoff, its logs, and only the failed records of a PutRecords).
func noSDKRetry(o *kinesis.Options) { o.RetryMaxAttempts = 1 }
