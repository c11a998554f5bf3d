package cli

import (
	"testing"
	"time"
)

// FuzzParseSeed: a seed file is operator input; any bytes give a valid map or an
// error, never a panic, and an accepted map always validates with epochs >= 1.
func FuzzParseSeed(f *testing.F) {
	f.Add([]byte(`{"shards":[{"id":"shard-1","index":0,"primary":"127.0.0.1:7000","replicas":["127.0.0.1:7001"]}]}`))
	f.Add([]byte(`{"shards":[{"id":"a","index":0,"epoch":3,"primary":"x:1"},{"id":"b","index":1,"primary":"y:1"}]}`))
	f.Add([]byte(`{"shards":[]}`))
	f.Add([]byte(`{"shards":[{"id":"a b"}]} {}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := ParseSeed(b)
		if err != nil {
			return
		}
		if err := m.Validate(); err != nil {
			t.Fatalf("accepted an invalid map: %v", err)
		}
		for _, s := range m.Shards {
			if s.Epoch < 1 {
				t.Fatalf("shard %s at epoch %d", s.ID, s.Epoch)
			}
		}
	})
}

func FuzzParseSince(f *testing.F) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, s := range []string{"90m", "2026-01-01T00:00:00Z", "-5m", "yesterday", "", "1e9h"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, err := ParseSince(s, now)
		if err == nil && got.After(now) {
			if _, perr := time.Parse(time.RFC3339, s); perr != nil {
				t.Fatalf("%q: a duration ago must not be in the future: %s", s, got)
			}
		}
	})
}
