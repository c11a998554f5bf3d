// Package filekv is a kv.Store in one JSON file, locked with flock(2) so that the
// processes of one machine can share it. It is the local fallback: the topology file a
// Ratequeue client reads when the shared store is unreachable, and the checkpoint and
// lease store of a single-machine Kinesis setup. It is not for several machines.
package filekv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"

	"github.com/heartline/heartline/shared/kv"
)

var _ kv.Store = (*Store)(nil)

// Store is a file-backed store.
type Store struct {
	path string
	mu   sync.Mutex // serialises this process's goroutines; flock serialises processes
}

type fileData struct {
	Revision uint64               `json:"revision"`
	Entries  map[string]fileEntry `json:"entries"`
}

type fileEntry struct {
	Value    []byte `json:"value"`
	Revision uint64 `json:"revision"`
}

// Open returns a store in the file at path, creating its directory when needed. The file
// itself is created on the first write.
func Open(path string) (*Store, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("filekv: %w", err)
	}
	return &Store{path: path}, nil
}

// Path is the file the store lives in.
func (s *Store) Path() string { return s.path }

// with runs f on the file's data under an exclusive (write) or shared lock. When f
// returns changed=true the data is written back atomically.
func (s *Store) with(ctx context.Context, write bool, f func(d *fileData) (changed bool, err error)) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	lock, err := os.OpenFile(s.path+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return fmt.Errorf("filekv: %w", err)
	}
	defer lock.Close()
	how := syscall.LOCK_SH
	if write {
		how = syscall.LOCK_EX
	}
	if err := syscall.Flock(int(lock.Fd()), how); err != nil {
		return fmt.Errorf("filekv: lock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)

	d := &fileData{Entries: map[string]fileEntry{}}
	raw, err := os.ReadFile(s.path)
	switch {
	case errors.Is(err, os.ErrNotExist):
	case err != nil:
		return fmt.Errorf("filekv: %w", err)
	default:
		if err := json.Unmarshal(raw, d); err != nil {
			return fmt.Errorf("filekv: %s is not a store file: %w", s.path, err)
		}
		if d.Entries == nil {
			d.Entries = map[string]fileEntry{}
		}
	}
	changed, err := f(d)
	if err != nil || !changed {
		return err
	}
	out, err := json.MarshalIndent(d, "", "  ")
	if err != nil {
		return fmt.Errorf("filekv: %w", err)
	}
	tmp := s.path + ".tmp"
	if err := os.WriteFile(tmp, out, 0o644); err != nil {
		return fmt.Errorf("filekv: %w", err)
	}
	if err := os.Rename(tmp, s.path); err != nil {
		return fmt.Errorf("filekv: %w", err)
	}
	return nil
}

func (s *Store) Get(ctx context.Context, key string) (kv.Entry, error) {
	if err := kv.ValidKey(key); err != nil {
		return kv.Entry{}, err
	}
	var out kv.Entry
	err := s.with(ctx, false, func(d *fileData) (bool, error) {
		e, ok := d.Entries[key]
		if !ok {
			return false, kv.ErrNotFound
		}
		out = entry(key, e)
		return false, nil
	})
	return out, err
}

func (s *Store) write(ctx context.Context, key string, value []byte, check func(fileEntry, bool) error) (uint64, error) {
	if err := kv.ValidKey(key); err != nil {
		return 0, err
	}
	var rev uint64
	err := s.with(ctx, true, func(d *fileData) (bool, error) {
		e, ok := d.Entries[key]
		if err := check(e, ok); err != nil {
			return false, err
		}
		d.Revision++
		rev = d.Revision
		d.Entries[key] = fileEntry{Value: append([]byte{}, value...), Revision: rev}
		return true, nil
	})
	return rev, err
}

func (s *Store) Create(ctx context.Context, key string, value []byte) (uint64, error) {
	return s.write(ctx, key, value, func(_ fileEntry, ok bool) error {
		if ok {
			return kv.ErrExists
		}
		return nil
	})
}

func (s *Store) Update(ctx context.Context, key string, value []byte, rev uint64) (uint64, error) {
	return s.write(ctx, key, value, func(e fileEntry, ok bool) error {
		if !ok || e.Revision != rev {
			return kv.ErrConflict
		}
		return nil
	})
}

func (s *Store) Put(ctx context.Context, key string, value []byte) (uint64, error) {
	return s.write(ctx, key, value, func(fileEntry, bool) error { return nil })
}

func (s *Store) Delete(ctx context.Context, key string, rev uint64) error {
	if err := kv.ValidKey(key); err != nil {
		return err
	}
	return s.with(ctx, true, func(d *fileData) (bool, error) {
		e, ok := d.Entries[key]
		if rev != 0 && (!ok || e.Revision != rev) {
			return false, kv.ErrConflict
		}
		if !ok {
			return false, nil
		}
		delete(d.Entries, key)
		d.Revision++
		return true, nil
	})
}

func (s *Store) List(ctx context.Context, prefix string) ([]kv.Entry, error) {
	var out []kv.Entry
	err := s.with(ctx, false, func(d *fileData) (bool, error) {
		for k, e := range d.Entries {
			if kv.HasPrefix(k, prefix) {
				out = append(out, entry(k, e))
			}
		}
		return false, nil
	})
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out, err
}

func entry(key string, e fileEntry) kv.Entry {
	v := e.Value
	if v == nil {
		v = []byte{}
	}
	return kv.Entry{Key: key, Value: append([]byte{}, v...), Revision: e.Revision}
}
