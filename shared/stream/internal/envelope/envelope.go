// Package envelope packs several stream messages into one backend record, so that
// they land together or not at all, in order, for the cost of one record. The Kinesis
// backend packs a key's consecutive messages into one record (the key is the record's
// partition key); the JetStream backend packs consecutive messages of one partition,
// of any keys, into one JetStream message.
//
// Wire format:
//
//	"HL" version                    magic; version 1 (Unkeyed) or 2 (Keyed)
//	uvarint count                   number of messages, >= 1
//	count times:
//	  uvarint len, key bytes        Keyed only: the partition key (at most 256 bytes)
//	  uvarint len, id bytes         message id (at most 128 bytes)
//	  uvarint len, data bytes       payload
//
// Lengths are minimal uvarints, so every envelope has one encoding (Decode then
// Encode gives the same bytes). Decode never panics on hostile input.
package envelope

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/heartline/heartline/shared/stream"
)

// Format is an envelope version.
type Format byte

const (
	// Unkeyed (version 1) carries id and data per message; the key is the record's.
	Unkeyed Format = 1
	// Keyed (version 2) carries key, id and data per message.
	Keyed Format = 2
)

// Limits of the fields, as stream.CheckMessage enforces them.
const (
	MaxKeyLen = 256
	MaxIDLen  = 128
)

// PrefixLen is the size of the magic and version.
const PrefixLen = 3

// ErrMalformed: the bytes are not a Heartline envelope (written by something else, or
// corrupt).
var ErrMalformed = errors.New("not a Heartline envelope")

// UvarintLen is the encoded size of x.
func UvarintLen(x uint64) int {
	n := 1
	for x >= 0x80 {
		x >>= 7
		n++
	}
	return n
}

// MsgSize is the encoded size of one message in format f.
func MsgSize(f Format, m stream.Message) int {
	n := UvarintLen(uint64(len(m.ID))) + len(m.ID) + UvarintLen(uint64(len(m.Data))) + len(m.Data)
	if f == Keyed {
		n += UvarintLen(uint64(len(m.Key))) + len(m.Key)
	}
	return n
}

// Overhead is the size of an envelope of count messages without the messages.
func Overhead(count int) int { return PrefixLen + UvarintLen(uint64(count)) }

// Size is the encoded size of msgs in format f.
func Size(f Format, msgs []stream.Message) int {
	n := Overhead(len(msgs))
	for _, m := range msgs {
		n += MsgSize(f, m)
	}
	return n
}

// Encode packs msgs (at least one) in format f.
func Encode(f Format, msgs []stream.Message) []byte {
	b := make([]byte, 0, Size(f, msgs))
	b = append(b, 'H', 'L', byte(f))
	b = binary.AppendUvarint(b, uint64(len(msgs)))
	for _, m := range msgs {
		if f == Keyed {
			b = binary.AppendUvarint(b, uint64(len(m.Key)))
			b = append(b, m.Key...)
		}
		b = binary.AppendUvarint(b, uint64(len(m.ID)))
		b = append(b, m.ID...)
		b = binary.AppendUvarint(b, uint64(len(m.Data)))
		b = append(b, m.Data...)
	}
	return b
}

// Is reports whether b starts like an envelope of any version.
func Is(b []byte) bool { return len(b) >= PrefixLen && b[0] == 'H' && b[1] == 'L' }

// Decode unpacks an envelope. The messages' Data alias b. Unkeyed messages come back
// with an empty Key.
func Decode(b []byte) (Format, []stream.Message, error) {
	if !Is(b) {
		return 0, nil, fmt.Errorf("%w: no magic", ErrMalformed)
	}
	f := Format(b[2])
	if f != Unkeyed && f != Keyed {
		return 0, nil, fmt.Errorf("%w: unknown version %d", ErrMalformed, b[2])
	}
	b = b[PrefixLen:]
	count, n := binary.Uvarint(b)
	minMsg := uint64(2)
	if f == Keyed {
		minMsg = 3
	}
	if n <= 0 || n != UvarintLen(count) || count == 0 || count > uint64(len(b)-n)/minMsg {
		return 0, nil, fmt.Errorf("%w: bad message count", ErrMalformed)
	}
	b = b[n:]
	out := make([]stream.Message, 0, count)
	for i := uint64(0); i < count; i++ {
		var key, id, data []byte
		var err error
		if f == Keyed {
			if key, b, err = field(b, MaxKeyLen); err != nil {
				return 0, nil, fmt.Errorf("%w: message %d key: %v", ErrMalformed, i, err)
			}
		}
		if id, b, err = field(b, MaxIDLen); err != nil {
			return 0, nil, fmt.Errorf("%w: message %d id: %v", ErrMalformed, i, err)
		}
		if data, b, err = field(b, len(b)); err != nil {
			return 0, nil, fmt.Errorf("%w: message %d data: %v", ErrMalformed, i, err)
		}
		out = append(out, stream.Message{Key: string(key), ID: string(id), Data: data})
	}
	if len(b) != 0 {
		return 0, nil, fmt.Errorf("%w: %d trailing bytes", ErrMalformed, len(b))
	}
	return f, out, nil
}

func field(b []byte, limit int) (val, rest []byte, err error) {
	l, n := binary.Uvarint(b)
	if n <= 0 || n != UvarintLen(l) {
		return nil, nil, errors.New("bad length")
	}
	if l > uint64(limit) || l > uint64(len(b)-n) {
		return nil, nil, fmt.Errorf("length %d out of range", l)
	}
	end := n + int(l)
	return b[n:end:end], b[end:], nil
}
