// Package redistest starts real redis-server processes for tests: single nodes and
// shards of a primary with replicas, on free loopback ports, stopped by t.Cleanup.
// A missing redis-server fails the test with the command that installs it; it never
// skips.
package redistest

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/redisproc"
)

// Node is a test's redis-server.
type Node struct {
	*redisproc.Process
	t testing.TB
}

// Start starts one node. cfg.Dir defaults to a fresh temporary directory.
func Start(t testing.TB, cfg redisproc.Config) *Node {
	t.Helper()
	if cfg.Dir == "" {
		cfg.Dir = t.TempDir()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	p, err := redisproc.Start(ctx, cfg)
	if err != nil {
		t.Fatalf("redistest: %v", err)
	}
	t.Cleanup(func() { _ = p.Kill() })
	return &Node{Process: p, t: t}
}

// Client returns a go-redis client for the node, closed at cleanup. It does not retry,
// so tests see each failure.
func (n *Node) Client() *redis.Client {
	c := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1, DialTimeout: time.Second,
		ReadTimeout: 2 * time.Second, ContextTimeoutEnabled: true})
	n.t.Cleanup(func() { _ = c.Close() })
	return c
}

// Info reads the node's INFO, failing the test on error.
func (n *Node) Info() redisinfo.Node {
	n.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: n.Addr(), MaxRetries: -1})
	defer c.Close()
	info, err := redisinfo.Read(ctx, c)
	if err != nil {
		n.t.Fatalf("redistest: INFO %s: %v", n.Name(), err)
	}
	return info
}

// Shard is a primary and its replicas.
type Shard struct {
	Primary  *Node
	Replicas []*Node
}

// Nodes returns the primary then the replicas.
func (s *Shard) Nodes() []*Node { return append([]*Node{s.Primary}, s.Replicas...) }

// StartShard starts a primary and n replicas of it and waits until every replica's
// link is up. directives apply to every node (for example {"min-replicas-to-write","1"}).
func StartShard(t testing.TB, name string, replicas int, directives ...[2]string) *Shard {
	t.Helper()
	dir := t.TempDir()
	s := &Shard{Primary: Start(t, redisproc.Config{Name: name + "-primary", Dir: dir, Directives: directives})}
	for i := 0; i < replicas; i++ {
		s.Replicas = append(s.Replicas, Start(t, redisproc.Config{Name: fmt.Sprintf("%s-replica%d", name, i+1), Dir: dir,
			ReplicaOf: s.Primary.Addr(), Directives: directives}))
	}
	for _, r := range s.Replicas {
		WaitFor(t, 15*time.Second, "replica "+r.Name()+" link up", func() bool {
			i := r.Info()
			return i.LinkUp && !i.SyncInProgress
		})
	}
	return s
}

// WaitFor polls cond every 20 ms until it holds, failing the test after timeout.
func WaitFor(t testing.TB, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
