// Package rqtest builds Ratequeue test topologies on real redis-server processes:
// shards of a primary and replicas with min-replicas-to-write 1, stamped with their
// epochs, described in a memkv-backed topology store followed by a topology.Follower.
package rqtest

import (
	"context"
	"fmt"
	"net"
	"path/filepath"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/ratequeue/queue"
	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/topology"
)

// Directives every test node gets: an isolated primary refuses writes.
var Directives = [][2]string{{"min-replicas-to-write", "1"}, {"min-replicas-max-lag", "10"}}

// Cluster is a test fleet.
type Cluster struct {
	Shards   []*redistest.Shard
	Store    *memkv.Store
	Topo     topology.Store
	Follower *topology.Follower
	// File is a topology file written at start (the -topology-file of the CLI).
	File string
}

// Start starts n shards of a primary and one replica each.
func Start(t testing.TB, n int) *Cluster {
	t.Helper()
	c := &Cluster{Store: memkv.New()}
	c.Topo = topology.Store{KV: c.Store}
	var m topology.Map
	for i := 0; i < n; i++ {
		id := fmt.Sprintf("shard-%d", i)
		s := redistest.StartShard(t, id, 1, Directives...)
		c.Shards = append(c.Shards, s)
		Stamp(t, s.Primary, 1)
		m.Shards = append(m.Shards, topology.Shard{ID: id, Index: i, Epoch: 1, Primary: s.Primary.Addr(),
			Replicas: []string{s.Replicas[0].Addr()}})
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	if _, err := c.Topo.Seed(ctx, m); err != nil {
		t.Fatal(err)
	}
	c.File = filepath.Join(t.TempDir(), "topology.json")
	if err := topology.WriteFile(c.File, m); err != nil {
		t.Fatal(err)
	}
	f, err := topology.Follow(ctx, topology.FollowerConfig{Store: c.Store, Poll: 20 * time.Millisecond, Log: zerolog.Nop()})
	if err != nil {
		t.Fatal(err)
	}
	c.Follower = f
	return c
}

// Stamp stamps a node's epoch, waiting until min-replicas-to-write lets it (a fresh
// replica counts as good only after its first acknowledgement).
func Stamp(t testing.TB, n *redistest.Node, epoch uint64) {
	t.Helper()
	rdb := n.Client()
	var err error
	redistest.WaitFor(t, 15*time.Second, "stamping "+n.Name(), func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		err = queue.StampEpoch(ctx, rdb, epoch)
		return err == nil
	})
}

// Map is the current topology.
func (c *Cluster) Map() topology.Map { return c.Follower.Map() }

// Promote fails shard i over by hand, the way lazarus does: the replica stops
// replicating (REPLICAOF NO ONE) and is stamped with the next epoch (min-replicas-to-
// write is lowered for the stamp: the new primary has no replica yet), the old
// primary becomes its replica, and only then the topology advances to name it
// primary.
func (c *Cluster) Promote(t testing.TB, i int) topology.Shard {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	id := fmt.Sprintf("shard-%d", i)
	cur, rev, err := c.Topo.Get(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	s := c.Shards[i]
	var newP *redistest.Node
	for _, n := range s.Nodes() {
		if n.Addr() == cur.Replicas[0] {
			newP = n
		}
	}
	if newP == nil {
		t.Fatalf("rqtest: no node %s", cur.Replicas[0])
	}
	rdb := newP.Client()
	if err := rdb.ReplicaOf(ctx, "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
		t.Fatal(err)
	}
	if err := queue.StampEpoch(ctx, rdb, cur.Epoch+1); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ConfigSet(ctx, "min-replicas-to-write", "1").Err(); err != nil {
		t.Fatal(err)
	}
	oldP := c.Node(t, i, cur.Primary)
	host, port, _ := net.SplitHostPort(cur.Replicas[0])
	if err := oldP.Client().ReplicaOf(ctx, host, port).Err(); err != nil {
		t.Fatal(err)
	}
	redistest.WaitFor(t, 15*time.Second, "old primary replicates from the new one", func() bool {
		i := oldP.Info()
		return i.LinkUp && !i.SyncInProgress
	})
	// Wait until the new primary counts its replica as good (writes accepted).
	Stamp(t, newP, cur.Epoch+1)
	next := cur
	next.Epoch, next.Primary, next.Replicas = cur.Epoch+1, cur.Replicas[0], []string{cur.Primary}
	next.Reason = "test failover"
	if _, err := c.Topo.Advance(ctx, cur, rev, next); err != nil {
		t.Fatal(err)
	}
	return next
}

// Node returns the node of shard i with the given address.
func (c *Cluster) Node(t testing.TB, i int, addr string) *redistest.Node {
	t.Helper()
	for _, n := range c.Shards[i].Nodes() {
		if n.Addr() == addr {
			return n
		}
	}
	t.Fatalf("rqtest: shard %d has no node %s", i, addr)
	return nil
}
