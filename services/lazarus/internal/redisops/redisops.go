// Package redisops is everything lazarus does to Redis nodes: its own checks (INFO and
// the epoch key), promotion, repointing, fencing, stamping the epoch, verifying that a
// write is replicated, and pausing writes for a switchover.
//
// Every call opens a fresh client to the node and closes it afterwards: a failover must
// never wait behind a pool that remembers failed dials (go-redis fails fast for about a
// second after PoolSize failed dials), and a node that refuses connections must cost one
// refused dial, not retries. Clients use ContextTimeoutEnabled so that a node that
// accepts connections but never answers (SIGSTOP) costs exactly the check timeout.
package redisops

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heartline/heartline/services/lazarus/internal/decide"
	"github.com/heartline/heartline/shared/redisinfo"
)

// EpochKey is where each primary holds its failover epoch (see docs/design.md).
const EpochKey = "heartline:epoch"

// VerifyKey is written by the verify step.
const VerifyKey = "heartline:verify"

// FenceMinReplicas is the min-replicas-to-write a fenced primary gets: no shard has
// that many replicas, so it refuses every write with NOREPLICAS.
const FenceMinReplicas = 1000000

// Errors.
var (
	// ErrEpochAhead: the node already holds a higher epoch than the one being stamped.
	ErrEpochAhead = errors.New("node holds a higher epoch")
	// ErrNotCaughtUp: a replica did not reach the primary's offset in time.
	ErrNotCaughtUp = errors.New("replica did not catch up")
)

// Ops runs commands against nodes.
type Ops struct {
	// CheckTimeout bounds one check of one node (dial + INFO); default 200 ms.
	CheckTimeout time.Duration
	// ActionTimeout bounds one action on a node; default 2 s.
	ActionTimeout time.Duration
	// Park is the park address the agents use (zero: redisinfo.DefaultPark); replicas
	// pointed at it, at the default or at the legacy address count as parked.
	Park redisinfo.Park
}

func (o Ops) checkTimeout() time.Duration {
	if o.CheckTimeout <= 0 {
		return 200 * time.Millisecond
	}
	return o.CheckTimeout
}

func (o Ops) actionTimeout() time.Duration {
	if o.ActionTimeout <= 0 {
		return 2 * time.Second
	}
	return o.ActionTimeout
}

// Client returns a fresh client for addr tuned for failover: one dial attempt, no
// command retries, socket timeouts that follow the context.
func Client(addr string, timeout time.Duration) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: addr, Protocol: 2, DisableIdentity: true,
		DialTimeout: timeout, ReadTimeout: timeout, WriteTimeout: timeout,
		DialerRetries: 1, MaxRetries: -1, PoolSize: 2, MinIdleConns: 0,
		ContextTimeoutEnabled: true,
	})
}

func (o Ops) with(ctx context.Context, addr string, timeout time.Duration, f func(ctx context.Context, c *redis.Client) error) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := Client(addr, timeout)
	defer c.Close()
	return f(ctx, c)
}

// Check reads a node's state; an error leaves Reachable false with the reason in Err.
func (o Ops) Check(ctx context.Context, addr string) decide.Node {
	n := decide.Node{Addr: addr, AckedOffset: -1, MinReplicasToWrite: -1}
	err := o.with(ctx, addr, o.checkTimeout(), func(ctx context.Context, c *redis.Client) error {
		pipe := c.Pipeline()
		info := pipe.Info(ctx, "server", "replication", "keyspace")
		ep := pipe.Get(ctx, EpochKey)
		mr := pipe.ConfigGet(ctx, "min-replicas-to-write")
		_, _ = pipe.Exec(ctx)
		if err := info.Err(); err != nil {
			if strings.HasPrefix(err.Error(), "LOADING") {
				n.Reachable, n.Loading = true, true
				return nil
			}
			return err
		}
		ri, err := redisinfo.Parse(info.Val())
		if err != nil {
			return err
		}
		fill(&n, ri, o.Park)
		if v, err := ep.Uint64(); err == nil {
			n.Epoch = v
		}
		if m, err := mr.Result(); err == nil {
			if v, err := strconv.Atoi(m["min-replicas-to-write"]); err == nil {
				n.MinReplicasToWrite = v
			}
		}
		return nil
	})
	if err != nil {
		n.Reachable, n.Err = false, describe(err)
	}
	return n
}

func fill(n *decide.Node, ri redisinfo.Node, park redisinfo.Park) {
	n.Reachable = true
	n.Loading = ri.Loading
	n.Role = ri.Role
	n.MasterAddr = ri.MasterAddr()
	n.Parked = park.Holds(ri)
	n.LinkUp = ri.LinkUp
	n.SyncInProgress = ri.SyncInProgress
	n.RunID, n.ReplID, n.ReplID2 = ri.RunID, ri.ReplID, ri.ReplID2
	n.Offset, n.Keys = ri.Offset, ri.Keys
	for _, r := range ri.Replicas {
		if r.State != "online" {
			continue
		}
		n.AttachedReplicas++
		if r.Offset > n.AckedOffset {
			n.AckedOffset = r.Offset
		}
	}
}

// CheckAll checks every address in parallel; the result keeps the order of addrs.
func (o Ops) CheckAll(ctx context.Context, addrs []string) []decide.Node {
	out := make([]decide.Node, len(addrs))
	var wg sync.WaitGroup
	for i, a := range addrs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			out[i] = o.Check(ctx, a)
		}()
	}
	wg.Wait()
	return out
}

// Promote turns addr into a primary (REPLICAOF NO ONE) and persists it in the node's
// config file when it has one. Promoting a primary is a no-op.
func (o Ops) Promote(ctx context.Context, addr string) error {
	return o.with(ctx, addr, o.actionTimeout(), func(ctx context.Context, c *redis.Client) error {
		if err := c.SlaveOf(ctx, "NO", "ONE").Err(); err != nil {
			return fmt.Errorf("REPLICAOF NO ONE on %s: %w", addr, err)
		}
		return rewrite(ctx, c)
	})
}

// ReplicaOf makes addr a replica of primary and persists it.
func (o Ops) ReplicaOf(ctx context.Context, addr, primary string) error {
	host, port, err := net.SplitHostPort(primary)
	if err != nil {
		return fmt.Errorf("primary address %q: %w", primary, err)
	}
	return o.with(ctx, addr, o.actionTimeout(), func(ctx context.Context, c *redis.Client) error {
		if err := c.SlaveOf(ctx, host, port).Err(); err != nil {
			return fmt.Errorf("REPLICAOF %s on %s: %w", primary, addr, err)
		}
		return rewrite(ctx, c)
	})
}

// rewrite persists the running configuration; a node started without a config file
// has nothing to persist.
func rewrite(ctx context.Context, c *redis.Client) error {
	err := c.ConfigRewrite(ctx).Err()
	if err != nil && strings.Contains(err.Error(), "without a config file") {
		return nil
	}
	if err != nil {
		return fmt.Errorf("CONFIG REWRITE: %w", err)
	}
	return nil
}

// MinReplicas reads a node's min-replicas-to-write.
func (o Ops) MinReplicas(ctx context.Context, addr string) (int, error) {
	var n int
	err := o.with(ctx, addr, o.actionTimeout(), func(ctx context.Context, c *redis.Client) error {
		var err error
		n, err = getMinReplicas(ctx, c)
		return err
	})
	return n, err
}

func getMinReplicas(ctx context.Context, c *redis.Client) (int, error) {
	m, err := c.ConfigGet(ctx, "min-replicas-to-write").Result()
	if err != nil {
		return 0, fmt.Errorf("CONFIG GET min-replicas-to-write: %w", err)
	}
	return strconv.Atoi(m["min-replicas-to-write"])
}

// SetMinReplicas sets a node's min-replicas-to-write (FenceMinReplicas fences it).
func (o Ops) SetMinReplicas(ctx context.Context, addr string, n int) error {
	return o.with(ctx, addr, o.actionTimeout(), func(ctx context.Context, c *redis.Client) error {
		if err := c.ConfigSet(ctx, "min-replicas-to-write", strconv.Itoa(n)).Err(); err != nil {
			return fmt.Errorf("CONFIG SET min-replicas-to-write %d on %s: %w", n, addr, err)
		}
		return nil
	})
}

// StampEpoch writes epoch into the primary's heartline:epoch. A primary that refuses
// writes for lack of replicas (a shard whose only replica is being promoted) gets the
// stamp through a brief min-replicas-to-write 0: it is not routed yet, so no client
// writes to it meanwhile. It refuses to move the stamp backwards.
func (o Ops) StampEpoch(ctx context.Context, addr string, epoch uint64) error {
	return o.with(ctx, addr, o.actionTimeout(), func(ctx context.Context, c *redis.Client) error {
		cur, err := c.Get(ctx, EpochKey).Uint64()
		if err == nil && cur > epoch {
			return fmt.Errorf("%w: %s holds epoch %d, not stamping %d", ErrEpochAhead, addr, cur, epoch)
		}
		err = c.Set(ctx, EpochKey, epoch, 0).Err()
		if err == nil || !strings.HasPrefix(err.Error(), "NOREPLICAS") {
			return err
		}
		saved, gerr := getMinReplicas(ctx, c)
		if gerr != nil {
			return gerr
		}
		if err := c.ConfigSet(ctx, "min-replicas-to-write", "0").Err(); err != nil {
			return err
		}
		serr := c.Set(ctx, EpochKey, epoch, 0).Err()
		if err := c.ConfigSet(ctx, "min-replicas-to-write", strconv.Itoa(saved)).Err(); err != nil {
			return fmt.Errorf("restoring min-replicas-to-write %d on %s: %w", saved, addr, err)
		}
		return serr
	})
}

// Epoch reads a node's heartline:epoch (0 when absent).
func (o Ops) Epoch(ctx context.Context, addr string) (uint64, error) {
	var e uint64
	err := o.with(ctx, addr, o.actionTimeout(), func(ctx context.Context, c *redis.Client) error {
		v, err := c.Get(ctx, EpochKey).Uint64()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		e = v
		return err
	})
	return e, err
}

// Verify writes value to VerifyKey on the primary and waits up to wait for one replica
// to acknowledge it (WAIT 1). It returns the number of replicas that acknowledged.
func (o Ops) Verify(ctx context.Context, addr, value string, wait time.Duration) (int64, error) {
	var n int64
	err := o.with(ctx, addr, o.actionTimeout()+wait, func(ctx context.Context, c *redis.Client) error {
		if err := c.Set(ctx, VerifyKey, value, 0).Err(); err != nil {
			return fmt.Errorf("SET %s on %s: %w", VerifyKey, addr, err)
		}
		var err error
		n, err = c.Wait(ctx, 1, wait).Result()
		if err != nil {
			return fmt.Errorf("WAIT 1 on %s: %w", addr, err)
		}
		return nil
	})
	return n, err
}

// PauseWrites runs CLIENT PAUSE <d> WRITE: writes block (reads go on) until
// UnpauseWrites or until d passes, so a crashed switchover unpauses on its own.
func (o Ops) PauseWrites(ctx context.Context, addr string, d time.Duration) error {
	return o.with(ctx, addr, o.actionTimeout(), func(ctx context.Context, c *redis.Client) error {
		return c.Do(ctx, "CLIENT", "PAUSE", d.Milliseconds(), "WRITE").Err()
	})
}

// UnpauseWrites runs CLIENT UNPAUSE.
func (o Ops) UnpauseWrites(ctx context.Context, addr string) error {
	return o.with(ctx, addr, o.actionTimeout(), func(ctx context.Context, c *redis.Client) error {
		return c.ClientUnpause(ctx).Err()
	})
}

// WaitCaughtUp polls until replica's offset equals primary's (writes must be paused on
// the primary), or until timeout.
func (o Ops) WaitCaughtUp(ctx context.Context, primary, replica string, timeout time.Duration) (int64, error) {
	deadline := time.Now().Add(timeout)
	for {
		nodes := o.CheckAll(ctx, []string{primary, replica})
		p, r := nodes[0], nodes[1]
		if p.Reachable && r.Reachable && p.Offset > 0 && r.Offset == p.Offset {
			return p.Offset, nil
		}
		if time.Now().After(deadline) {
			return 0, fmt.Errorf("%w: %s at %d, primary %s at %d after %s (%s%s)", ErrNotCaughtUp, replica, r.Offset, primary, p.Offset, timeout, p.Err, r.Err)
		}
		select {
		case <-ctx.Done():
			return 0, ctx.Err()
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// describe shortens network errors for decisions and logs.
func describe(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return "timeout: " + err.Error()
	}
	return err.Error()
}
