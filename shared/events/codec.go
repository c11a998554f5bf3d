package events

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// shardIDPattern is what a shard id may look like: it is used in keys of every store.
var shardIDPattern = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// ValidShardID reports whether s can be used as a shard id.
func ValidShardID(s string) bool { return shardIDPattern.MatchString(s) }

// wireEvent is the encoded form of Event, with the payload left raw.
type wireEvent struct {
	ID            string          `json:"id"`
	Schema        string          `json:"schema"`
	Kind          Kind            `json:"kind"`
	Shard         string          `json:"shard,omitempty"`
	Source        Source          `json:"source"`
	Time          time.Time       `json:"time"`
	CorrelationID string          `json:"correlation_id"`
	Epoch         uint64          `json:"epoch,omitempty"`
	Payload       json.RawMessage `json:"payload"`
}

// Encode validates e and returns its JSON encoding. An event that would not decode is
// never written.
func Encode(e Event) ([]byte, error) {
	if err := Validate(e); err != nil {
		return nil, err
	}
	b, err := json.Marshal(e)
	if err != nil {
		return nil, fieldErr("", ErrMalformed, "encoding: %v", err)
	}
	if len(b) > MaxEncodedSize {
		return nil, fieldErr("", ErrTooLarge, "%d bytes, at most %d", len(b), MaxEncodedSize)
	}
	return b, nil
}

// Validate checks an event as the decoder would, returning the first problem.
func Validate(e Event) error {
	info, ok := kinds[e.Kind]
	if !ok {
		return fieldErr("kind", ErrUnknownKind, "%q", e.Kind)
	}
	if e.Payload == nil {
		return fieldErr("payload", ErrMissingField, "")
	}
	want := info.newPayload()
	if fmt.Sprintf("%T", want) != fmt.Sprintf("%T", e.Payload) {
		return fieldErr("payload", ErrInvalidField, "kind %s carries %T, not %T", e.Kind, want, e.Payload)
	}
	if e.Schema == "" {
		return fieldErr("schema", ErrMissingField, "")
	}
	errs := validateEnvelope(e, info)
	errs = append(errs, e.Payload.validate(e.Kind)...)
	if len(errs) > 0 {
		return errs[0]
	}
	return nil
}

func validateEnvelope(e Event, info kindInfo) []*FieldError {
	var errs []*FieldError
	req(&errs, e.ID == "", "id")
	bad(&errs, len(e.ID) > 128, "id", "longer than 128 bytes")
	req(&errs, e.Source.Service == "", "source.service")
	req(&errs, e.Time.IsZero(), "time")
	req(&errs, e.CorrelationID == "", "correlation_id")
	bad(&errs, len(e.CorrelationID) > 128, "correlation_id", "longer than 128 bytes")
	if info.needsShard {
		req(&errs, e.Shard == "", "shard")
	}
	bad(&errs, e.Shard != "" && !ValidShardID(e.Shard), "shard", "%q: want 1-64 of A-Z a-z 0-9 _ -", e.Shard)
	if info.needsEpoch {
		req(&errs, e.Epoch == 0, "epoch")
	}
	return errs
}

// Decode parses one encoded event strictly. Errors are *FieldError values wrapping a
// sentinel of errors.go. It never panics, whatever the input.
func Decode(data []byte) (Event, error) {
	if len(data) > MaxEncodedSize {
		return Event{}, fieldErr("", ErrTooLarge, "%d bytes, at most %d", len(data), MaxEncodedSize)
	}
	// First pass: what version and kind is this? Decide how strict to be.
	var head struct {
		Schema json.RawMessage `json:"schema"`
		Kind   json.RawMessage `json:"kind"`
	}
	if err := json.Unmarshal(data, &head); err != nil {
		return Event{}, jsonErr("", err)
	}
	if len(head.Schema) == 0 || string(head.Schema) == "null" {
		return Event{}, fieldErr("schema", ErrMissingField, "")
	}
	var schema string
	if err := json.Unmarshal(head.Schema, &schema); err != nil {
		return Event{}, fieldErr("schema", ErrInvalidField, "want a string such as %q", SchemaVersion)
	}
	major, minor, err := parseSchema(schema)
	if err != nil {
		return Event{}, err
	}
	if major != SchemaMajor {
		return Event{}, fieldErr("schema", ErrUnsupportedVersion, "%q: this build reads major version %d", schema, SchemaMajor)
	}
	strict := minor <= SchemaMinor

	var w wireEvent
	if err := decodeInto(data, &w, strict, ""); err != nil {
		return Event{}, err
	}
	info, ok := kinds[w.Kind]
	if !ok {
		if w.Kind == "" {
			return Event{}, fieldErr("kind", ErrMissingField, "")
		}
		return Event{}, fieldErr("kind", ErrUnknownKind, "%q", truncate(string(w.Kind)))
	}
	if len(w.Payload) == 0 || string(w.Payload) == "null" {
		return Event{}, fieldErr("payload", ErrMissingField, "")
	}
	p := info.newPayload()
	if err := decodeInto(w.Payload, p, strict, "payload."); err != nil {
		return Event{}, err
	}
	e := Event{ID: w.ID, Schema: w.Schema, Kind: w.Kind, Shard: w.Shard, Source: w.Source,
		Time: w.Time, CorrelationID: w.CorrelationID, Epoch: w.Epoch, Payload: p}
	errs := validateEnvelope(e, info)
	errs = append(errs, p.validate(e.Kind)...)
	if len(errs) > 0 {
		return Event{}, errs[0]
	}
	return e, nil
}

func decodeInto(data []byte, v any, strict bool, prefix string) error {
	dec := json.NewDecoder(bytes.NewReader(data))
	if strict {
		dec.DisallowUnknownFields()
	}
	if err := dec.Decode(v); err != nil {
		var pe *time.ParseError
		if errors.As(err, &pe) {
			// encoding/json does not say which time field failed: find it.
			var doc any
			if json.Unmarshal(data, &doc) == nil {
				if where := findString(doc, `"`+pe.Value+`"`, pe.Value, ""); where != "" {
					return fieldErr(prefix+where, ErrInvalidField, "want an RFC 3339 time, got %q", truncate(pe.Value))
				}
			}
		}
		return jsonErr(prefix, err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return fieldErr(strings.TrimSuffix(prefix, "."), ErrMalformed, "trailing data after the JSON object")
	}
	return nil
}

// findString returns the path of the first string in doc equal to either form of the
// bad value (time.ParseError reports it quoted or not, depending on the Go version).
func findString(doc any, quoted, plain, at string) string {
	switch v := doc.(type) {
	case string:
		if v == plain || v == quoted {
			return at
		}
	case map[string]any:
		for k, x := range v {
			p := k
			if at != "" {
				p = at + "." + k
			}
			if r := findString(x, quoted, plain, p); r != "" {
				return r
			}
		}
	case []any:
		for i, x := range v {
			if r := findString(x, quoted, plain, path(at, i)); r != "" {
				return r
			}
		}
	}
	return ""
}

func parseSchema(s string) (major, minor int, err error) {
	a, b, ok := strings.Cut(s, ".")
	major, err1 := strconv.Atoi(a)
	minor, err2 := strconv.Atoi(b)
	if !ok || err1 != nil || err2 != nil || major < 0 || minor < 0 {
		return 0, 0, fieldErr("schema", ErrInvalidField, "%q: want major.minor such as %q", truncate(s), SchemaVersion)
	}
	return major, minor, nil
}

// jsonErr turns an encoding/json error into a FieldError naming the field.
func jsonErr(prefix string, err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	var pe *time.ParseError
	switch {
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			field = strings.TrimSuffix(prefix, ".")
		} else {
			field = prefix + field
		}
		return fieldErr(field, ErrInvalidField, "want %s, got JSON %s", te.Type, te.Value)
	case errors.As(err, &se):
		return fieldErr(strings.TrimSuffix(prefix, "."), ErrMalformed, "%v at byte %d", se, se.Offset)
	case errors.As(err, &pe):
		return fieldErr(strings.TrimSuffix(prefix, "."), ErrInvalidField, "want an RFC 3339 time: %v", pe)
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return fieldErr(prefix+name, ErrUnknownField, "not in schema %s", SchemaVersion)
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return fieldErr(strings.TrimSuffix(prefix, "."), ErrMalformed, "truncated JSON")
	default:
		return fieldErr(strings.TrimSuffix(prefix, "."), ErrMalformed, "%v", err)
	}
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

func req(errs *[]*FieldError, missing bool, field string) {
	if missing {
		*errs = append(*errs, fieldErr(field, ErrMissingField, ""))
	}
}

func bad(errs *[]*FieldError, isBad bool, field, format string, args ...any) {
	if isBad {
		*errs = append(*errs, fieldErr(field, ErrInvalidField, format, args...))
	}
}

func path(field string, i int) string { return field + "[" + strconv.Itoa(i) + "]" }
