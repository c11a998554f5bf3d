package alerter

import (
	"os"
	"strings"
	"testing"

	"github.com/heartline/heartline/shared/config"
)

// TestREADMEConfigTable keeps the README's configuration table equal to the flags.
func TestREADMEConfigTable(t *testing.T) {
	var c Config
	l := config.NewLoader("alerter", "ALERTER")
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
