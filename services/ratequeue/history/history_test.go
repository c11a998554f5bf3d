package history

import (
	"bytes"
	"errors"
	"strings"
	"testing"
)

const good = `{"type":"header","version":1,"run":"r1","mode":"direct"}
{"type":"enqueue","status":"ok","queue":"q","id":"a","attempt":1,"invoke_us":10,"complete_us":20,"shard":"s0","epoch":1}
{"type":"deliver","queue":"q","id":"a","server_us":30,"count":1,"interval_us":100}
{"type":"ack","queue":"q","id":"a","status":"ok"}
{"type":"end","drained":true}
`

func TestRoundTrip(t *testing.T) {
	evs, err := ReadAll(strings.NewReader(good))
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 5 || evs[2].Line != 3 || evs[2].ServerUS != 30 {
		t.Fatalf("%+v", evs)
	}
	var buf bytes.Buffer
	w := NewWriter(&buf)
	for _, e := range evs {
		if err := w.Write(e); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	again, err := ReadAll(&buf)
	if err != nil || len(again) != 5 {
		t.Fatal(again, err)
	}
}

func TestRejectsMalformedLinesWithLineNumbers(t *testing.T) {
	header := `{"type":"header","version":1,"run":"r"}` + "\n"
	for _, tc := range []struct {
		in   string
		line int
	}{
		{"", 1},
		{`{"type":"enqueue"}` + "\n", 1},
		{header + "not json\n", 2},
		{header + `{"type":"deliver","queue":"q","id":"a","server_us":1}` + "\n", 2},
		{header + `{"type":"ack","queue":"q","id":"a","status":"maybe"}` + "\n", 2},
		{header + `{"type":"nope"}` + "\n", 2},
		{header + `{"type":"end","extra":1}` + "\n", 2},
		{header + "\n", 2},
		{header + header, 2},
		{header + `{"type":"end"}`, 2},
		{header + `{"type":"end"} {"type":"end"}` + "\n", 2},
		{header + `{"type":"enqueue","status":"ok","queue":"q","id":"a","attempt":1,"invoke_us":10,"complete_us":5,"shard":"s","epoch":1}` + "\n", 2},
		{`{"type":"header","version":2,"run":"r"}` + "\n", 1},
	} {
		_, err := ReadAll(strings.NewReader(tc.in))
		var pe *ParseError
		if !errors.As(err, &pe) || !errors.Is(err, ErrMalformed) || pe.Line != tc.line {
			t.Errorf("%q: want a parse error at line %d, got %v", tc.in, tc.line, err)
		}
	}
}

func FuzzReader(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte(`{"type":"header","version":1,"run":"r"}` + "\n" + `{"type":"deliver"}` + "\n"))
	f.Add([]byte("\n\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		evs, err := ReadAll(bytes.NewReader(b))
		if err != nil {
			var pe *ParseError
			if !errors.As(err, &pe) || pe.Line < 1 {
				t.Fatalf("error without a line number: %v", err)
			}
			return
		}
		for i, e := range evs {
			if e.Validate() != nil || e.Line != i+1 {
				t.Fatalf("accepted an invalid event %+v", e)
			}
		}
	})
}
