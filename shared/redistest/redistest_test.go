package redistest

import (
	"context"
	"testing"
	"time"
)

func TestShardReplicatesAndSurvivesFaults(t *testing.T) {
	s := StartShard(t, "s0", 1, [2]string{"min-replicas-to-write", "1"})
	ctx := context.Background()
	pc := s.Primary.Client()
	if err := pc.Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	n, err := pc.Do(ctx, "WAIT", 1, 2000).Int()
	if err != nil || n != 1 {
		t.Fatalf("WAIT: %d %v", n, err)
	}
	if v, _ := s.Replicas[0].Client().Get(ctx, "k").Result(); v != "v" {
		t.Fatalf("replica has %q", v)
	}
	// Pause: commands hang until resumed.
	if err := s.Primary.Pause(); err != nil {
		t.Fatal(err)
	}
	short, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
	err = pc.Ping(short).Err()
	cancel()
	if err == nil {
		t.Fatal("a paused node answered")
	}
	if err := s.Primary.Resume(); err != nil {
		t.Fatal(err)
	}
	// kill -9 and restart empty (persistence is off).
	if err := s.Primary.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := s.Primary.Restart(ctx, true); err != nil {
		t.Fatal(err)
	}
	if got := s.Primary.Info(); got.Keys != 0 {
		t.Fatalf("restarted node has %d keys", got.Keys)
	}
}
