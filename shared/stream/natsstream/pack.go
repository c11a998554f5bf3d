package natsstream

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"strconv"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"

	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/internal/envelope"
)

// A JetStream message of a Heartline stream is either one stream message (its data as
// the payload, the key and id in headers: see headers.go) or a pack: several
// consecutive messages of one partition, of any keys, in the keyed envelope of
// stream/internal/envelope, marked by the Hl-Pack header (the number of messages).
const (
	hdrPack = "Hl-Pack"
	// packIDPrefix starts the Nats-Msg-Id of a pack.
	packIDPrefix = "hl-pack-"
	// packHeaderRoom bounds the headers of a pack (Hl-Pack and Nats-Msg-Id), to keep a
	// pack within the server's max payload.
	packHeaderRoom = 256
)

// ErrBadPack: a JetStream message marked as a pack does not hold a valid envelope.
var ErrBadPack = errors.New("natsstream: malformed pack")

// packMsg is the JetStream message carrying msgs (all of one partition, in order) on
// subject, and its Nats-Msg-Id ("" for none).
func packMsg(subject string, msgs []stream.Message) (*nats.Msg, string) {
	if len(msgs) == 1 {
		h, id := encodeHeaders(msgs[0].Key, msgs[0].ID)
		return &nats.Msg{Subject: subject, Header: h, Data: msgs[0].Data}, id
	}
	h := nats.Header{hdrPack: []string{strconv.Itoa(len(msgs))}}
	return &nats.Msg{Subject: subject, Header: h, Data: envelope.Encode(envelope.Keyed, msgs)}, packID(msgs)
}

// packID is a pack's Nats-Msg-Id. When every message has an id it is derived from
// them, so that the same messages packed the same way again (a retried pack) are a
// duplicate JetStream drops; otherwise it is random, which still de-duplicates the
// retries of this pack (each retry resends the same id).
func packID(msgs []stream.Message) string {
	h := sha256.New()
	var lb [binary.MaxVarintLen64]byte
	for _, m := range msgs {
		if m.ID == "" {
			return packIDPrefix + "r-" + uuid.NewString()
		}
		h.Write(lb[:binary.PutUvarint(lb[:], uint64(len(m.ID)))])
		h.Write([]byte(m.ID))
	}
	return packIDPrefix + b64.EncodeToString(h.Sum(nil)[:18])
}

// Unpack returns the stream messages a JetStream message of a Heartline stream carries,
// in order: one for a plain message, several for a pack. A message published by
// another client comes back as it is (its key and id empty when it has no Heartline
// headers). A pack that does not decode is an error wrapping ErrBadPack.
func Unpack(h nats.Header, data []byte) ([]stream.Message, error) {
	if h.Get(hdrPack) == "" {
		key, id := decodeHeaders(h)
		return []stream.Message{{Key: key, ID: id, Data: data}}, nil
	}
	f, msgs, err := envelope.Decode(data)
	if err == nil && f != envelope.Keyed {
		err = fmt.Errorf("envelope version %d, want %d", f, envelope.Keyed)
	}
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrBadPack, err)
	}
	return msgs, nil
}
