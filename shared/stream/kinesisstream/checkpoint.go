package kinesisstream

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/heartline/heartline/shared/kv"
)

// Checkpoint is a consumer group's position in one shard, kept in the kv store under
// "checkpoint.<topic>.<group>.<shardId>" (JSON).
type Checkpoint struct {
	// Seq is the sequence number of the last record the group processed.
	Seq string `json:"seq,omitempty"`
	// Next > 0 says only the first Next messages of record Seq were processed (a record
	// packs several messages of a key); 0 says all of them were.
	Next int `json:"next,omitempty"`
	// End is SHARD_END: the closed shard was read to its end, its children may start.
	End bool `json:"end,omitempty"`
	// Skipped: End was recorded without reading the shard (a StartLatest group met a
	// shard that was already closed when the group was created).
	Skipped bool `json:"skipped,omitempty"`
	// LatestAt is where a StartLatest group started reading the shard, kept until its
	// first record is processed so that a restart does not skip what arrived meanwhile.
	LatestAt time.Time `json:"latest_at,omitzero"`
	// Owner is the member that wrote it, Updated when.
	Owner   string    `json:"owner,omitempty"`
	Updated time.Time `json:"updated,omitzero"`
}

// CheckpointKey is the kv key of a group's checkpoint for a shard.
func CheckpointKey(topic, group, shardID string) string {
	return kv.Key("checkpoint", topic, group, shardID)
}

// errLost: the checkpoint was written by another member: the shard moved.
var errLost = errors.New("checkpoint written by another member")

// loadCheckpoint reads a checkpoint; a missing one is the zero Checkpoint at revision 0.
// A malformed one is reported and read as missing (the shard is then read again from
// its start: duplicates, never loss).
func (c *consumer) loadCheckpoint(ctx context.Context, key string) (Checkpoint, uint64, error) {
	e, err := c.b.opts.Checkpoints.Get(ctx, key)
	if errors.Is(err, kv.ErrNotFound) {
		return Checkpoint{}, 0, nil
	}
	if err != nil {
		return Checkpoint{}, 0, err
	}
	var cp Checkpoint
	if err := json.Unmarshal(e.Value, &cp); err != nil {
		c.log.Error().Err(err).Str("key", key).Msg("checkpoint is not valid JSON; reading the shard from its oldest record (duplicates, no loss)")
		return Checkpoint{}, e.Revision, nil
	}
	return cp, e.Revision, nil
}

// saveCheckpoint writes cp if the stored revision is still rev (creating it when rev is
// 0). It returns the new revision, or errLost when another member wrote it.
func (c *consumer) saveCheckpoint(ctx context.Context, key string, cp Checkpoint, rev uint64) (uint64, error) {
	cp.Owner = c.member
	cp.Updated = time.Now().UTC()
	b, err := json.Marshal(cp)
	if err != nil {
		return 0, err
	}
	var nrev uint64
	if rev == 0 {
		nrev, err = c.b.opts.Checkpoints.Create(ctx, key, b)
	} else {
		nrev, err = c.b.opts.Checkpoints.Update(ctx, key, b, rev)
	}
	if errors.Is(err, kv.ErrExists) || errors.Is(err, kv.ErrConflict) || errors.Is(err, kv.ErrNotFound) {
		return 0, fmt.Errorf("%w: %s", errLost, key)
	}
	return nrev, err
}

// checkpoints returns the group's checkpoints by shard id.
func (c *consumer) checkpoints(ctx context.Context) (map[string]Checkpoint, error) {
	prefix := kv.Key("checkpoint", c.sub.Topic, c.sub.Group)
	entries, err := c.b.opts.Checkpoints.List(ctx, prefix)
	if err != nil {
		return nil, err
	}
	out := make(map[string]Checkpoint, len(entries))
	for _, e := range entries {
		shard := strings.TrimPrefix(e.Key, prefix+".")
		if strings.Contains(shard, ".") {
			continue
		}
		var cp Checkpoint
		if json.Unmarshal(e.Value, &cp) == nil {
			out[shard] = cp
		}
	}
	return out, nil
}
