package injector

import "testing"

// The alerter's record (alerter.incident.<shard>) outlives its incidents: only an open
// incident or pending alerts count as an open alert.
func TestIncidentOpenReadsTheAlerterRecord(t *testing.T) {
	cases := []struct {
		rec  string
		open bool
	}{
		{`{"shard":"s1","last_incident_id":"i0","changes":["2026-01-01T00:00:00Z"],"flapping":true}`, false},
		{`{"shard":"s1"}`, false},
		{`{"shard":"s1","incident":{"id":"i1","code":"PRIMARY_DOWN"}}`, true},
		{`{"shard":"s1","pending":[{"id":"e1"}]}`, true},
		{`not json`, true},
	}
	for _, c := range cases {
		if open, why := IncidentOpen([]byte(c.rec)); open != c.open {
			t.Errorf("%s: open %v (%s), want %v", c.rec, open, why, c.open)
		}
	}
}
