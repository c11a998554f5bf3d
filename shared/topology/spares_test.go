package topology

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/kv/memkv"
)

func TestPoolAddRemoveValidate(t *testing.T) {
	var p Pool
	if err := p.Add(Spare{Addr: "127.0.0.1:7100"}); err != nil {
		t.Fatal(err)
	}
	if err := p.Add(Spare{Addr: "127.0.0.1:7100"}); !errors.Is(err, ErrSpareExists) {
		t.Fatalf("duplicate add: %v", err)
	}
	for _, bad := range []string{"", "nohost", ":7000", "h:0", "h:x"} {
		if err := p.Add(Spare{Addr: bad}); !errors.Is(err, ErrInvalid) {
			t.Errorf("Add(%q) = %v, want ErrInvalid", bad, err)
		}
	}
	m := Map{Shards: []Shard{{ID: "s1", Epoch: 1, Primary: "127.0.0.1:7000", Replicas: []string{"127.0.0.1:7001"}}}}
	if err := p.Validate(m); err != nil {
		t.Fatal(err)
	}
	bad := Pool{Spares: []Spare{{Addr: "127.0.0.1:7001"}, {Addr: "127.0.0.1:7100"}, {Addr: "127.0.0.1:7100"}}}
	err := bad.Validate(m)
	if !errors.Is(err, ErrInvalid) {
		t.Fatalf("Validate = %v", err)
	}
	for _, want := range []string{"node of shard s1", "listed twice"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("Validate error lacks %q: %v", want, err)
		}
	}
	if err := p.Remove("127.0.0.1:9999"); !errors.Is(err, ErrNotSpare) {
		t.Fatalf("Remove of a stranger: %v", err)
	}
	if err := p.Remove("127.0.0.1:7100"); err != nil || len(p.Spares) != 0 {
		t.Fatalf("Remove: %v %v", err, p.Spares)
	}
}

// Concurrent updates never lose one: every conditional write that conflicts is retried
// on the pool as it is now.
func TestUpdatePoolConcurrent(t *testing.T) {
	ctx := context.Background()
	s := Store{KV: memkv.New()}
	p, rev, err := s.Pool(ctx)
	if err != nil || rev != 0 || len(p.Spares) != 0 {
		t.Fatalf("empty pool: %+v %d %v", p, rev, err)
	}
	var wg sync.WaitGroup
	for i := 0; i < 20; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			addr := "127.0.0.1:" + strconv.Itoa(7100+i)
			if _, err := s.UpdatePool(ctx, func(p *Pool) error { return p.Add(Spare{Addr: addr}) }); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	p, _, err = s.Pool(ctx)
	if err != nil || len(p.Spares) != 20 {
		t.Fatalf("after 20 concurrent adds: %d spares, %v", len(p.Spares), err)
	}
	if _, err := s.UpdatePool(ctx, func(p *Pool) error { return p.Remove("127.0.0.1:1") }); !errors.Is(err, ErrNotSpare) {
		t.Fatalf("an error from fn must abort the update: %v", err)
	}
}

func TestAnnotateChangesOnlyAnnotations(t *testing.T) {
	ctx := context.Background()
	s := Store{KV: memkv.New()}
	sh := Shard{ID: "s1", Epoch: 3, Primary: "127.0.0.1:7000", Replicas: []string{"127.0.0.1:7001"}}
	if _, err := s.Seed(ctx, Map{Shards: []Shard{sh}}); err != nil {
		t.Fatal(err)
	}
	cur, rev, err := s.Get(ctx, "s1")
	if err != nil {
		t.Fatal(err)
	}
	next := cur
	next.Degraded, next.DegradedSince = true, time.Now().UTC()
	if _, err := s.Annotate(ctx, cur, rev, next); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Annotate(ctx, cur, rev, next); !errors.Is(err, kv.ErrConflict) {
		t.Fatalf("a stale revision: %v, want a conflict", err)
	}
	got, rev2, _ := s.Get(ctx, "s1")
	if !got.Degraded || got.Epoch != 3 {
		t.Fatalf("after Annotate: %+v", got)
	}
	for _, mut := range []func(*Shard){
		func(x *Shard) { x.Epoch++ },
		func(x *Shard) { x.Primary = "127.0.0.1:7001" },
		func(x *Shard) { x.Replicas = nil },
		func(x *Shard) { x.Durability = "yolo" },
	} {
		bad := got
		mut(&bad)
		if _, err := s.Annotate(ctx, got, rev2, bad); !errors.Is(err, ErrInvalid) {
			t.Errorf("Annotate of a route change: %v, want ErrInvalid", err)
		}
	}
	if (Shard{}).Policy("") != DurabilityStrict || (Shard{}).Policy(DurabilityDegrade) != DurabilityDegrade ||
		(Shard{Durability: DurabilityStrict}).Policy(DurabilityDegrade) != DurabilityStrict {
		t.Fatal("Policy: the shard's own setting wins, then the fleet default, then strict")
	}
	if err := (Map{Shards: []Shard{{ID: "s1", Epoch: 1, Primary: "a:1", Durability: "maybe"}}}).Validate(); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Validate of a bad durability: %v", err)
	}
}

// FuzzPool: whatever the kv store holds under "spares" decodes to an error or to a pool
// whose checks and updates do not panic.
func FuzzPool(f *testing.F) {
	for _, s := range []string{`{"spares":[{"addr":"127.0.0.1:7100","from":"shard-1","claimed":"shard-2"}]}`, `{}`, `[]`, `{"spares":[{"addr":""}]}`, `nul`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		ctx := context.Background()
		s := Store{KV: memkv.New()}
		if _, err := s.KV.Put(ctx, SparesKey, b); err != nil {
			return
		}
		p, _, err := s.Pool(ctx)
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("undecodable pool: %v is not ErrInvalid", err)
			}
			return
		}
		_ = p.Validate(Map{Shards: []Shard{{ID: "s", Epoch: 1, Primary: "127.0.0.1:7000"}}})
		for _, sp := range p.Spares {
			_ = p.Index(sp.Addr)
		}
		_, _ = s.UpdatePool(ctx, func(p *Pool) error { return p.Add(Spare{Addr: "127.0.0.1:7999"}) })
	})
}
