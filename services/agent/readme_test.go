package agent

import (
	"os"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/heartline/heartline/shared/config"
)

// TestREADMEConfigTable keeps the README's configuration table equal to the flags.
func TestREADMEConfigTable(t *testing.T) {
	var c Config
	l := config.NewLoader("agent", "AGENT")
	c.Register(l)
	var b strings.Builder
	l.Table(&b)
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(readme), b.String()) {
		t.Errorf("README.md lacks the current configuration table; replace it with:\n%s", b.String())
	}
}

// TestREADMEListsEveryMetric keeps the README's metric list complete.
func TestREADMEListsEveryMetric(t *testing.T) {
	reg := prometheus.NewRegistry()
	newMetrics(reg)
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	readme, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		name := "`" + mf.GetName()
		if !strings.Contains(string(readme), name+"`") && !strings.Contains(string(readme), name+"{") {
			t.Errorf("README.md does not document the metric %s", mf.GetName())
		}
	}
}
