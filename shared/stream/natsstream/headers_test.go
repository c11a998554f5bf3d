package natsstream

import (
	"bytes"
	"net/textproto"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"
)

// wire encodes headers the way nats.go puts them on the wire (values trimmed, line
// breaks turned into blanks).
func wire(h nats.Header) []byte {
	var b bytes.Buffer
	b.WriteString("NATS/1.0\r\n")
	for k, vs := range h {
		for _, v := range vs {
			v = strings.NewReplacer("\r", " ", "\n", " ").Replace(textproto.TrimString(v))
			b.WriteString(k + ": " + v + "\r\n")
		}
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

// FuzzHeaders: any key and id survive the trip through NATS headers, and decoding
// arbitrary header blocks (from foreign publishers) never panics.
func FuzzHeaders(f *testing.F) {
	f.Add("shard-1", "hb-1", []byte("NATS/1.0\r\nHl-Key: x\r\n\r\n"))
	f.Add("a\r\nX: y", " id ", []byte("NATS/1.0\r\nHl-Key-B64: !!!\r\nHl-Id-B64: %%\r\n\r\n"))
	f.Add("ключ", "", []byte("garbage"))
	f.Add("\t", "\x00", []byte("NATS/1.0 503\r\n\r\n"))
	f.Fuzz(func(t *testing.T, key, id string, raw []byte) {
		h, msgID := encodeHeaders(key, id)
		if msgID != "" {
			h.Set(nats.MsgIdHdr, msgID)
		}
		got, err := nats.DecodeHeadersMsg(wire(h))
		if err != nil {
			t.Fatalf("our headers do not decode: %v", err)
		}
		k, i := decodeHeaders(got)
		if k != key || i != id {
			t.Fatalf("round trip (%q, %q) -> (%q, %q)", key, id, k, i)
		}
		if hs := headerSize(h, ""); hs < len(wire(h)) {
			t.Fatalf("headerSize %d below the wire size %d", hs, len(wire(h)))
		}
		if foreign, err := nats.DecodeHeadersMsg(raw); err == nil {
			decodeHeaders(foreign)
		}
	})
}

func TestPartitionIsStable(t *testing.T) {
	// FNV-1a 32 of "shard-1" is fixed; a changed hash would move every key.
	if p := Partition("shard-1", 16); p != int(fnv32a("shard-1")%16) {
		t.Fatalf("Partition = %d", p)
	}
	for _, n := range []int{1, 2, 16, 64} {
		for _, k := range []string{"a", "shard-17", "fleet"} {
			if p := Partition(k, n); p < 0 || p >= n {
				t.Fatalf("Partition(%q, %d) = %d", k, n, p)
			}
		}
	}
}

func fnv32a(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}
