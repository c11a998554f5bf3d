package cli

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/heartline/heartline/services/lazarus/internal/decide"
	"github.com/heartline/heartline/services/lazarus/internal/worker"
)

// readmeBlocks are the README sections generated from the code.
func readmeBlocks() map[string]string {
	var cfg bytes.Buffer
	var c RunConfig
	RunLoader(&c).Table(&cfg)
	var reasons strings.Builder
	reasons.WriteString("| Reason | Decision | Meaning | What on-call should do |\n| --- | --- | --- | --- |\n")
	for _, r := range decide.Catalog {
		fmt.Fprintf(&reasons, "| `%s` | %s | %s | %s |\n", r.Reason, r.Decision, r.Meaning, r.OnCall)
	}
	var metrics strings.Builder
	metrics.WriteString("| Metric | Meaning |\n| --- | --- |\n")
	for _, m := range worker.MetricHelp {
		fmt.Fprintf(&metrics, "| `%s` | %s |\n", m[0], m[1])
	}
	return map[string]string{"config-table": cfg.String(), "reasons-table": reasons.String(), "metrics-table": metrics.String()}
}

// TestReadmeIsCurrent checks that the README's generated tables match the code.
// UPDATE_README=1 go test ./internal/cli -run TestReadmeIsCurrent rewrites them.
func TestReadmeIsCurrent(t *testing.T) {
	const path = "../../README.md"
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	doc := string(b)
	for name, want := range readmeBlocks() {
		open, end := "<!-- "+name+" -->\n", "<!-- /"+name+" -->"
		i, j := strings.Index(doc, open), strings.Index(doc, end)
		if i < 0 || j < i {
			t.Fatalf("README lacks the %s markers", name)
		}
		if got := doc[i+len(open) : j]; got != want {
			if os.Getenv("UPDATE_README") == "1" {
				doc = doc[:i+len(open)] + want + doc[j:]
				continue
			}
			t.Errorf("README's %s is stale; run UPDATE_README=1 go test ./internal/cli -run TestReadmeIsCurrent", name)
		}
	}
	if os.Getenv("UPDATE_README") == "1" {
		if err := os.WriteFile(path, []byte(doc), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
