package filekv_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/kv/filekv"
	"github.com/heartline/heartline/shared/kv/kvtest"
)

func TestConformance(t *testing.T) {
	kvtest.Run(t, func(t *testing.T) kv.Store {
		s, err := filekv.Open(filepath.Join(t.TempDir(), "store.json"))
		if err != nil {
			t.Fatal(err)
		}
		return s
	})
}

func TestTwoHandlesShareTheFile(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.json")
	a, _ := filekv.Open(p)
	b, _ := filekv.Open(p)
	ctx := context.Background()
	rev, err := a.Create(ctx, "x", []byte("1"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Create(ctx, "x", []byte("2")); err == nil {
		t.Fatal("the second handle must see the first one's key")
	}
	if _, err := b.Update(ctx, "x", []byte("2"), rev); err != nil {
		t.Fatal(err)
	}
	if e, _ := a.Get(ctx, "x"); string(e.Value) != "2" {
		t.Fatalf("got %q", e.Value)
	}
}

func TestCorruptFileIsAClearError(t *testing.T) {
	p := filepath.Join(t.TempDir(), "s.json")
	if err := os.WriteFile(p, []byte("not json"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, _ := filekv.Open(p)
	if _, err := s.Get(context.Background(), "x"); err == nil || !strings.Contains(err.Error(), "not a store file") {
		t.Fatalf("want a clear error, got %v", err)
	}
}
