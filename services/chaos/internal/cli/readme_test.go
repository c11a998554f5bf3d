package cli

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"

	"github.com/heartline/heartline/services/chaos/internal/experiment"
	"github.com/heartline/heartline/services/chaos/internal/fault"
)

// The README documents every fault, probe, rollback, metric and flag: checked here.
func TestREADMEMatchesTheCode(t *testing.T) {
	b, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(b)
	var want []string
	for _, k := range fault.KindNames() {
		want = append(want, "| `"+k+"` |")
	}
	for _, p := range experiment.Probes {
		want = append(want, "| `"+string(p.Kind)+"` |")
	}
	for _, a := range experiment.RollbackActions {
		want = append(want, "action: "+a)
	}
	for _, m := range []string{"chaos_attacks_total", "chaos_active_faults", "chaos_halts_total", "chaos_experiments_total", "chaos_schedule_runs_total"} {
		want = append(want, "| `"+m+"` |")
	}
	for _, cmd := range []string{"serve", "run", "schedule", "halt", "gameday"} {
		var out bytes.Buffer
		if err := Run(context.Background(), []string{"flags-table", cmd}, Env{Getenv: func(string) string { return "" }, Stdout: &out, Stderr: &out}); err != nil {
			t.Fatal(err)
		}
		want = append(want, "### chaos "+cmd+"\n\n"+out.String())
	}
	for _, w := range want {
		if !strings.Contains(readme, w) {
			t.Errorf("README.md lacks (or has a stale version of):\n%s", w)
		}
	}
}
