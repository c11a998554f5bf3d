package natsstream

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/nats-io/nats.go"

	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/internal/envelope"
)

func TestPackRoundTrip(t *testing.T) {
	msgs := []stream.Message{
		{Key: "a\r\nX-Evil: 1", ID: "id\r\n1", Data: []byte("1")},
		{Key: "ключ", ID: "", Data: nil},
		{Key: "k", ID: strings.Repeat("i", 128), Data: make([]byte, 5000)},
	}
	for n := 1; n <= len(msgs); n++ {
		nm, id := packMsg("hl.t.0", msgs[:n])
		if id == "" && msgs[0].ID != "" {
			t.Fatalf("%d messages: no Nats-Msg-Id", n)
		}
		// Through the wire form of the headers, as a consumer gets them.
		if id != "" {
			nm.Header.Set(nats.MsgIdHdr, id)
		}
		h, err := nats.DecodeHeadersMsg(wire(nm.Header))
		if err != nil {
			t.Fatal(err)
		}
		got, err := Unpack(h, nm.Data)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != n {
			t.Fatalf("%d messages packed, %d unpacked", n, len(got))
		}
		for i := range got {
			if got[i].Key != msgs[i].Key || got[i].ID != msgs[i].ID || !bytes.Equal(got[i].Data, msgs[i].Data) {
				t.Fatalf("%d messages: message %d came back as %+v", n, i, got[i])
			}
		}
	}
}

func TestPackIDs(t *testing.T) {
	a := []stream.Message{{Key: "k", ID: "a"}, {Key: "k", ID: "b"}}
	if packID(a) != packID([]stream.Message{{Key: "x", ID: "a", Data: []byte("other")}, {Key: "k", ID: "b"}}) {
		t.Fatal("the same ids gave different pack ids")
	}
	// Length-prefixed: "ab"+"c" is not "a"+"bc".
	if packID([]stream.Message{{ID: "ab"}, {ID: "c"}}) == packID([]stream.Message{{ID: "a"}, {ID: "bc"}}) {
		t.Fatal("ambiguous pack id")
	}
	noID := []stream.Message{{Key: "k", ID: "a"}, {Key: "k"}}
	if packID(noID) == packID(noID) {
		t.Fatal("a pack with a message without id must get a fresh id each time")
	}
	if !strings.HasPrefix(packID(a), packIDPrefix) || len(packID(a)) > 64 {
		t.Fatalf("pack id %q", packID(a))
	}
}

func TestUnpackRefusesCorruptPacks(t *testing.T) {
	for _, data := range [][]byte{nil, []byte("plain"), envelope.Encode(envelope.Unkeyed, []stream.Message{{ID: "a"}})} {
		_, err := Unpack(nats.Header{hdrPack: []string{"2"}}, data)
		if !errors.Is(err, ErrBadPack) {
			t.Errorf("Unpack(%q): want ErrBadPack, got %v", data, err)
		}
	}
	// Without the pack header, even envelope bytes are one plain message.
	data := envelope.Encode(envelope.Keyed, []stream.Message{{Key: "k", ID: "a"}, {Key: "k", ID: "b"}})
	got, err := Unpack(nats.Header{hdrKey: []string{"k"}}, data)
	if err != nil || len(got) != 1 || !bytes.Equal(got[0].Data, data) {
		t.Fatalf("plain message unpacked as %v, %v", got, err)
	}
}

func FuzzUnpack(f *testing.F) {
	f.Add("2", envelope.Encode(envelope.Keyed, []stream.Message{{Key: "k", ID: "a", Data: []byte("x")}, {Key: "j", ID: "b"}}))
	f.Add("", []byte("raw"))
	f.Add("1", []byte{'H', 'L', 2, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Fuzz(func(t *testing.T, pack string, data []byte) {
		h := nats.Header{}
		if pack != "" {
			h.Set(hdrPack, pack)
		}
		msgs, err := Unpack(h, data)
		if err == nil && len(msgs) == 0 {
			t.Fatal("no error and no message")
		}
	})
}

func TestUniqueIDs(t *testing.T) {
	in := []stream.Message{{ID: "a"}, {ID: "b"}, {ID: "a"}, {ID: ""}, {ID: ""}, {ID: "b"}, {ID: "c"}}
	var got []string
	for _, m := range uniqueIDs(in) {
		got = append(got, m.ID)
	}
	if fmt.Sprint(got) != "[a b   c]" {
		t.Fatalf("uniqueIDs = %q", got)
	}
	same := []stream.Message{{ID: "a"}, {ID: "b"}}
	if out := uniqueIDs(same); &out[0] != &same[0] {
		t.Fatal("a batch without repeats should be used as it is")
	}
}

func TestTakeFormsPacksWithinLimits(t *testing.T) {
	live := &call{ctx: context.Background()}
	gone, cancel := context.WithCancel(context.Background())
	cancel()
	left := &call{ctx: gone}
	m := func(id string, size int) *entry {
		return &entry{msg: stream.Message{Key: "k", ID: id, Data: make([]byte, size)}, call: live}
	}
	l := &lane{}
	l.queue = []*entry{m("a", 100), {msg: stream.Message{Key: "k", ID: "x"}, call: left}, m("b", 100), m("c", 100),
		m("d", 1000), m("e", 10), m("f", 10), m("g", 10)}
	l.queue[6].solo = true
	ids := func(es []*entry) string {
		var s []string
		for _, e := range es {
			s = append(s, e.msg.ID)
		}
		return strings.Join(s, ",")
	}
	var packs []string
	for {
		p := l.take(400, 3)
		if len(p) == 0 {
			break
		}
		if len(p) > 1 {
			msgs := make([]stream.Message, len(p))
			for i, e := range p {
				msgs[i] = e.msg
			}
			if n := envelope.Size(envelope.Keyed, msgs); n > 400 {
				t.Fatalf("pack %s is %d bytes, over 400", ids(p), n)
			}
		}
		packs = append(packs, ids(p))
	}
	// x: its call returned; d: larger than the limit, alone; f: solo; at most 3 each.
	if got := strings.Join(packs, " "); got != "a,b,c d e f g" {
		t.Fatalf("packs %q", got)
	}
	if l.queue != nil {
		t.Fatalf("queue not emptied: %d left", len(l.queue))
	}
}
