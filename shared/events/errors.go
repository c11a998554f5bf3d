package events

import (
	"errors"
	"fmt"
)

// Sentinel errors. Every decoding error wraps exactly one of them (check with errors.Is)
// and is a *FieldError (check with errors.As) naming the field at fault.
var (
	ErrMalformed          = errors.New("malformed event")
	ErrTooLarge           = errors.New("event too large")
	ErrUnknownKind        = errors.New("unknown event kind")
	ErrUnsupportedVersion = errors.New("unsupported schema version")
	ErrMissingField       = errors.New("missing required field")
	ErrInvalidField       = errors.New("invalid field")
	ErrUnknownField       = errors.New("unknown field")
)

// FieldError reports what is wrong with one field of an event.
type FieldError struct {
	Field  string // JSON path, such as "payload.primary.offset"; empty for the whole event
	Err    error  // one of the sentinel errors
	Detail string
}

func (e *FieldError) Error() string {
	msg := e.Err.Error()
	if e.Field != "" {
		msg += ": " + e.Field
	}
	if e.Detail != "" {
		msg += ": " + e.Detail
	}
	return msg
}

func (e *FieldError) Unwrap() error { return e.Err }

func fieldErr(field string, err error, format string, args ...any) *FieldError {
	return &FieldError{Field: field, Err: err, Detail: fmt.Sprintf(format, args...)}
}
