package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heartline/heartline/shared/localstack"
	"github.com/heartline/heartline/shared/logging"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/redistest"
	"github.com/heartline/heartline/shared/testbin"
)

func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	if len(b) > n {
		return "..." + string(b[len(b)-n:])
	}
	return string(b)
}

// checkReport is the part of `ratequeue check -json` the test reads.
type checkReport struct {
	Valid        bool     `json:"valid"`
	Drained      bool     `json:"drained"`
	Acknowledged int64    `json:"acknowledged"`
	Lost         int64    `json:"lost"`
	Problems     []string `json:"problems"`
}

// The whole pipeline over Kinesis (kinesalite) with its kv store in DynamoDB
// (dynalite): one shard of a primary and two replicas, an agent beside each node, the
// alerter, two lazarus instances and the real `ratequeue load` (Go client, WAIT 1
// acknowledgements). kill -9 of the primary under load: the agents see it, the alerter
// raises PRIMARY_DOWN, one lazarus fails the shard over, the client follows the new
// topology, the killed node comes back empty and is rejoined, and `ratequeue check`
// finds zero acknowledged messages lost.
func TestKillPrimaryUnderLoadOverKinesisLosesNothing(t *testing.T) {
	bins := localstack.Binaries{Agent: testbin.Build(t, "agent"), Alerter: testbin.Build(t, "alerter"),
		Lazarus: testbin.Build(t, "lazarus"), Ratequeue: testbin.Build(t, "ratequeue")}
	logs := &logging.Buffer{}
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dir := t.TempDir()
	st, err := localstack.Start(ctx, localstack.Options{Dir: dir, Bins: bins, Stream: localstack.StreamKinesis, Shards: 1, Replicas: 2,
		LazarusInstances: 2, RatequeueInstances: 1, Log: logging.Test(logs)})
	if err != nil {
		t.Fatalf("starting the stack over kinesalite: %v\n%s", err, logs.String())
	}
	defer func() {
		if err := st.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
		if t.Failed() {
			for _, svc := range st.Services {
				if svc.Name != localstack.Agent {
					t.Logf("%s-%d log:\n%s", svc.Name, svc.Instance, tailFile(svc.Log, 3000))
				}
			}
		}
	}()
	if !strings.HasPrefix(st.StreamURL(), "kinesis://") || !strings.HasPrefix(st.KVURL(), "dynamodb://") {
		t.Fatalf("stream %q kv %q", st.StreamURL(), st.KVURL())
	}
	m, err := st.Topology(ctx)
	if err != nil {
		t.Fatal(err)
	}
	old := m.Shards[0]

	history := filepath.Join(dir, "history.jsonl")
	loadLog := filepath.Join(dir, "load.log")
	lf, err := os.Create(loadLog)
	if err != nil {
		t.Fatal(err)
	}
	defer lf.Close()
	load := exec.CommandContext(ctx, bins.Ratequeue, "load", "-direct", "-stream", st.StreamURL(), "-kv", st.KVURL(),
		"-data-dir", filepath.Join(dir, "load"), "-history", history, "-run", "kin", "-queues", "20", "-enqueue-rate", "150",
		"-duration", "25s", "-concurrency", "8", "-consumers", "4", "-drain-timeout", "60s", "-log-format", "json", "-log-level", "warn")
	load.Env = os.Environ()
	load.Stdout, load.Stderr = lf, lf
	if err := load.Start(); err != nil {
		t.Fatal(err)
	}
	loadDone := make(chan error, 1)
	go func() { loadDone <- load.Wait() }()

	// Kill once acknowledged writes are flowing on the primary.
	redistest.WaitFor(t, 60*time.Second, "acknowledged enqueues in the history", func() bool {
		b, _ := os.ReadFile(history)
		return strings.Count(string(b), `"status":"ok"`) >= 200
	})
	victim := st.Node(old.Primary)
	if err := victim.Kill(); err != nil {
		t.Fatal(err)
	}
	killed := time.Now()
	var newPrimary string
	redistest.WaitFor(t, 60*time.Second, "a new primary at epoch 2 in the DynamoDB topology", func() bool {
		cur, err := st.Topology(ctx)
		if err != nil || cur.Shards[0].Epoch < 2 || cur.Shards[0].Primary == old.Primary {
			return false
		}
		newPrimary = cur.Shards[0].Primary
		return true
	})
	t.Logf("kill -9 of %s to the new topology (%s) over Kinesis: %s", old.Primary, newPrimary, time.Since(killed).Round(time.Millisecond))
	// The supervisor's part: the killed node comes back empty (persistence off);
	// lazarus rejoins it as a replica of the new primary.
	if err := victim.Restart(ctx, true); err != nil {
		t.Fatal(err)
	}

	select {
	case err := <-loadDone:
		if err != nil {
			t.Fatalf("ratequeue load: %v\n%s", err, tailFile(loadLog, 4000))
		}
	case <-ctx.Done():
		t.Fatalf("ratequeue load did not finish\n%s", tailFile(loadLog, 4000))
	}
	reportPath := filepath.Join(dir, "check.json")
	out, err := exec.Command(bins.Ratequeue, "check", "-json", reportPath, history).CombinedOutput()
	var ee *exec.ExitError
	if err != nil && !errors.As(err, &ee) {
		t.Fatal(err)
	}
	b, rerr := os.ReadFile(reportPath)
	var rep checkReport
	if rerr != nil || json.Unmarshal(b, &rep) != nil {
		t.Fatalf("ratequeue check: %v %v\n%s", err, rerr, out)
	}
	t.Logf("ratequeue check: %d acknowledged, %d lost, drained %v", rep.Acknowledged, rep.Lost, rep.Drained)
	if err != nil || !rep.Valid || rep.Lost != 0 || !rep.Drained {
		t.Fatalf("acknowledged messages lost or the check failed (%v):\n%s", err, out)
	}
	if rep.Acknowledged < 1000 {
		t.Fatalf("only %d enqueues acknowledged:\n%s", rep.Acknowledged, out)
	}
	// Writes were acknowledged by the new primary after the kill.
	if n := ackedBy(t, history, newPrimary, 2); n == 0 {
		t.Fatalf("no enqueue acknowledged by the new primary %s at epoch 2", newPrimary)
	} else {
		t.Logf("%d enqueues acknowledged by %s at epoch 2", n, newPrimary)
	}
	// And the killed node was rejoined as a replica of the new primary.
	c := redis.NewClient(&redis.Options{Addr: old.Primary, MaxRetries: -1, DialTimeout: time.Second})
	defer c.Close()
	redistest.WaitFor(t, 60*time.Second, "the killed node rejoined as a replica of "+newPrimary, func() bool {
		n, err := redisinfo.Read(ctx, c)
		return err == nil && n.Role == "slave" && n.MasterAddr() == newPrimary && n.LinkUp
	})
}

// ackedBy counts the enqueues of a history acknowledged by node at epoch.
func ackedBy(t *testing.T, history, node string, epoch uint64) int {
	t.Helper()
	f, err := os.Open(history)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	n := 0
	for sc.Scan() {
		var l struct {
			Type, Status, Node string
			Epoch              uint64
		}
		if json.Unmarshal(sc.Bytes(), &l) == nil && l.Type == "enqueue" && l.Status == "ok" && l.Node == node && l.Epoch == epoch {
			n++
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}
