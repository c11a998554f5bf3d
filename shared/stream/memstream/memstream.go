// Package memstream is an in-memory stream backend for unit tests of service logic. It
// keeps the same guarantees as the real backends (it passes streamtest): per-key order
// through hash partitions, durable group positions, partition leases shared by the
// members of a group, redelivery with backoff and dead-lettering.
package memstream

import (
	"context"
	"fmt"
	"hash/fnv"
	"strconv"
	"sync"
	"time"

	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/lease"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/group"
)

var (
	_ stream.Backend   = (*Client)(nil)
	_ stream.Publisher = (*Client)(nil)
	_ stream.Consumer  = (*Client)(nil)
)

// Options tune a Server.
type Options struct {
	Partitions int           // per topic, default 8
	LeaseTTL   time.Duration // partition leases, default 2 s
	Log        zerolog.Logger
}

type record struct {
	msg       stream.Message
	published time.Time
}

type topic struct {
	parts [][]record
}

// Server is the shared in-memory stream; clients made by New share it like processes
// share a real server.
type Server struct {
	opts    Options
	mu      sync.Mutex
	topics  map[string]*topic
	offsets map[string]int // topic/group/partition -> next offset
	seen    map[string]bool
	notify  chan struct{}
	leases  *memkv.Store
}

// NewServer returns an empty server.
func NewServer(o Options) *Server {
	if o.Partitions <= 0 {
		o.Partitions = 8
	}
	if o.LeaseTTL <= 0 {
		o.LeaseTTL = 2 * time.Second
	}
	return &Server{opts: o, topics: map[string]*topic{}, offsets: map[string]int{}, seen: map[string]bool{},
		notify: make(chan struct{}), leases: memkv.New()}
}

// Client is one connection to a Server.
type Client struct {
	srv    *Server
	mu     sync.Mutex
	closed bool
	cancel []context.CancelFunc
}

// New returns a client of the server.
func (s *Server) New() *Client { return &Client{srv: s} }

// New returns a client of a fresh private server: the one-liner for unit tests.
func New() *Client { return NewServer(Options{}).New() }

func (s *Server) partition(key string) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(s.opts.Partitions))
}

func (s *Server) topicLocked(name string) *topic {
	t := s.topics[name]
	if t == nil {
		t = &topic{parts: make([][]record, s.opts.Partitions)}
		s.topics[name] = t
	}
	return t
}

// Publish appends one message.
func (c *Client) Publish(ctx context.Context, topicName string, m stream.Message) error {
	return c.PublishBatch(ctx, topicName, []stream.Message{m})
}

// PublishBatch appends msgs in order, all or nothing.
func (c *Client) PublishBatch(ctx context.Context, topicName string, msgs []stream.Message) error {
	for _, m := range msgs {
		if err := stream.CheckMessage(topicName, m); err != nil {
			return err
		}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	if c.isClosed() {
		return stream.ErrClosed
	}
	s := c.srv
	s.mu.Lock()
	t := s.topicLocked(topicName)
	now := time.Now()
	for _, m := range msgs {
		if m.ID != "" {
			k := topicName + "/" + m.ID
			if s.seen[k] {
				continue
			}
			s.seen[k] = true
		}
		m.Data = append([]byte(nil), m.Data...)
		p := s.partition(m.Key)
		t.parts[p] = append(t.parts[p], record{msg: m, published: now})
	}
	close(s.notify)
	s.notify = make(chan struct{})
	s.mu.Unlock()
	return nil
}

func (c *Client) isClosed() bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.closed
}

// Consume works this client's share of the group's partitions until ctx is done.
func (c *Client) Consume(ctx context.Context, sub stream.Subscription, h stream.Handler) error {
	if err := sub.Validate(); err != nil {
		return err
	}
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return stream.ErrClosed
	}
	ctx, cancel := context.WithCancel(ctx)
	c.cancel = append(c.cancel, cancel)
	c.mu.Unlock()
	defer cancel()
	s := c.srv
	s.mu.Lock()
	t := s.topicLocked(sub.Topic)
	for p := range t.parts {
		k := offsetKey(sub, p)
		if _, ok := s.offsets[k]; !ok && sub.Start == stream.StartLatest {
			s.offsets[k] = len(t.parts[p])
		}
	}
	s.mu.Unlock()
	member := sub.Instance
	if member == "" {
		member = fmt.Sprintf("m%p", c)
	}
	runner := stream.Runner{Group: sub.Group, Publish: c, Log: s.opts.Log}
	parts := make([]string, s.opts.Partitions)
	for i := range parts {
		parts[i] = strconv.Itoa(i)
	}
	return group.Run(ctx, group.Config{
		Leases: lease.Manager{Store: s.leases}, Prefix: "mem." + sub.Topic + "." + sub.Group,
		Member: group.MemberID(member), TTL: s.opts.LeaseTTL, Interval: s.opts.LeaseTTL / 8, Log: s.opts.Log,
		Partitions: func(context.Context) ([]string, error) { return parts, nil },
		Work: func(ctx context.Context, part string) {
			p, _ := strconv.Atoi(part)
			c.work(ctx, sub, p, runner, h)
		},
	})
}

func offsetKey(sub stream.Subscription, p int) string {
	return sub.Topic + "/" + sub.Group + "/" + strconv.Itoa(p)
}

func (c *Client) work(ctx context.Context, sub stream.Subscription, p int, runner stream.Runner, h stream.Handler) {
	s := c.srv
	key := offsetKey(sub, p)
	for ctx.Err() == nil {
		s.mu.Lock()
		off := s.offsets[key]
		recs := s.topicLocked(sub.Topic).parts[p]
		var rec *record
		if off < len(recs) {
			r := recs[off]
			rec = &r
		}
		wait := s.notify
		s.mu.Unlock()
		if rec == nil {
			select {
			case <-ctx.Done():
				return
			case <-wait:
			}
			continue
		}
		d := stream.Delivery{Message: rec.msg, Topic: sub.Topic, Partition: strconv.Itoa(p),
			Position: strconv.Itoa(off), Attempt: 1, Published: rec.published}
		if !runner.Handle(ctx, d, h) {
			return
		}
		s.mu.Lock()
		if s.offsets[key] == off {
			s.offsets[key] = off + 1
		}
		s.mu.Unlock()
	}
}

// Close stops this client's consumers and refuses further use.
func (c *Client) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.closed = true
	for _, cancel := range c.cancel {
		cancel()
	}
	return nil
}
