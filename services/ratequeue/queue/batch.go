package queue

import (
	"context"
	"errors"

	"github.com/redis/go-redis/v9"
)

// call is one script call waiting for a node's batcher.
type call struct {
	script *redis.Script
	keys   []string
	args   []any
	wait   bool
	res    any
	err    error
	done   chan struct{}
}

func (c *Client) startBatchers(n *node) {
	if c.cfg.NoBatch {
		close(n.dead)
		return
	}
	n.calls = make(chan *call, c.cfg.Batchers*c.cfg.MaxBatch)
	left := make(chan struct{}, c.cfg.Batchers)
	for i := 0; i < c.cfg.Batchers; i++ {
		go func() {
			defer func() { left <- struct{}{} }()
			c.batchLoop(n)
		}()
	}
	go func() {
		for i := 0; i < c.cfg.Batchers; i++ {
			<-left
		}
		close(n.dead)
	}()
}

func (n *node) close() {
	n.closeOnce.Do(func() {
		close(n.stop)
		_ = n.rdb.Close()
	})
}

// batched hands a call to the node's batchers and waits for it.
func (c *Client) batched(ctx context.Context, n *node, s *redis.Script, wait bool, keys []string, args []any) (any, error) {
	cl := &call{script: s, keys: keys, args: args, wait: wait, done: make(chan struct{})}
	select {
	case n.calls <- cl:
	case <-n.stop:
		return nil, redis.ErrClosed
	case <-ctx.Done():
		return nil, ctx.Err() // never sent
	}
	select {
	case <-cl.done:
		return cl.res, cl.err
	case <-n.dead:
		select {
		case <-cl.done:
			return cl.res, cl.err
		default:
			return nil, redis.ErrClosed // queued but never taken: not sent
		}
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (c *Client) batchLoop(n *node) {
	batch := make([]*call, 0, c.cfg.MaxBatch)
	for {
		select {
		case <-n.stop:
			for {
				select {
				case cl := <-n.calls:
					cl.err = redis.ErrClosed
					close(cl.done)
				default:
					return
				}
			}
		case first := <-n.calls:
			batch = append(batch[:0], first)
		fill:
			for len(batch) < c.cfg.MaxBatch {
				select {
				case cl := <-n.calls:
					batch = append(batch, cl)
				default:
					break fill
				}
			}
			c.execBatch(n, batch)
			for _, cl := range batch {
				close(cl.done)
			}
		}
	}
}

// execBatch sends the batch as one pipeline (plus one WAIT for AckReplica). Calls
// that found their script missing (a restarted node) are loaded and sent again;
// the others ran exactly once.
func (c *Client) execBatch(n *node, batch []*call) {
	ctx, cancel := context.WithTimeout(context.Background(), c.cfg.AttemptTimeout)
	defer cancel()
	todo := batch
	for round := 0; round < 2 && len(todo) > 0; round++ {
		pipe := n.rdb.Pipeline()
		cmds := make([]*redis.Cmd, len(todo))
		wait := false
		for i, cl := range todo {
			cmds[i] = pipe.EvalSha(ctx, cl.script.Hash(), cl.keys, cl.args...)
			wait = wait || cl.wait
		}
		var w *redis.Cmd
		if wait && c.cfg.Ack == AckReplica {
			w = pipe.Do(ctx, "WAIT", 1, c.cfg.WaitTimeout.Milliseconds())
		}
		_, _ = pipe.Exec(ctx)
		var werr error
		if w != nil {
			nrep, err := w.Int64()
			switch {
			case err != nil:
				werr = err
			case nrep < 1:
				werr = errNotReplicated
			}
		}
		var again []*call
		loaded := map[*redis.Script]error{}
		for i, cl := range todo {
			res, err := cmds[i].Result()
			if err != nil && round == 0 && redis.HasErrorPrefix(err, "NOSCRIPT") {
				lerr, ok := loaded[cl.script]
				if !ok {
					lerr = cl.script.Load(ctx, n.rdb).Err()
					loaded[cl.script] = lerr
				}
				if lerr == nil {
					again = append(again, cl)
					continue
				}
				err = lerr
			}
			cl.res, cl.err = res, err
			if err == nil && cl.wait && werr != nil {
				cl.err = werr
			}
		}
		todo = again
	}
	for _, cl := range todo {
		if cl.err == nil && cl.res == nil {
			cl.err = errors.New("script not loaded")
		}
	}
}
