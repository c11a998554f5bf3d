package kinesisstream

import (
	"fmt"

	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/stream/internal/envelope"
)

// A Kinesis record's Data holds one or more messages of its partition key, in order,
// in the unkeyed envelope (version 1) of stream/internal/envelope:
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
var magic = [envelope.PrefixLen]byte{'H', 'L', byte(envelope.Unkeyed)}

const (
	// maxRecord is Kinesis's limit for one record: data plus partition key.
	maxRecord = 1 << 20
	// maxCallBytes and maxCallRecords are PutRecords' limits per call.
	maxCallBytes   = 5 << 20
	maxCallRecords = 500
)

// envelopeSize is the encoded size of msgs.
func envelopeSize(msgs []stream.Message) int { return envelope.Size(envelope.Unkeyed, msgs) }

func msgSize(m stream.Message) int { return envelope.MsgSize(envelope.Unkeyed, m) }

func uvarintLen(x uint64) int { return envelope.UvarintLen(x) }

// encode packs msgs (all of one key) into a record's data.
func encode(msgs []stream.Message) []byte { return envelope.Encode(envelope.Unkeyed, msgs) }

// decoded is one message of a record (its Key is empty: the record's partition key is
// the key).
type decoded = stream.Message

// decode unpacks a record's data. It never panics on hostile input; a record that is
// not a Heartline envelope is an error (the consumer then delivers it raw).
func decode(b []byte) ([]decoded, error) {
	if !envelope.Is(b) {
		return nil, fmt.Errorf("%w: not a Heartline record", ErrBadRecord)
	}
	if b[2] != magic[2] {
		return nil, fmt.Errorf("%w: unknown record version %d", ErrBadRecord, b[2])
	}
	_, msgs, err := envelope.Decode(b)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadRecord, err)
	}
	return msgs, nil
}
