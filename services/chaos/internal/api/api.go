// Package api is the chaos service's HTTP API: start an attack, list the active ones,
// recover one, halt everything. Every /v1 call needs the bearer token (compared in
// constant time); an unauthenticated call gets 401 and a malformed one 400 with a JSON
// error naming the field, and neither changes anything. Request bodies are bounded and
// decoded strictly. /healthz and /metrics are open.
package api

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/fault"
	"github.com/heartline/heartline/services/chaos/internal/injector"
	"github.com/heartline/heartline/services/chaos/internal/target"
)

// MaxBody bounds a request body.
const MaxBody = 64 << 10

// MaxParams bounds the parameters of one attack request.
const MaxParams = 32

// Injector is what the API drives.
type Injector interface {
	Start(ctx context.Context, req injector.Request) (injector.Attack, error)
	Recover(ctx context.Context, id string) (injector.Attack, error)
	Halt(ctx context.Context, reason string) ([]injector.Attack, error)
	Active() []injector.Attack
}

// Server is the HTTP handler.
type Server struct {
	inj     Injector
	token   [32]byte
	hasTok  bool
	gather  prometheus.Gatherer
	log     zerolog.Logger
	mux     *http.ServeMux
	timeout time.Duration
}

// New returns the handler. An empty token refuses every /v1 call.
func New(inj Injector, token string, gather prometheus.Gatherer, log zerolog.Logger) *Server {
	s := &Server{inj: inj, gather: gather, log: log, mux: http.NewServeMux(), timeout: 2 * time.Minute}
	if token != "" {
		s.token, s.hasTok = sha256.Sum256([]byte(token)), true
	}
	s.mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"ok": true})
	})
	if gather != nil {
		s.mux.Handle("GET /metrics", promhttp.HandlerFor(gather, promhttp.HandlerOpts{}))
	}
	s.mux.HandleFunc("GET /v1/attacks", s.auth(s.list))
	s.mux.HandleFunc("POST /v1/attacks", s.auth(s.start))
	s.mux.HandleFunc("DELETE /v1/attacks/{id}", s.auth(s.recover))
	s.mux.HandleFunc("POST /v1/halt", s.auth(s.halt))
	s.mux.HandleFunc("GET /v1/faults", s.auth(s.faults))
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeErr(w, http.StatusNotFound, "no such endpoint: "+r.Method+" "+r.URL.Path, "")
	})
	return s
}

// ServeHTTP implements http.Handler.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	s.mux.ServeHTTP(w, r)
}

// HTTPServer wraps the handler in a server with timeouts.
func (s *Server) HTTPServer(addr string) *http.Server {
	return &http.Server{Addr: addr, Handler: s, ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 15 * time.Second,
		WriteTimeout: s.timeout + 10*time.Second, IdleTimeout: time.Minute, MaxHeaderBytes: 16 << 10}
}

func (s *Server) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		got, ok := bearer(r.Header.Get("Authorization"))
		sum := sha256.Sum256([]byte(got))
		valid := subtle.ConstantTimeCompare(sum[:], s.token[:]) == 1
		if !ok || !s.hasTok || !valid {
			w.Header().Set("WWW-Authenticate", `Bearer realm="chaos"`)
			s.log.Warn().Str("remote", r.RemoteAddr).Str("path", r.URL.Path).Msg("chaos API call refused: missing or wrong bearer token")
			writeErr(w, http.StatusUnauthorized, "missing or wrong bearer token", "")
			return
		}
		h(w, r)
	}
}

func bearer(h string) (string, bool) {
	const p = "Bearer "
	if len(h) <= len(p) || !strings.EqualFold(h[:len(p)], p) {
		return "", false
	}
	return strings.TrimSpace(h[len(p):]), true
}

func (s *Server) list(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"attacks": nonNil(s.inj.Active())})
}

func (s *Server) faults(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]any{"faults": fault.Catalogue, "selectors": target.Syntax})
}

func (s *Server) start(w http.ResponseWriter, r *http.Request) {
	if ct := r.Header.Get("Content-Type"); ct != "" && !strings.HasPrefix(strings.ToLower(ct), "application/json") {
		writeErr(w, http.StatusBadRequest, "Content-Type must be application/json, got "+truncate(ct), "")
		return
	}
	body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, MaxBody))
	if err != nil {
		var mbe *http.MaxBytesError
		if errors.As(err, &mbe) {
			writeErr(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("body larger than %d bytes", MaxBody), "")
			return
		}
		writeErr(w, http.StatusBadRequest, "reading the body: "+err.Error(), "")
		return
	}
	req, err := DecodeAttack(body)
	if err != nil {
		var re *RequestError
		field := ""
		if errors.As(err, &re) {
			field = re.Field
		}
		writeErr(w, http.StatusBadRequest, err.Error(), field)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), s.timeout)
	defer cancel()
	a, err := s.inj.Start(ctx, req)
	if err != nil {
		status := statusOf(err)
		if a.ID != "" {
			writeJSON(w, status, map[string]any{"error": err.Error(), "attack": a})
			return
		}
		writeErr(w, status, err.Error(), "")
		return
	}
	status := http.StatusCreated
	if a.DryRun {
		status = http.StatusOK
	}
	writeJSON(w, status, map[string]any{"attack": a})
}

func (s *Server) recover(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	if id == "" || len(id) > 128 {
		writeErr(w, http.StatusBadRequest, "bad attack id", "id")
		return
	}
	a, err := s.inj.Recover(context.WithoutCancel(r.Context()), id)
	if err != nil && a.ID == "" {
		writeErr(w, statusOf(err), err.Error(), "")
		return
	}
	if err != nil {
		writeJSON(w, http.StatusInternalServerError, map[string]any{"error": err.Error(), "attack": a})
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"attack": a})
}

func (s *Server) halt(w http.ResponseWriter, r *http.Request) {
	// A halt must finish even if the caller goes away.
	halted, err := s.inj.Halt(context.WithoutCancel(r.Context()), "API call from "+r.RemoteAddr)
	body := map[string]any{"halted": nonNil(halted)}
	if err != nil {
		body["error"] = err.Error()
		writeJSON(w, http.StatusInternalServerError, body)
		return
	}
	writeJSON(w, http.StatusOK, body)
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, injector.ErrInvalid):
		return http.StatusBadRequest
	case errors.Is(err, injector.ErrNotAllowed):
		return http.StatusForbidden
	case errors.Is(err, injector.ErrUnknownAttack):
		return http.StatusNotFound
	case errors.Is(err, target.ErrNoTarget):
		return http.StatusUnprocessableEntity
	case errors.Is(err, injector.ErrTooManyShards), errors.Is(err, injector.ErrDegraded), errors.Is(err, injector.ErrOpenAlert),
		errors.Is(err, injector.ErrBusy), errors.Is(err, injector.ErrHalted):
		return http.StatusConflict
	case errors.Is(err, injector.ErrNotRecorded):
		return http.StatusServiceUnavailable
	}
	return http.StatusInternalServerError
}

// RequestError says what is wrong with a request body.
type RequestError struct {
	Field string
	Msg   string
}

func (e *RequestError) Error() string {
	if e.Field == "" {
		return e.Msg
	}
	return e.Field + ": " + e.Msg
}

// AttackBody is the JSON body of POST /v1/attacks.
type AttackBody struct {
	Fault    string            `json:"fault"`
	Target   string            `json:"target"`
	Duration string            `json:"duration,omitempty"`
	Params   map[string]string `json:"params,omitempty"`
	DryRun   bool              `json:"dry_run,omitempty"`
}

// DecodeAttack decodes and validates the shape of an attack request strictly: one
// JSON object, known fields only, a fault from the catalogue, a selector that parses,
// a duration that parses. It never panics. Whether the fault can act on the target and
// its parameters are checked by the injector.
func DecodeAttack(body []byte) (injector.Request, error) {
	if len(bytes.TrimSpace(body)) == 0 {
		return injector.Request{}, &RequestError{Msg: "empty body: want a JSON object with fault and target"}
	}
	if len(body) > MaxBody {
		return injector.Request{}, &RequestError{Msg: fmt.Sprintf("body larger than %d bytes", MaxBody)}
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	var b AttackBody
	if err := dec.Decode(&b); err != nil {
		return injector.Request{}, jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return injector.Request{}, &RequestError{Msg: "trailing data after the JSON object"}
	}
	if b.Fault == "" {
		return injector.Request{}, &RequestError{Field: "fault", Msg: "required (one of " + strings.Join(fault.KindNames(), ", ") + ")"}
	}
	if _, err := fault.Lookup(fault.Kind(b.Fault)); err != nil {
		return injector.Request{}, &RequestError{Field: "fault", Msg: err.Error()}
	}
	if b.Target == "" {
		return injector.Request{}, &RequestError{Field: "target", Msg: "required (" + target.Syntax + ")"}
	}
	if _, err := target.Parse(b.Target); err != nil {
		return injector.Request{}, &RequestError{Field: "target", Msg: err.Error()}
	}
	var d time.Duration
	if b.Duration != "" {
		var err error
		if d, err = fault.ParseDuration(b.Duration); err != nil {
			return injector.Request{}, &RequestError{Field: "duration", Msg: err.Error()}
		}
		if d < 0 {
			return injector.Request{}, &RequestError{Field: "duration", Msg: "must not be negative"}
		}
	}
	if len(b.Params) > MaxParams {
		return injector.Request{}, &RequestError{Field: "params", Msg: fmt.Sprintf("at most %d parameters", MaxParams)}
	}
	return injector.Request{Fault: fault.Kind(b.Fault), Target: b.Target, Duration: d, Params: b.Params, DryRun: b.DryRun}, nil
}

func jsonError(err error) error {
	var te *json.UnmarshalTypeError
	var se *json.SyntaxError
	switch {
	case errors.As(err, &te):
		f := te.Field
		if f == "" {
			return &RequestError{Msg: fmt.Sprintf("want a JSON object, got %s", te.Value)}
		}
		return &RequestError{Field: f, Msg: fmt.Sprintf("want %s, got JSON %s", te.Type, te.Value)}
	case errors.As(err, &se):
		return &RequestError{Msg: fmt.Sprintf("malformed JSON at byte %d: %v", se.Offset, se)}
	case strings.HasPrefix(err.Error(), "json: unknown field "):
		name := strings.Trim(strings.TrimPrefix(err.Error(), "json: unknown field "), `"`)
		return &RequestError{Field: truncate(name), Msg: "unknown field (want fault, target, duration, params, dry_run)"}
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return &RequestError{Msg: "truncated JSON"}
	}
	return &RequestError{Msg: "malformed JSON: " + truncate(err.Error())}
}

type errBody struct {
	Error string `json:"error"`
	Field string `json:"field,omitempty"`
}

func writeErr(w http.ResponseWriter, status int, msg, field string) {
	writeJSON(w, status, errBody{Error: msg, Field: field})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func truncate(s string) string {
	if len(s) > 80 {
		return s[:80] + "..."
	}
	return s
}
