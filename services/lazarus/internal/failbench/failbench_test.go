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
	res := execute(t, Options{Runs: 2, Period: 5 * time.Second, EnqueueRate: 150})
	if res.Acked < 100 {
		t.Fatalf("only %d enqueues acknowledged", res.Acked)
	}
}

// The host of a 1+1 shard's primary is gone for good: lazarus fails over, attaches the
// spare, and writes are acknowledged again (by the spare) without the dead host; the
// dead node comes back only afterwards, as the next run's spare. Nothing acknowledged
// is lost.
func TestHostGoneSpareRestoresAcknowledgedWrites(t *testing.T) {
	execute(t, Options{Runs: 2, Replicas: 1, HostGone: true, Period: 6 * time.Second, EnqueueRate: 150})
}

// execute runs the benchmark with the ratequeue binary and a temporary work dir, and
// fails the test unless every run completed and ratequeue check found nothing lost.
func execute(t *testing.T, o Options) Result {
	t.Helper()
	o.RatequeueBin, o.WorkDir = testbin.Build(t, "ratequeue"), t.TempDir()
	logs := &logging.Buffer{}
	o.Log, o.Progress = logging.Test(logs).Level(1), tlog{t}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	res, err := Execute(ctx, o)
	t.Log("\n" + res.Table())
	if err != nil {
		t.Fatalf("%v\n%s", err, tail(logs.String()))
	}
	if !res.CheckOK {
		t.Fatalf("ratequeue check failed:\n%s\nload:\n%s", res.CheckOut, res.LoadOut)
	}
	if _, _, n := res.Median(); n != o.Runs {
		t.Fatalf("%d complete runs of %d:\n%s\n%s", n, o.Runs, res.Table(), tail(logs.String()))
	}
	return res
}

func tail(s string) string {
	if len(s) > 8000 {
		return s[len(s)-8000:]
	}
	return s
}
