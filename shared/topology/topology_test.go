package topology

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/kv/memkv"
)

func threeShards() Map {
	var m Map
	for i := 0; i < 3; i++ {
		m.Shards = append(m.Shards, Shard{ID: fmt.Sprintf("shard-%d", i), Index: i, Epoch: 1,
			Primary: fmt.Sprintf("127.0.0.1:%d", 7000+2*i), Replicas: []string{fmt.Sprintf("127.0.0.1:%d", 7001+2*i)}})
	}
	return m
}

func TestIndexIsStableAndSpread(t *testing.T) {
	counts := make([]int, 3)
	for i := 0; i < 30000; i++ {
		k := fmt.Sprintf("+1555%07d", i)
		a, b := Index(k, 3), Index(k, 3)
		if a != b {
			t.Fatal("not stable")
		}
		counts[a]++
	}
	for i, c := range counts {
		if c < 9000 || c > 11000 {
			t.Fatalf("shard %d got %d of 30000 keys: %v", i, c, counts)
		}
	}
	// Growing from 3 to 4 shards moves only about a quarter of the keys.
	moved := 0
	for i := 0; i < 10000; i++ {
		k := fmt.Sprint("q", i)
		if Index(k, 3) != Index(k, 4) {
			moved++
		}
	}
	if moved > 3000 {
		t.Fatalf("%d of 10000 keys moved from 3 to 4 shards", moved)
	}
	if Index("x", 0) != 0 || Index("x", 1) != 0 {
		t.Fatal("degenerate sizes")
	}
}

func TestValidateReportsProblems(t *testing.T) {
	m := threeShards()
	m.Shards[1].Index = 0
	m.Shards[2].Primary = m.Shards[0].Primary
	m.Shards[0].Epoch = 0
	err := m.Validate()
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("want ErrInvalid, got %v", err)
	}
	if err := threeShards().Validate(); err != nil {
		t.Fatal(err)
	}
}

func TestStoreAdvanceIsConditional(t *testing.T) {
	ctx := context.Background()
	s := Store{KV: memkv.New()}
	if _, err := s.Seed(ctx, threeShards()); err != nil {
		t.Fatal(err)
	}
	cur, rev, err := s.Get(ctx, "shard-1")
	if err != nil {
		t.Fatal(err)
	}
	next := cur
	next.Epoch, next.Primary, next.Replicas = 2, cur.Replicas[0], []string{cur.Primary}
	if _, err := s.Advance(ctx, cur, rev, next); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Advance(ctx, cur, rev, next); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("second advance from the same revision: want ErrConflict, got %v", err)
	}
	if _, err := s.Advance(ctx, next, rev, cur); !errors.Is(err, ErrStaleEpoch) {
		t.Fatalf("going back an epoch: want ErrStaleEpoch, got %v", err)
	}
	// Seeding again leaves the advanced shard alone.
	created, _ := s.Seed(ctx, threeShards())
	if len(created) != 0 {
		t.Fatalf("re-seed created %v", created)
	}
	if got, _, _ := s.Get(ctx, "shard-1"); got.Epoch != 2 {
		t.Fatalf("re-seed reset the epoch to %d", got.Epoch)
	}
	if _, _, err := s.Get(ctx, "shard-9"); !errors.Is(err, ErrUnknownShard) {
		t.Fatalf("want ErrUnknownShard, got %v", err)
	}
}

func TestFollowerFollowsAndNeverGoesBack(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	store := memkv.New()
	s := Store{KV: store}
	if _, err := s.Seed(ctx, threeShards()); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "topology.json")
	f, err := Follow(ctx, FollowerConfig{Store: store, File: file, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	changed := f.Changed()
	cur, rev, _ := s.Get(ctx, "shard-0")
	next := cur
	next.Epoch, next.Primary, next.Replicas = 2, "127.0.0.1:7001", []string{"127.0.0.1:7000"}
	if _, err := s.Advance(ctx, cur, rev, next); err != nil {
		t.Fatal(err)
	}
	select {
	case <-changed:
	case <-time.After(5 * time.Second):
		t.Fatal("follower did not see the change")
	}
	if sh, _ := f.Shard("shard-0"); sh.Epoch != 2 || sh.Primary != "127.0.0.1:7001" {
		t.Fatalf("follower has %+v", sh)
	}
	if f.Apply(cur) {
		t.Fatal("an older epoch was applied")
	}
	// The fallback file holds the new map, and a follower without a store reads it.
	f2, err := Follow(ctx, FollowerConfig{File: file, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	if sh, _ := f2.Shard("shard-0"); sh.Epoch != 2 {
		t.Fatalf("fallback file has epoch %d", sh.Epoch)
	}
	if _, err := Follow(ctx, FollowerConfig{Store: memkv.New(), Log: zerolog.Nop()}); !errors.Is(err, ErrEmpty) {
		t.Fatalf("empty store without file: want ErrEmpty, got %v", err)
	}
}

func TestShardForUsesIndex(t *testing.T) {
	m := threeShards()
	for i := 0; i < 100; i++ {
		k := fmt.Sprint("k", i)
		sh, err := m.ShardFor(k)
		if err != nil || sh.Index != Index(k, 3) {
			t.Fatalf("%s -> %+v %v", k, sh, err)
		}
	}
	if _, err := (Map{}).ShardFor("x"); !errors.Is(err, ErrEmpty) {
		t.Fatal("empty map")
	}
}
