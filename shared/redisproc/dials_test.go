package redisproc

import (
	"os"
	"path/filepath"
	"testing"
)

func TestMasterDialsAndOffLoopback(t *testing.T) {
	log := `12:S 04 Dec 2026 20:00:00.000 * Connecting to MASTER 127.0.0.1:7000
12:S 04 Dec 2026 20:00:00.001 * MASTER <-> REPLICA sync started
12:S 04 Dec 2026 20:00:01.000 * Connecting to MASTER 127.0.0.1:1
12:S 04 Dec 2026 20:00:02.000 * Connecting to MASTER 127.0.0.1:1
12:S 04 Dec 2026 20:00:03.000 * Connecting to MASTER 192.0.2.1:1
12:S 04 Dec 2026 20:00:04.000 * Connecting to MASTER ::1:1
`
	p := filepath.Join(t.TempDir(), "n.log")
	if err := os.WriteFile(p, []byte(log), 0o644); err != nil {
		t.Fatal(err)
	}
	d, err := MasterDials(p)
	if err != nil {
		t.Fatal(err)
	}
	if d["127.0.0.1:7000"] != 1 || d["127.0.0.1:1"] != 2 || d["192.0.2.1:1"] != 1 || d["::1:1"] != 1 || len(d) != 4 {
		t.Fatalf("dials %v", d)
	}
	for addr, want := range map[string]bool{"127.0.0.1:1": false, "127.9.0.1:7000": false, "::1:1": false, "[::1]:1": false,
		"192.0.2.1:1": true, "10.0.0.5:6379": true, "redis-1:6379": true, "": true} {
		if got := OffLoopback(addr); got != want {
			t.Errorf("OffLoopback(%q) = %v, want %v", addr, got, want)
		}
	}
	if _, err := MasterDials(filepath.Join(t.TempDir(), "missing.log")); err == nil {
		t.Fatal("a missing log must be an error, not an empty audit")
	}
}
