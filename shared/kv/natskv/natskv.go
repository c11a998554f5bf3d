// Package natskv is the kv.Store of the NATS profile: a JetStream key-value bucket
// (default "heartline"). It maps the kv port exactly: Create fails with kv.ErrExists,
// conditional writes compare the key's revision (the JetStream sequence of its last
// write) and fail with kv.ErrConflict, a deleted key reads as kv.ErrNotFound, and Watch
// is a native push watch (the topology follower sees a failover within milliseconds).
package natskv

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/kv"
)

var (
	_ kv.Store   = (*Store)(nil)
	_ kv.Watcher = (*Store)(nil)
)

// DefaultBucket is the bucket Heartline keeps its coordination state in.
const DefaultBucket = "heartline"

// Options configure New. Give either Conn (shared, not closed by Close) or URL.
type Options struct {
	URL  string
	Conn *nats.Conn
	// Name is the connection name when New dials URL.
	Name string
	// Bucket is the KV bucket (default "heartline"), created when missing.
	Bucket string
	// History is how many revisions per key the bucket keeps (default 5, for operators
	// reading `nats kv history`; the port itself only needs the latest).
	History uint8
	// Replicas of the bucket's stream (default 1; 3 on a NATS cluster).
	Replicas int
	Log      zerolog.Logger
}

// Store is a kv.Store on a JetStream KV bucket.
type Store struct {
	nc      *nats.Conn
	ownConn bool
	kv      jetstream.KeyValue
	log     zerolog.Logger
	mu      sync.Mutex
	closed  bool
}

// New opens (creating if needed) the bucket. Concurrent callers creating the same
// bucket both succeed.
func New(ctx context.Context, o Options) (*Store, error) {
	if o.Bucket == "" {
		o.Bucket = DefaultBucket
	}
	if o.History == 0 {
		o.History = 5
	}
	if o.Replicas <= 0 {
		o.Replicas = 1
	}
	nc, own := o.Conn, false
	if nc == nil {
		var err error
		if nc, err = Dial(ctx, o.URL, DialOptions{Name: o.Name, Log: o.Log}); err != nil {
			return nil, fmt.Errorf("not opening the kv bucket %s: %w", o.Bucket, err)
		}
		own = true
	}
	js, err := jetstream.New(nc)
	if err != nil {
		if own {
			nc.Close()
		}
		return nil, fmt.Errorf("not opening the kv bucket %s: %w", o.Bucket, err)
	}
	b, err := openBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      o.Bucket,
		Description: "Heartline coordination state (topology, leases, checkpoints)",
		History:     o.History,
		Replicas:    o.Replicas,
		Storage:     jetstream.FileStorage,
	})
	if err != nil {
		if own {
			nc.Close()
		}
		return nil, fmt.Errorf("not opening the kv bucket %s: %w", o.Bucket, err)
	}
	return &Store{nc: nc, ownConn: own, kv: b, log: o.Log.With().Str("kv_bucket", o.Bucket).Logger()}, nil
}

// openBucket binds to an existing bucket as it is (another process may have created it
// with other settings; it is not changed under it) or creates it.
func openBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	for attempt := 0; ; attempt++ {
		b, err := js.KeyValue(ctx, cfg.Bucket)
		if err == nil {
			return b, nil
		}
		if !errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, err
		}
		b, err = js.CreateKeyValue(ctx, cfg)
		if err == nil {
			return b, nil
		}
		// A concurrent creator with another configuration won the race: bind to it.
		if attempt < 3 && (errors.Is(err, jetstream.ErrBucketExists) || errors.Is(err, jetstream.ErrStreamNameAlreadyInUse)) {
			continue
		}
		return nil, err
	}
}

// Close closes the connection if New dialed it.
func (s *Store) Close() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil
	}
	s.closed = true
	if s.ownConn {
		s.nc.Close()
	}
	return nil
}

// Get returns the key's current entry, or kv.ErrNotFound (also for a deleted key).
func (s *Store) Get(ctx context.Context, key string) (kv.Entry, error) {
	if err := kv.ValidKey(key); err != nil {
		return kv.Entry{}, err
	}
	e, err := s.kv.Get(ctx, key)
	if err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return kv.Entry{}, kv.ErrNotFound
		}
		return kv.Entry{}, fmt.Errorf("kv get %s: %w", key, err)
	}
	return entry(key, e.Value(), e.Revision()), nil
}

// Create writes key only if it does not exist (or was deleted).
func (s *Store) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	if err := kv.ValidKey(key); err != nil {
		return 0, err
	}
	rev, err := s.kv.Create(ctx, key, value)
	if err != nil {
		if isWrongLastSeq(err) || errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("kv create %s: %w", key, kv.ErrExists)
		}
		return 0, fmt.Errorf("kv create %s: %w", key, err)
	}
	return rev, nil
}

// Update writes key only if its revision is still rev. A deleted key conflicts, even
// when rev is the revision of its delete marker.
func (s *Store) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	if err := kv.ValidKey(key); err != nil {
		return 0, err
	}
	// JetStream's compare-and-set would accept the revision of a delete marker; the port
	// says a deleted key conflicts. A live entry at rev read here cannot turn into a
	// delete marker at rev later (a delete gets a new revision), so the check is exact.
	cur, err := s.kv.Get(ctx, key)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted):
		return 0, fmt.Errorf("kv update %s: key does not exist: %w", key, kv.ErrConflict)
	case err != nil:
		return 0, fmt.Errorf("kv update %s: %w", key, err)
	case cur.Revision() != rev:
		return 0, fmt.Errorf("kv update %s: revision %d, want %d: %w", key, cur.Revision(), rev, kv.ErrConflict)
	}
	nrev, err := s.kv.Update(ctx, key, value, rev)
	if err != nil {
		if isWrongLastSeq(err) || errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("kv update %s: %w", key, kv.ErrConflict)
		}
		return 0, fmt.Errorf("kv update %s: %w", key, err)
	}
	return nrev, nil
}

// Put writes key unconditionally.
func (s *Store) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	if err := kv.ValidKey(key); err != nil {
		return 0, err
	}
	rev, err := s.kv.Put(ctx, key, value)
	if err != nil {
		return 0, fmt.Errorf("kv put %s: %w", key, err)
	}
	return rev, nil
}

// Delete removes key if its revision is rev (rev 0: unconditionally; a missing key is
// then not an error and writes nothing).
func (s *Store) Delete(ctx context.Context, key string, rev uint64) error {
	if err := kv.ValidKey(key); err != nil {
		return err
	}
	if rev == 0 {
		// Skip the delete marker for a key that is not there.
		if _, err := s.kv.Get(ctx, key); errors.Is(err, jetstream.ErrKeyNotFound) || errors.Is(err, jetstream.ErrKeyDeleted) {
			return nil
		}
		if err := s.kv.Delete(ctx, key); err != nil {
			return fmt.Errorf("kv delete %s: %w", key, err)
		}
		return nil
	}
	if err := s.kv.Delete(ctx, key, jetstream.LastRevision(rev)); err != nil {
		if isWrongLastSeq(err) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
			return fmt.Errorf("kv delete %s at revision %d: %w", key, rev, kv.ErrConflict)
		}
		return fmt.Errorf("kv delete %s: %w", key, err)
	}
	return nil
}

// filters returns the subject filters (relative to the bucket) of a whole-token prefix.
func filters(prefix string) ([]string, error) {
	if prefix == "" {
		return []string{">"}, nil
	}
	if err := kv.ValidKey(prefix); err != nil {
		return nil, fmt.Errorf("prefix: %w", err)
	}
	return []string{prefix, prefix + ".>"}, nil
}

// List returns the live entries under prefix, sorted by key.
func (s *Store) List(ctx context.Context, prefix string) ([]kv.Entry, error) {
	f, err := filters(prefix)
	if err != nil {
		return nil, err
	}
	w, err := s.kv.WatchFiltered(ctx, clone(f), jetstream.IgnoreDeletes())
	if err != nil {
		return nil, fmt.Errorf("kv list %s: %w", prefix, err)
	}
	defer stopWatcher(w)
	var out []kv.Entry
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("kv list %s: watch closed before the initial values were read", prefix)
			}
			if e == nil {
				sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
				return out, nil
			}
			if e.Operation() == jetstream.KeyValuePut {
				out = append(out, entry(e.Key(), e.Value(), e.Revision()))
			}
		case <-ctx.Done():
			return nil, fmt.Errorf("kv list %s: %w", prefix, ctx.Err())
		}
	}
}

// Watch sends the live entries under prefix, then every change (a deleted key as an
// Entry with a nil Value and the delete's revision) until ctx is done; then it closes
// the channel. A consumer that does not keep up holds the watch back; it loses nothing.
// After a reconnect (a restarted server) the watch resumes after the last revision it
// sent, at once rather than when JetStream's heartbeats notice the gap.
func (s *Store) Watch(ctx context.Context, prefix string) (<-chan kv.Entry, error) {
	f, err := filters(prefix)
	if err != nil {
		return nil, err
	}
	w, err := s.kv.WatchFiltered(ctx, clone(f))
	if err != nil {
		return nil, fmt.Errorf("kv watch %s: %w", prefix, err)
	}
	status := s.nc.StatusChanged(nats.CONNECTED)
	out := make(chan kv.Entry, 64)
	go func() {
		defer close(out)
		defer s.nc.RemoveStatusListener(status)
		defer func() { stopWatcher(w) }()
		initial := true
		var last uint64
		for {
			select {
			case <-ctx.Done():
				return
			case <-status:
				stopWatcher(w)
				if w = s.resume(ctx, prefix, f, last); w == nil {
					return
				}
				initial = false
			case e, ok := <-w.Updates():
				if !ok {
					if ctx.Err() == nil && s.nc.IsClosed() {
						s.log.Warn().Str("prefix", prefix).Msg("kv watch ended: the NATS connection is closed")
						return
					}
					if w = s.resume(ctx, prefix, f, last); w == nil {
						return
					}
					initial = false
					continue
				}
				if e == nil {
					initial = false
					continue
				}
				var x kv.Entry
				if e.Operation() == jetstream.KeyValuePut {
					x = entry(e.Key(), e.Value(), e.Revision())
				} else if initial {
					continue // a key deleted before the watch started is not a current entry
				} else {
					x = kv.Entry{Key: e.Key(), Revision: e.Revision()}
				}
				if e.Revision() <= last {
					continue // already sent before a resume
				}
				last = e.Revision()
				select {
				case out <- x:
				case <-ctx.Done():
					return
				}
			}
		}
	}()
	return out, nil
}

// resume watches again from the revision after last, retrying until ctx ends (nil).
func (s *Store) resume(ctx context.Context, prefix string, f []string, last uint64) jetstream.KeyWatcher {
	var opts []jetstream.WatchOpt
	if last > 0 {
		opts = append(opts, jetstream.ResumeFromRevision(last+1))
	}
	for attempt := 1; ; attempt++ {
		w, err := s.kv.WatchFiltered(ctx, clone(f), opts...)
		if err == nil {
			return w
		}
		if ctx.Err() != nil || s.nc.IsClosed() {
			return nil
		}
		if attempt == 1 || attempt%20 == 0 {
			s.log.Warn().Err(err).Str("prefix", prefix).Int("attempt", attempt).Msg("kv watch not resumed yet; retrying")
		}
		if backoff.Sleep(ctx, resumeRetry.Delay(attempt)) != nil {
			return nil
		}
	}
}

var resumeRetry = backoff.Policy{Initial: 50 * time.Millisecond, Max: 2 * time.Second}

// stopWatcher unsubscribes and drains what the watcher still has, so that its delivery
// callback (which blocks on a full channel) can finish.
func stopWatcher(w jetstream.KeyWatcher) {
	_ = w.Stop()
	go func() {
		t := time.NewTimer(time.Minute)
		defer t.Stop()
		for {
			select {
			case _, ok := <-w.Updates():
				if !ok {
					return
				}
			case <-t.C:
				return
			}
		}
	}()
}

func entry(key string, value []byte, rev uint64) kv.Entry {
	v := make([]byte, len(value))
	copy(v, value)
	return kv.Entry{Key: key, Value: v, Revision: rev}
}

func isWrongLastSeq(err error) bool {
	var api *jetstream.APIError
	if !errors.As(err, &api) {
		return false
	}
	return api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		api.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant
}

// clone copies filters: WatchFiltered rewrites the slice it is given in place.
func clone(f []string) []string { return append([]string(nil), f...) }
