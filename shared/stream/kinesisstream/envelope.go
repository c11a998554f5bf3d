package kinesisstream

import (
	"encoding/binary"
	"fmt"

	"github.com/heartline/heartline/shared/stream"
)

// A Kinesis record's Data holds one or more messages of its partition key, in order:
//
//	"HL" 0x01                       magic and version
//	uvarint count                   number of messages, >= 1
//	count times:
//	  uvarint len, id bytes         message id (at most 128 bytes)
//	  uvarint len, data bytes       payload (at most stream.MaxMessageSize)
//
// The key is the record's partition key. Packing a key's consecutive messages into one
// record makes them land together or not at all, which is what keeps per-key order
// through partial PutRecords failures (see Publish).
var magic = [3]byte{'H', 'L', 1}

const (
	// maxRecord is Kinesis's limit for one record: data plus partition key.
	maxRecord = 1 << 20
	// maxCallBytes and maxCallRecords are PutRecords' limits per call.
	maxCallBytes   = 5 << 20
	maxCallRecords = 500
	maxIDLen       = 128
)

// envelopeSize is the encoded size of msgs.
func envelopeSize(msgs []stream.Message) int {
	n := len(magic) + uvarintLen(uint64(len(msgs)))
	for _, m := range msgs {
		n += msgSize(m)
	}
	return n
}

func msgSize(m stream.Message) int {
	return uvarintLen(uint64(len(m.ID))) + len(m.ID) + uvarintLen(uint64(len(m.Data))) + len(m.Data)
}

func uvarintLen(x uint64) int {
	var b [binary.MaxVarintLen64]byte
	return binary.PutUvarint(b[:], x)
}

// encode packs msgs (all of one key) into a record's data.
func encode(msgs []stream.Message) []byte {
	b := make([]byte, 0, envelopeSize(msgs))
	b = append(b, magic[:]...)
	b = binary.AppendUvarint(b, uint64(len(msgs)))
	for _, m := range msgs {
		b = binary.AppendUvarint(b, uint64(len(m.ID)))
		b = append(b, m.ID...)
		b = binary.AppendUvarint(b, uint64(len(m.Data)))
		b = append(b, m.Data...)
	}
	return b
}

// decoded is one message of a record.
type decoded struct {
	ID   string
	Data []byte
}

// decode unpacks a record's data. It never panics on hostile input; a record that is
// not a Heartline envelope is an error (the consumer then delivers it raw).
func decode(b []byte) ([]decoded, error) {
	if len(b) < len(magic) || b[0] != magic[0] || b[1] != magic[1] {
		return nil, fmt.Errorf("%w: not a Heartline record", ErrBadRecord)
	}
	if b[2] != magic[2] {
		return nil, fmt.Errorf("%w: unknown record version %d", ErrBadRecord, b[2])
	}
	b = b[len(magic):]
	count, n := binary.Uvarint(b)
	if n <= 0 || n != uvarintLen(count) || count == 0 || count > uint64(len(b)) {
		return nil, fmt.Errorf("%w: bad message count", ErrBadRecord)
	}
	b = b[n:]
	out := make([]decoded, 0, count)
	for i := uint64(0); i < count; i++ {
		id, rest, err := field(b, maxIDLen)
		if err != nil {
			return nil, fmt.Errorf("%w: message %d id: %v", ErrBadRecord, i, err)
		}
		data, rest, err := field(rest, maxRecord)
		if err != nil {
			return nil, fmt.Errorf("%w: message %d data: %v", ErrBadRecord, i, err)
		}
		out = append(out, decoded{ID: string(id), Data: data})
		b = rest
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%w: %d trailing bytes", ErrBadRecord, len(b))
	}
	return out, nil
}

func field(b []byte, limit int) (val, rest []byte, err error) {
	l, n := binary.Uvarint(b)
	if n <= 0 || n != uvarintLen(l) {
		return nil, nil, fmt.Errorf("bad length")
	}
	if l > uint64(limit) || l > uint64(len(b)-n) {
		return nil, nil, fmt.Errorf("length %d out of range", l)
	}
	end := n + int(l)
	return b[n:end:end], b[end:], nil
}
