package natsstream

import (
	"encoding/base64"
	"hash/fnv"

	"github.com/nats-io/nats.go"
)

// Headers of a Heartline message on JetStream. Keys and ids are free bytes in the port;
// a NATS header value cannot hold line breaks and loses surrounding blanks, so a value
// that would not survive is sent base64-encoded in the -B64 header instead.
const (
	hdrKey    = "Hl-Key"
	hdrKeyB64 = "Hl-Key-B64"
	hdrIDB64  = "Hl-Id-B64"
	// msgIDB64Prefix marks a Nats-Msg-Id derived from an id that needed encoding.
	msgIDB64Prefix = "hl-b64-"
)

var b64 = base64.RawURLEncoding

// Partition returns the partition of key among n: FNV-1a 32 of the key, modulo n.
// Every client of a topic must use the same n (the stream records it).
func Partition(key string, n int) int {
	h := fnv.New32a()
	h.Write([]byte(key))
	return int(h.Sum32() % uint32(n))
}

// headerSafe reports whether s survives as a NATS header value unchanged: printable
// ASCII, no blank at either end.
func headerSafe(s string) bool {
	if s == "" {
		return true
	}
	if s[0] == ' ' || s[len(s)-1] == ' ' {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// encodeHeaders returns the headers carrying key, and the Nats-Msg-Id for id ("" for
// none).
func encodeHeaders(key, id string) (nats.Header, string) {
	h := make(nats.Header, 2)
	if headerSafe(key) {
		h[hdrKey] = []string{key}
	} else {
		h[hdrKeyB64] = []string{b64.EncodeToString([]byte(key))}
	}
	if id == "" {
		return h, ""
	}
	if headerSafe(id) {
		return h, id
	}
	enc := b64.EncodeToString([]byte(id))
	h[hdrIDB64] = []string{enc}
	return h, msgIDB64Prefix + enc
}

// decodeHeaders recovers the key and id of a delivered message. Messages published by
// other clients may lack the headers or carry garbage: the key or id is then empty or
// the raw header text, never a panic.
func decodeHeaders(h nats.Header) (key, id string) {
	key = h.Get(hdrKey)
	if enc := h.Get(hdrKeyB64); enc != "" {
		if b, err := b64.DecodeString(enc); err == nil {
			key = string(b)
		}
	}
	id = h.Get(nats.MsgIdHdr)
	if enc := h.Get(hdrIDB64); enc != "" {
		if b, err := b64.DecodeString(enc); err == nil {
			id = string(b)
		}
	}
	return key, id
}

// headerSize is the wire size of h, to check a message against the server's limit.
func headerSize(h nats.Header, msgID string) int {
	n := len("NATS/1.0\r\n\r\n")
	for k, vs := range h {
		for _, v := range vs {
			n += len(k) + len(v) + 4
		}
	}
	if msgID != "" {
		n += len(nats.MsgIdHdr) + len(msgID) + 4
	}
	return n
}
