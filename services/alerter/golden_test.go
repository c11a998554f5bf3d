package alerter

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/heartline/heartline/services/alerter/internal/scenario"
	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/stream/memstream"
)

// TestGoldenService runs every scenario of testdata/scenarios through a running alerter
// on memstream and memkv: the heartbeats are published on the stream, the alerts read
// back from the alerts topic, and the result must equal the same golden file the pure
// state machine produces (detector.TestGolden).
func TestGoldenService(t *testing.T) {
	files, err := filepath.Glob("testdata/scenarios/*.txt")
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios: %v", err)
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".txt")
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			sc, err := scenario.Parse(file, data)
			if err != nil {
				t.Fatal(err)
			}
			want, err := os.ReadFile(strings.TrimSuffix(file, ".txt") + ".golden")
			if err != nil {
				t.Fatal(err)
			}
			if got := runScenario(t, sc); got != string(want) {
				t.Errorf("service alerts differ from the golden file\n--- got ---\n%s--- want ---\n%s", got, want)
			}
		})
	}
}

func runScenario(t *testing.T, sc scenario.Scenario) string {
	t.Helper()
	srv := memstream.NewServer(memstream.Options{Partitions: 4, LeaseTTL: time.Second})
	clock := &fakeClock{t: scenario.Start}
	det := sc.Config
	svc := startService(t, srv, memkv.New(), svcOpts{clock: clock.Now, detector: &det, run: true})
	reader := readAlerts(t, srv)
	pub := srv.New()
	defer pub.Close()
	sent := 0
	for _, st := range sc.Steps {
		clock.Set(scenario.Start.Add(st.At))
		if st.Tick {
			svc.Tick(context.Background())
			continue
		}
		publish(t, pub, st.Event)
		sent++
		waitFor(t, 10*time.Second, "heartbeat handled", func() bool { return svc.handled() >= sent })
	}
	var out scenario.Output
	for _, e := range reader.sync(t, pub, sc.Shard) {
		out.Alert(e.Time.Sub(scenario.Start), e)
	}
	state, _ := svc.ShardState(sc.Shard)
	out.End(svc.results(), state)
	return out.String()
}
