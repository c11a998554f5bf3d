package agent

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// nodeClient is a go-redis client of one node, tuned so that a dead or paused node
// costs at most the caller's context timeout: no retries, one dial attempt, socket
// timeouts that follow the context. After a network error the client is replaced, so
// the next probe dials afresh: go-redis's pool otherwise stops dialing for about a
// second after PoolSize failed dials, which would hide a primary that came back.
type nodeClient struct {
	addr    string
	pool    int
	timeout time.Duration // dial and socket timeouts; each call's context bounds them further
	mu      sync.Mutex
	c       *redis.Client
}

func newNodeClient(addr string, pool int, timeout time.Duration) *nodeClient {
	return &nodeClient{addr: addr, pool: pool, timeout: timeout}
}

func (n *nodeClient) options() *redis.Options {
	return &redis.Options{
		Addr:                  n.addr,
		Protocol:              2,
		DisableIdentity:       true,
		MaxRetries:            -1,
		DialerRetries:         1,
		DialTimeout:           n.timeout,
		ReadTimeout:           n.timeout,
		WriteTimeout:          n.timeout,
		ContextTimeoutEnabled: true,
		PoolSize:              n.pool,
		PoolTimeout:           time.Second,
		ConnMaxIdleTime:       -1,
	}
}

// get returns the current client.
func (n *nodeClient) get() *redis.Client {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.c == nil {
		n.c = redis.NewClient(n.options())
	}
	return n.c
}

// failed records err from a call on c: a network error replaces the client.
func (n *nodeClient) failed(c *redis.Client, err error) {
	if err == nil || isReply(err) {
		return
	}
	n.mu.Lock()
	if n.c == c {
		n.c = nil
	}
	n.mu.Unlock()
	_ = c.Close()
}

// Close closes the client.
func (n *nodeClient) Close() {
	n.mu.Lock()
	c := n.c
	n.c = nil
	n.mu.Unlock()
	if c != nil {
		_ = c.Close()
	}
}

// isReply reports whether err is an error reply of Redis (the node answered).
func isReply(err error) bool {
	var re redis.Error
	return errors.As(err, &re) && !isNetErr(err)
}

func isNetErr(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) || errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}

// classify names a probe error for metrics: timeout, refused, loading or error.
func classify(err error) string {
	switch {
	case err == nil:
		return resultOK
	case errors.Is(err, context.DeadlineExceeded) || errors.Is(err, os.ErrDeadlineExceeded):
		return resultTimeout
	case errors.Is(err, syscall.ECONNREFUSED):
		return resultRefused
	case strings.HasPrefix(err.Error(), "LOADING"):
		return resultLoading
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return resultTimeout
	}
	return resultError
}

// addrMatcher compares host:port addresses the way Redis would reach them: equal
// strings, or the same port and hosts that resolve to a common IP. It never blocks: a
// host name not resolved yet is looked up in the background (bounded to 1 s) and
// compares by string until then; results are kept for a minute (failures for five
// seconds) and refreshed in the background. Topologies and replicaof lines that spell
// addresses the same way never need a lookup.
type addrMatcher struct {
	mu    sync.Mutex
	cache map[string]*resolved
}

type resolved struct {
	ips     []string
	at      time.Time
	ok      bool
	pending bool
}

func newAddrMatcher() *addrMatcher { return &addrMatcher{cache: map[string]*resolved{}} }

func (m *addrMatcher) same(a, b string) bool {
	if a == "" || b == "" {
		return false
	}
	if a == b {
		return true
	}
	ha, pa, err1 := net.SplitHostPort(a)
	hb, pb, err2 := net.SplitHostPort(b)
	if err1 != nil || err2 != nil || pa != pb {
		return false
	}
	ia, ib := m.ips(ha), m.ips(hb)
	for _, x := range ia {
		for _, y := range ib {
			if x == y {
				return true
			}
		}
	}
	return false
}

func (m *addrMatcher) ips(host string) []string {
	if ip := net.ParseIP(host); ip != nil {
		return []string{ip.String()}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.cache[host]
	if r == nil {
		r = &resolved{}
		m.cache[host] = r
	}
	fresh := r.ok && time.Since(r.at) < time.Minute || !r.ok && time.Since(r.at) < 5*time.Second
	if !fresh && !r.pending {
		r.pending = true
		go m.lookup(host)
	}
	return r.ips
}

func (m *addrMatcher) lookup(host string) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	addrs, err := net.DefaultResolver.LookupHost(ctx, host)
	var ips []string
	for _, s := range addrs {
		if ip := net.ParseIP(s); ip != nil {
			ips = append(ips, ip.String())
		}
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	r := m.cache[host]
	r.pending, r.at, r.ok = false, time.Now(), err == nil
	if err == nil {
		r.ips = ips
	}
}
