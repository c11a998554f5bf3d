package kinesisstream

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/heartline/heartline/shared/stream"
)

func TestEnvelopeRoundTrip(t *testing.T) {
	msgs := []stream.Message{{Key: "k", ID: "a", Data: []byte("one")}, {Key: "k", ID: "", Data: nil}, {Key: "k", ID: strings.Repeat("i", 128), Data: make([]byte, 70000)}}
	b := encode(msgs)
	if len(b) != envelopeSize(msgs) {
		t.Fatalf("encoded %d bytes, envelopeSize says %d", len(b), envelopeSize(msgs))
	}
	got, err := decode(b)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(msgs) {
		t.Fatalf("%d messages back, want %d", len(got), len(msgs))
	}
	for i := range msgs {
		if got[i].ID != msgs[i].ID || !bytes.Equal(got[i].Data, msgs[i].Data) {
			t.Fatalf("message %d: %q/%d bytes, want %q/%d", i, got[i].ID, len(got[i].Data), msgs[i].ID, len(msgs[i].Data))
		}
	}
}

func TestLargestMessageFitsARecord(t *testing.T) {
	m := stream.Message{Key: strings.Repeat("k", 256), ID: strings.Repeat("i", 128), Data: make([]byte, stream.MaxMessageSize)}
	if n := envelopeSize([]stream.Message{m}) + len(m.Key); n > maxRecord {
		t.Fatalf("the largest valid message takes %d bytes, over Kinesis's %d", n, maxRecord)
	}
}

func TestDecodeRejectsForeignData(t *testing.T) {
	for _, in := range [][]byte{nil, []byte(`{"json":true}`), {'H', 'L', 2, 1, 0, 0}, {'H', 'L', 1, 0}, {'H', 'L', 1, 1, 0, 5, 'x'}, append(encode([]stream.Message{{ID: "a"}}), 0)} {
		if _, err := decode(in); !errors.Is(err, ErrBadRecord) {
			t.Errorf("decode(%q): want ErrBadRecord, got %v", in, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(encode([]stream.Message{{ID: "id-1", Data: []byte("hello")}}))
	f.Add(encode([]stream.Message{{ID: "a", Data: []byte("1")}, {ID: "b", Data: []byte("2")}}))
	f.Add([]byte(`{"not":"ours"}`))
	f.Add([]byte{'H', 'L', 1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		msgs, err := decode(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes (one canonical form).
		back := make([]stream.Message, len(msgs))
		for i, m := range msgs {
			back[i] = stream.Message{ID: m.ID, Data: m.Data}
		}
		if !bytes.Equal(encode(back), b) {
			t.Fatalf("decode/encode not canonical for %x", b)
		}
	})
}

func TestDecodeRejectsOverlongVarints(t *testing.T) {
	// count 1 written in two bytes
	if _, err := decode([]byte{'H', 'L', 1, 0x81, 0x00, 0, 0}); !errors.Is(err, ErrBadRecord) {
		t.Fatalf("want ErrBadRecord, got %v", err)
	}
}
