// Package history is the JSON-lines history file that `ratequeue load` writes and
// `ratequeue check` reads: one JSON object per line, the first a header. Other
// services run these commands and read the files, so the format is versioned and
// stable: fields are only ever added with a new Version.
//
// Record types (field "type"):
//
//	header   version (1), run, mode ("http" or "direct"), t_us, note
//	enqueue  one enqueue attempt: status ok|failed|unknown, queue, id, idem, attempt
//	         (1, 2, ... per message), client, invoke_us, complete_us (client clock,
//	         µs since the Unix epoch); for ok also shard, node, epoch, duplicate,
//	         server_us; for failed/unknown also error. "failed" means definitely not
//	         stored; "unknown" may have been stored.
//	deliver  one delivery: queue, id, server_us (the primary's clock at the dequeue:
//	         the rate limit's clock), count (deliveries of the message so far),
//	         interval_us (the queue's minimum dequeue spacing, 0 = unlimited), shard,
//	         node, epoch, client (consumer), t_us (client clock at receipt), body_ok
//	         (whether the body matched what was enqueued, when the writer can tell)
//	ack      one ack: queue, id, client, status ok|failed|unknown|not_in_flight, t_us,
//	         error
//	end      drained (true when every queue was empty and nothing in flight at the
//	         end), t_us, note
package history

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"sync"
)

// Version is the format version written in the header.
const Version = 1

// Record types.
const (
	TypeHeader  = "header"
	TypeEnqueue = "enqueue"
	TypeDeliver = "deliver"
	TypeAck     = "ack"
	TypeEnd     = "end"
)

// Enqueue and ack statuses.
const (
	StatusOK          = "ok"
	StatusFailed      = "failed"
	StatusUnknown     = "unknown"
	StatusNotInFlight = "not_in_flight"
)

// Event is one line of a history file.
type Event struct {
	Type       string `json:"type"`
	Version    int    `json:"version,omitempty"`
	Run        string `json:"run,omitempty"`
	Mode       string `json:"mode,omitempty"`
	Note       string `json:"note,omitempty"`
	Status     string `json:"status,omitempty"`
	Queue      string `json:"queue,omitempty"`
	ID         string `json:"id,omitempty"`
	Idem       string `json:"idem,omitempty"`
	Attempt    int    `json:"attempt,omitempty"`
	Client     string `json:"client,omitempty"`
	InvokeUS   int64  `json:"invoke_us,omitempty"`
	CompleteUS int64  `json:"complete_us,omitempty"`
	ServerUS   int64  `json:"server_us,omitempty"`
	IntervalUS int64  `json:"interval_us,omitempty"`
	Count      int64  `json:"count,omitempty"`
	Shard      string `json:"shard,omitempty"`
	Node       string `json:"node,omitempty"`
	Epoch      uint64 `json:"epoch,omitempty"`
	Duplicate  bool   `json:"duplicate,omitempty"`
	TimeUS     int64  `json:"t_us,omitempty"`
	BodyOK     *bool  `json:"body_ok,omitempty"`
	Drained    bool   `json:"drained,omitempty"`
	Error      string `json:"error,omitempty"`
	// Line is the event's line number when read from a file (not written).
	Line int `json:"-"`
}

// Validate checks one event on its own.
func (e Event) Validate() error {
	need := func(ok bool, what string) error {
		if !ok {
			return fmt.Errorf("%s record: %s", e.Type, what)
		}
		return nil
	}
	var errs []error
	add := func(err error) {
		if err != nil {
			errs = append(errs, err)
		}
	}
	switch e.Type {
	case TypeHeader:
		add(need(e.Version == Version, fmt.Sprintf("version %d, want %d", e.Version, Version)))
		add(need(e.Run != "", "no run"))
	case TypeEnqueue:
		add(need(e.Status == StatusOK || e.Status == StatusFailed || e.Status == StatusUnknown, fmt.Sprintf("status %q: want ok, failed or unknown", e.Status)))
		add(need(e.Queue != "", "no queue"))
		add(need(e.ID != "", "no id"))
		add(need(e.Attempt >= 1, "attempt must be at least 1"))
		add(need(e.InvokeUS > 0, "no invoke_us"))
		add(need(e.CompleteUS >= e.InvokeUS, "complete_us before invoke_us"))
		if e.Status == StatusOK {
			add(need(e.Shard != "", "ok without shard"))
			add(need(e.Epoch >= 1, "ok without epoch"))
		}
	case TypeDeliver:
		add(need(e.Queue != "", "no queue"))
		add(need(e.ID != "", "no id"))
		add(need(e.ServerUS > 0, "no server_us"))
		add(need(e.Count >= 1, "count must be at least 1"))
		add(need(e.IntervalUS >= 0, "negative interval_us"))
	case TypeAck:
		add(need(e.Queue != "", "no queue"))
		add(need(e.ID != "", "no id"))
		add(need(e.Status == StatusOK || e.Status == StatusFailed || e.Status == StatusUnknown || e.Status == StatusNotInFlight,
			fmt.Sprintf("status %q: want ok, failed, unknown or not_in_flight", e.Status)))
	case TypeEnd:
	default:
		return fmt.Errorf("unknown record type %q", e.Type)
	}
	return errors.Join(errs...)
}

// ParseError is a malformed line.
type ParseError struct {
	Line int
	Err  error
}

func (e *ParseError) Error() string { return fmt.Sprintf("history line %d: %v", e.Line, e.Err) }
func (e *ParseError) Unwrap() error { return e.Err }

// ErrMalformed is wrapped by every ParseError.
var ErrMalformed = errors.New("malformed history")

// MaxLine is the longest line accepted.
const MaxLine = 1 << 20

// Reader reads events one by one.
type Reader struct {
	r      *bufio.Reader
	line   int
	header bool
}

// NewReader returns a reader of a history stream.
func NewReader(r io.Reader) *Reader { return &Reader{r: bufio.NewReaderSize(r, 64<<10)} }

// Next returns the next event, io.EOF at the end, or a *ParseError. The first
// line must be a header, and only the first.
func (r *Reader) Next() (Event, error) {
	for {
		raw, err := r.readLine()
		if err != nil {
			return Event{}, err
		}
		r.line++
		if len(bytes.TrimSpace(raw)) == 0 {
			return Event{}, r.fail(errors.New("empty line"))
		}
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.DisallowUnknownFields()
		var e Event
		if err := dec.Decode(&e); err != nil {
			return Event{}, r.fail(fmt.Errorf("bad JSON: %v", err))
		}
		if dec.More() {
			return Event{}, r.fail(errors.New("more than one JSON value on the line"))
		}
		if err := e.Validate(); err != nil {
			return Event{}, r.fail(err)
		}
		if !r.header && e.Type != TypeHeader {
			return Event{}, r.fail(errors.New("first line must be a header record"))
		}
		if r.header && e.Type == TypeHeader {
			return Event{}, r.fail(errors.New("a second header record"))
		}
		r.header = true
		e.Line = r.line
		return e, nil
	}
}

func (r *Reader) fail(err error) error {
	return &ParseError{Line: r.line, Err: fmt.Errorf("%w: %w", ErrMalformed, err)}
}

func (r *Reader) readLine() ([]byte, error) {
	var buf []byte
	for {
		chunk, err := r.r.ReadSlice('\n')
		buf = append(buf, chunk...)
		if len(buf) > MaxLine {
			return nil, &ParseError{Line: r.line + 1, Err: fmt.Errorf("%w: line longer than %d bytes", ErrMalformed, MaxLine)}
		}
		switch {
		case err == nil:
			return bytes.TrimSuffix(buf, []byte("\n")), nil
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF):
			if len(buf) == 0 {
				if !r.header {
					return nil, &ParseError{Line: 1, Err: fmt.Errorf("%w: empty history (no header)", ErrMalformed)}
				}
				return nil, io.EOF
			}
			return nil, &ParseError{Line: r.line + 1, Err: fmt.Errorf("%w: last line has no newline (truncated file?)", ErrMalformed)}
		default:
			return nil, err
		}
	}
}

// ReadAll reads every event.
func ReadAll(r io.Reader) ([]Event, error) {
	hr := NewReader(r)
	var out []Event
	for {
		e, err := hr.Next()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, err
		}
		out = append(out, e)
	}
}

// ReadFile reads a history file.
func ReadFile(path string) ([]Event, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return ReadAll(f)
}

// Writer appends events; it is safe for concurrent use.
type Writer struct {
	mu  sync.Mutex
	w   *bufio.Writer
	c   io.Closer
	err error
}

// NewWriter writes to w (closed by Close when it is an io.Closer).
func NewWriter(w io.Writer) *Writer {
	hw := &Writer{w: bufio.NewWriterSize(w, 64<<10)}
	if c, ok := w.(io.Closer); ok {
		hw.c = c
	}
	return hw
}

// Create creates (truncates) a history file.
func Create(path string) (*Writer, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return NewWriter(f), nil
}

// Write appends one event. The first error sticks and is returned by Close too.
func (w *Writer) Write(e Event) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	b = append(b, '\n')
	_, w.err = w.w.Write(b)
	return w.err
}

// Flush writes buffered events out.
func (w *Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err == nil {
		w.err = w.w.Flush()
	}
	return w.err
}

// Close flushes and closes the underlying file.
func (w *Writer) Close() error {
	err := w.Flush()
	if w.c != nil {
		if cerr := w.c.Close(); err == nil {
			err = cerr
		}
	}
	return err
}
