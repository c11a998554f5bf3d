package failbench

import (
	"context"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/testbin"
)

type quietRedis struct{}

func (quietRedis) Printf(context.Context, string, ...interface{}) {}

func TestMain(m *testing.M) {
	redis.SetLogger(quietRedis{})
	os.Exit(m.Run())
}

type tlog struct{ t *testing.T }

func (w tlog) Write(p []byte) (int, error) { w.t.Log(strings.TrimSpace(string(p))); return len(p), nil }

// kill -9 of the primary twice under `ratequeue load` (real binary, WAIT 1
// acknowledgements, NATS stream and kv), lazarus failing over on a synthetic alert
// source: `ratequeue check` finds zero acknowledged messages lost, and every run has a
// first acknowledged write on the new primary.
func TestKillUnderRatequeueLoadLosesNothing(t *testing.T) {
	bin := testbin.Build(t, "ratequeue")
	logs := &logging.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Execute(ctx, Options{Runs: 2, Period: 5 * time.Second, RatequeueBin: bin, WorkDir: t.TempDir(), EnqueueRate: 150,
		Log: logging.Test(logs).Level(1), Progress: tlog{t}})
	t.Log("\n" + res.Table())
	if err != nil {
		t.Fatalf("%v\n%s", err, tail(logs.String()))
	}
	if !res.CheckOK {
		t.Fatalf("ratequeue check failed:\n%s\nload:\n%s", res.CheckOut, res.LoadOut)
	}
	if _, _, n := res.Median(); n != 2 {
		t.Fatalf("%d complete runs:\n%s\n%s", n, res.Table(), tail(logs.String()))
	}
	if res.Acked < 100 {
		t.Fatalf("only %d enqueues acknowledged", res.Acked)
	}
}

func tail(s string) string {
	if len(s) > 8000 {
		return s[len(s)-8000:]
	}
	return s
}

// The host of a 1+1 shard's primary is gone for good: lazarus fails over, attaches the
// spare, and writes are acknowledged again (by the spare) without the dead host; the
// dead node comes back only afterwards, as the next run's spare. Nothing acknowledged
// is lost.
func TestHostGoneSpareRestoresAcknowledgedWrites(t *testing.T) {
	bin := testbin.Build(t, "ratequeue")
	logs := &logging.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Execute(ctx, Options{Runs: 2, Replicas: 1, HostGone: true, Period: 6 * time.Second, RatequeueBin: bin, WorkDir: t.TempDir(),
		EnqueueRate: 150, Log: logging.Test(logs).Level(1), Progress: tlog{t}})
	t.Log("\n" + res.Table())
	if err != nil {
		t.Fatalf("%v\n%s", err, tail(logs.String()))
	}
	if !res.CheckOK {
		t.Fatalf("ratequeue check failed:\n%s\nload:\n%s", res.CheckOut, res.LoadOut)
	}
	if _, _, n := res.Median(); n != 2 {
		t.Fatalf("%d complete runs:\n%s\n%s", n, res.Table(), tail(logs.String()))
	}
}
