package detector_test

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/heartline/heartline/services/alerter/detector"
	"github.com/heartline/heartline/services/alerter/internal/scenario"
	"github.com/heartline/heartline/shared/events"
)

var update = flag.Bool("update", false, "rewrite the golden files from the pure state machine's output")

// scenarioDir holds the scenarios shared with the service's golden tests.
const scenarioDir = "../testdata/scenarios"

// runPure feeds a scenario to one detector.Shard with the scenario's fake clock.
func runPure(t *testing.T, sc scenario.Scenario) string {
	t.Helper()
	n := 0
	sh := detector.NewShard(sc.Shard, sc.Config, func() string { n++; return fmt.Sprintf("inc-%d", n) })
	var out scenario.Output
	results := map[string]int{}
	src := events.Source{Service: "alerter", Instance: "golden"}
	for _, st := range sc.Steps {
		now := scenario.Start.Add(st.At)
		var ds []detector.Decision
		if st.Tick {
			ds = sh.Tick(now)
		} else {
			hb, err := detector.FromEvent(st.Event, now)
			if err != nil {
				t.Fatalf("line %d: %v", st.Line, err)
			}
			var res detector.Result
			res, ds = sh.Observe(now, hb)
			results[res.String()]++
		}
		for _, d := range ds {
			e := d.Event(src, now)
			if err := events.Validate(e); err != nil {
				t.Fatalf("line %d: invalid alert event: %v", st.Line, err)
			}
			out.Alert(st.At, e)
		}
	}
	out.End(results, sh.State())
	return out.String()
}

func scenarios(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(scenarioDir, "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no scenarios in %s: %v", scenarioDir, err)
	}
	return files
}

// TestGolden runs every scenario of testdata/scenarios through the pure state machine
// and compares the alerts with the .golden file next to it (go test -update rewrites
// them; review the diff).
func TestGolden(t *testing.T) {
	for _, file := range scenarios(t) {
		name := strings.TrimSuffix(filepath.Base(file), ".txt")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			sc, err := scenario.Parse(file, data)
			if err != nil {
				t.Fatal(err)
			}
			got := runPure(t, sc)
			golden := strings.TrimSuffix(file, ".txt") + ".golden"
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatalf("%v (run go test ./detector -run TestGolden -update to create it)", err)
			}
			if got != string(want) {
				t.Errorf("alerts differ from %s\n--- got ---\n%s--- want ---\n%s", golden, got, want)
			}
		})
	}
}
