package agent

import (
	"testing"
	"time"
)

func TestAddrMatcher(t *testing.T) {
	m := newAddrMatcher()
	if !m.same("127.0.0.1:7000", "127.0.0.1:7000") || m.same("127.0.0.1:7000", "127.0.0.1:7001") || m.same("", "") {
		t.Fatal("literal comparisons")
	}
	if !m.same("[::1]:7000", "[0:0::1]:7000") {
		t.Fatal("IPv6 spellings")
	}
	// A host name resolves in the background; until then it compares by string only.
	deadline := time.Now().Add(5 * time.Second)
	for !m.same("localhost:7000", "127.0.0.1:7000") {
		if time.Now().After(deadline) {
			t.Fatal("localhost never matched 127.0.0.1")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if m.same("localhost:7000", "127.0.0.1:7001") {
		t.Fatal("ports differ")
	}
}
