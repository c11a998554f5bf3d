package envelope

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/heartline/heartline/shared/stream"
)

func TestRoundTrip(t *testing.T) {
	msgs := []stream.Message{
		{Key: "k", ID: "a", Data: []byte("one")},
		{Key: "", ID: "", Data: nil},
		{Key: strings.Repeat("k", MaxKeyLen), ID: strings.Repeat("i", MaxIDLen), Data: make([]byte, 70000)},
		{Key: "a\r\nX: y", ID: "ид", Data: []byte{0, 1, 2}},
	}
	for _, f := range []Format{Unkeyed, Keyed} {
		b := Encode(f, msgs)
		if len(b) != Size(f, msgs) {
			t.Fatalf("format %d: encoded %d bytes, Size says %d", f, len(b), Size(f, msgs))
		}
		gf, got, err := Decode(b)
		if err != nil {
			t.Fatal(err)
		}
		if gf != f || len(got) != len(msgs) {
			t.Fatalf("format %d: got format %d with %d messages", f, gf, len(got))
		}
		for i, m := range msgs {
			wantKey := m.Key
			if f == Unkeyed {
				wantKey = ""
			}
			if got[i].Key != wantKey || got[i].ID != m.ID || !bytes.Equal(got[i].Data, m.Data) {
				t.Fatalf("format %d message %d: %q/%q/%d bytes", f, i, got[i].Key, got[i].ID, len(got[i].Data))
			}
		}
	}
}

func TestUvarintLen(t *testing.T) {
	for _, x := range []uint64{0, 1, 127, 128, 16383, 16384, 1 << 20, 1<<63 + 5} {
		var buf [10]byte
		n := 0
		for v := x; ; {
			buf[n] = byte(v)
			n++
			if v >>= 7; v == 0 {
				break
			}
		}
		if UvarintLen(x) != n {
			t.Fatalf("UvarintLen(%d) = %d, want %d", x, UvarintLen(x), n)
		}
	}
}

func TestDecodeRejectsForeignData(t *testing.T) {
	for _, in := range [][]byte{
		nil, []byte(`{"json":true}`), {'H', 'L', 3, 1, 0, 0}, {'H', 'L', 1, 0},
		{'H', 'L', 1, 1, 0, 5, 'x'}, {'H', 'L', 2, 1, 0, 0},
		{'H', 'L', 1, 0x81, 0x00, 0, 0}, // count 1 written in two bytes
		{'H', 'L', 2, 0xff, 0xff, 0xff, 0xff, 0x0f},
		append(Encode(Keyed, []stream.Message{{Key: "k", ID: "a"}}), 0),
		Encode(Keyed, []stream.Message{{Key: "k", ID: strings.Repeat("i", MaxIDLen+1)}}),
	} {
		if _, _, err := Decode(in); !errors.Is(err, ErrMalformed) {
			t.Errorf("Decode(%q): want ErrMalformed, got %v", in, err)
		}
	}
}

func FuzzDecode(f *testing.F) {
	f.Add(Encode(Keyed, []stream.Message{{Key: "k", ID: "id-1", Data: []byte("hello")}}))
	f.Add(Encode(Unkeyed, []stream.Message{{ID: "a", Data: []byte("1")}, {ID: "b", Data: []byte("2")}}))
	f.Add([]byte(`{"not":"ours"}`))
	f.Add([]byte{'H', 'L', 2, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, b []byte) {
		format, msgs, err := Decode(b)
		if err != nil {
			return
		}
		// Whatever decodes re-encodes to the same bytes (one canonical form).
		if !bytes.Equal(Encode(format, msgs), b) {
			t.Fatalf("decode/encode not canonical for %x", b)
		}
	})
}
