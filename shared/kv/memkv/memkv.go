// Package memkv is an in-memory kv.Store for unit tests of service logic. It watches
// natively, so tests see changes at once.
package memkv

import (
	"context"
	"sort"
	"sync"

	"github.com/heartline/heartline/shared/kv"
)

var (
	_ kv.Store   = (*Store)(nil)
	_ kv.Watcher = (*Store)(nil)
)

// Store is an in-memory store. The zero value is not usable; call New.
type Store struct {
	mu       sync.Mutex
	rev      uint64
	data     map[string]kv.Entry
	watchers map[*watcher]struct{}
}

type watcher struct {
	prefix string
	ch     chan kv.Entry
	ctx    context.Context
}

// New returns an empty store.
func New() *Store { return &Store{data: map[string]kv.Entry{}, watchers: map[*watcher]struct{}{}} }

func (s *Store) Get(ctx context.Context, key string) (kv.Entry, error) {
	if err := kv.ValidKey(key); err != nil {
		return kv.Entry{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.data[key]
	if !ok {
		return kv.Entry{}, kv.ErrNotFound
	}
	return clone(e), nil
}

func (s *Store) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	return s.write(key, value, func(e kv.Entry, ok bool) error {
		if ok {
			return kv.ErrExists
		}
		return nil
	})
}

func (s *Store) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	return s.write(key, value, func(e kv.Entry, ok bool) error {
		if !ok || e.Revision != rev {
			return kv.ErrConflict
		}
		return nil
	})
}

func (s *Store) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	return s.write(key, value, func(kv.Entry, bool) error { return nil })
}

func (s *Store) write(key string, value []byte, check func(kv.Entry, bool) error) (uint64, error) {
	if err := kv.ValidKey(key); err != nil {
		return 0, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.data[key]
	if err := check(e, ok); err != nil {
		return 0, err
	}
	s.rev++
	e = kv.Entry{Key: key, Value: append([]byte{}, value...), Revision: s.rev}
	if e.Value == nil {
		e.Value = []byte{}
	}
	s.data[key] = e
	s.notify(e)
	return s.rev, nil
}

func (s *Store) Delete(ctx context.Context, key string, rev uint64) error {
	if err := kv.ValidKey(key); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	e, ok := s.data[key]
	if rev != 0 && (!ok || e.Revision != rev) {
		return kv.ErrConflict
	}
	if !ok {
		return nil
	}
	delete(s.data, key)
	s.rev++
	s.notify(kv.Entry{Key: key, Revision: s.rev})
	return nil
}

func (s *Store) List(ctx context.Context, prefix string) ([]kv.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var out []kv.Entry
	for k, e := range s.data {
		if kv.HasPrefix(k, prefix) {
			out = append(out, clone(e))
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, nil
}

// Watch sends the entries under prefix, then every change, until ctx is done.
func (s *Store) Watch(ctx context.Context, prefix string) (<-chan kv.Entry, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	w := &watcher{prefix: prefix, ch: make(chan kv.Entry, 1024), ctx: ctx}
	keys := make([]string, 0, len(s.data))
	for k := range s.data {
		if kv.HasPrefix(k, prefix) {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		w.ch <- clone(s.data[k])
	}
	s.watchers[w] = struct{}{}
	go func() {
		<-ctx.Done()
		s.mu.Lock()
		delete(s.watchers, w)
		close(w.ch)
		s.mu.Unlock()
	}()
	return w.ch, nil
}

// notify is called with s.mu held. A watcher that does not keep up would block every
// writer; it is sent to without blocking and the tests that use memkv keep up.
func (s *Store) notify(e kv.Entry) {
	for w := range s.watchers {
		if kv.HasPrefix(e.Key, w.prefix) && w.ctx.Err() == nil {
			select {
			case w.ch <- clone(e):
			default:
			}
		}
	}
}

func clone(e kv.Entry) kv.Entry {
	if e.Value != nil {
		e.Value = append([]byte{}, e.Value...)
	}
	return e
}
