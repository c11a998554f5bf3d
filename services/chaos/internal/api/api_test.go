package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/injector"
)

type fakeInj struct {
	mu     sync.Mutex
	starts []injector.Request
	halts  int
	recs   []string
	err    error
}

func (f *fakeInj) Start(_ context.Context, r injector.Request) (injector.Attack, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return injector.Attack{}, f.err
	}
	f.starts = append(f.starts, r)
	return injector.Attack{ID: "a1", Fault: r.Fault, Selector: r.Target, State: injector.StateActive, DryRun: r.DryRun}, nil
}
func (f *fakeInj) Recover(_ context.Context, id string) (injector.Attack, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if id != "a1" {
		return injector.Attack{}, fmt.Errorf("%w: %q", injector.ErrUnknownAttack, id)
	}
	f.recs = append(f.recs, id)
	return injector.Attack{ID: id, State: injector.StateRecovered}, nil
}
func (f *fakeInj) Halt(context.Context, string) ([]injector.Attack, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.halts++
	return nil, nil
}
func (f *fakeInj) Active() []injector.Attack { return nil }

func (f *fakeInj) changes() int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return len(f.starts) + f.halts + len(f.recs)
}

const token = "s3cret-token"

func do(t *testing.T, h http.Handler, method, path, auth, body string) (int, map[string]any) {
	t.Helper()
	r := httptest.NewRequest(method, path, strings.NewReader(body))
	if auth != "" {
		r.Header.Set("Authorization", auth)
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	var m map[string]any
	b, _ := io.ReadAll(w.Body)
	if err := json.Unmarshal(b, &m); err != nil && w.Code != 200 {
		t.Fatalf("%s %s: non-JSON body %q", method, path, b)
	}
	return w.Code, m
}

func TestUnauthenticatedCallsGet401AndChangeNothing(t *testing.T) {
	f := &fakeInj{}
	s := New(f, token, prometheus.NewRegistry(), zerolog.Nop())
	good := `{"fault":"kill","target":"shard:s1/primary"}`
	for _, auth := range []string{"", "Bearer", "Bearer ", "Bearer wrong", "Basic " + token, "bearer " + token + "x", token} {
		for _, c := range []struct{ m, p, b string }{
			{"POST", "/v1/attacks", good}, {"POST", "/v1/halt", ""}, {"DELETE", "/v1/attacks/a1", ""}, {"GET", "/v1/attacks", ""},
		} {
			code, body := do(t, s, c.m, c.p, auth, c.b)
			if code != http.StatusUnauthorized || body["error"] == nil {
				t.Fatalf("%s %s with %q: %d %v", c.m, c.p, auth, code, body)
			}
		}
	}
	if f.changes() != 0 {
		t.Fatalf("unauthenticated calls changed something: %+v", f)
	}
	// No token configured: nothing is accepted.
	s = New(f, "", nil, zerolog.Nop())
	if code, _ := do(t, s, "POST", "/v1/halt", "Bearer ", ""); code != 401 {
		t.Fatalf("empty token configured: %d", code)
	}
	// Case-insensitive scheme, right token.
	s = New(f, token, nil, zerolog.Nop())
	if code, _ := do(t, s, "POST", "/v1/attacks", "bearer "+token, good); code != http.StatusCreated {
		t.Fatalf("valid call: %d", code)
	}
}

func TestMalformedRequestsGet400AndChangeNothing(t *testing.T) {
	f := &fakeInj{}
	s := New(f, token, nil, zerolog.Nop())
	auth := "Bearer " + token
	cases := []struct {
		body, field, frag string
	}{
		{``, "", "empty body"},
		{`{`, "", "truncated"},
		{`[]`, "", "want a JSON object"},
		{`{"fault":"kill","target":"shard:s1/primary"} {}`, "", "trailing data"},
		{`{"fault":"kill","target":"shard:s1/primary","colour":"red"}`, "colour", "unknown field"},
		{`{"target":"shard:s1/primary"}`, "fault", "required"},
		{`{"fault":"explode","target":"shard:s1/primary"}`, "fault", "unknown fault kind"},
		{`{"fault":"kill"}`, "target", "required"},
		{`{"fault":"kill","target":"moon:1"}`, "target", "unknown target type"},
		{`{"fault":"pause","target":"shard:s1/primary","duration":"soon"}`, "duration", "not a duration"},
		{`{"fault":"pause","target":"shard:s1/primary","duration":"-1s"}`, "duration", "negative"},
		{`{"fault":"pause","target":"shard:s1/primary","duration":5}`, "duration", "want string"},
		{`{"fault":"kill","target":"shard:s1/primary","params":{"a":1}}`, "params", "want string"},
		{`{"fault":"kill","target":"shard:s1/primary","dry_run":"yes"}`, "dry_run", "want bool"},
	}
	for _, c := range cases {
		code, body := do(t, s, "POST", "/v1/attacks", auth, c.body)
		if code != http.StatusBadRequest {
			t.Errorf("%s: status %d %v", c.body, code, body)
			continue
		}
		msg, _ := body["error"].(string)
		field, _ := body["field"].(string)
		if !strings.Contains(msg, c.frag) || field != c.field {
			t.Errorf("%s: error %q field %q, want %q in it and field %q", c.body, msg, field, c.frag, c.field)
		}
	}
	// Oversized body.
	big := `{"fault":"kill","target":"shard:s1/primary","params":{"x":"` + strings.Repeat("y", MaxBody) + `"}}`
	if code, _ := do(t, s, "POST", "/v1/attacks", auth, big); code != http.StatusRequestEntityTooLarge {
		t.Errorf("oversized body: %d", code)
	}
	// Wrong content type.
	r := httptest.NewRequest("POST", "/v1/attacks", strings.NewReader(`{"fault":"kill","target":"shard:s1/primary"}`))
	r.Header.Set("Authorization", auth)
	r.Header.Set("Content-Type", "text/plain")
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	if w.Code != 400 {
		t.Errorf("text/plain: %d", w.Code)
	}
	if f.changes() != 0 {
		t.Fatalf("malformed requests changed something: %+v", f.starts)
	}
}

func TestEndpoints(t *testing.T) {
	f := &fakeInj{}
	reg := prometheus.NewRegistry()
	reg.MustRegister(prometheus.NewCounter(prometheus.CounterOpts{Name: "chaos_test_total", Help: "x"}))
	s := New(f, token, reg, zerolog.Nop())
	auth := "Bearer " + token
	code, body := do(t, s, "POST", "/v1/attacks", auth, `{"fault":"pause","target":"shard:random/primary","duration":"5s","params":{},"dry_run":true}`)
	if code != 200 || body["attack"] == nil {
		t.Fatalf("dry run: %d %v", code, body)
	}
	if len(f.starts) != 1 || f.starts[0].Duration.String() != "5s" || !f.starts[0].DryRun {
		t.Fatalf("request passed on: %+v", f.starts)
	}
	if code, _ := do(t, s, "GET", "/v1/attacks", auth, ""); code != 200 {
		t.Fatal(code)
	}
	if code, _ := do(t, s, "DELETE", "/v1/attacks/a1", auth, ""); code != 200 {
		t.Fatal(code)
	}
	if code, _ := do(t, s, "DELETE", "/v1/attacks/nope", auth, ""); code != 404 {
		t.Fatal(code)
	}
	if code, _ := do(t, s, "POST", "/v1/halt", auth, ""); code != 200 || f.halts != 1 {
		t.Fatal(code)
	}
	if code, _ := do(t, s, "GET", "/v1/faults", auth, ""); code != 200 {
		t.Fatal(code)
	}
	if code, _ := do(t, s, "GET", "/healthz", "", ""); code != 200 {
		t.Fatal(code)
	}
	r := httptest.NewRequest("GET", "/metrics", nil)
	w := httptest.NewRecorder()
	s.ServeHTTP(w, r)
	if w.Code != 200 || !strings.Contains(w.Body.String(), "chaos_test_total") {
		t.Fatalf("metrics: %d", w.Code)
	}
	if code, _ := do(t, s, "GET", "/v2/whatever", auth, ""); code != 404 {
		t.Fatal(code)
	}
	// Refusals map to statuses.
	for err, want := range map[error]int{
		fmt.Errorf("not attacking: %w", injector.ErrNotAllowed):    403,
		fmt.Errorf("not attacking: %w", injector.ErrDegraded):      409,
		fmt.Errorf("not attacking: %w", injector.ErrOpenAlert):     409,
		fmt.Errorf("not attacking: %w", injector.ErrTooManyShards): 409,
		fmt.Errorf("x: %w", injector.ErrInvalid):                   400,
		fmt.Errorf("x: %w", injector.ErrNotRecorded):               503,
		errors.New("boom"): 500,
	} {
		f.err = err
		if code, _ := do(t, s, "POST", "/v1/attacks", auth, `{"fault":"kill","target":"shard:s1/primary"}`); code != want {
			t.Errorf("%v: %d, want %d", err, code, want)
		}
	}
}

func FuzzDecodeAttack(f *testing.F) {
	for _, s := range []string{
		`{"fault":"kill","target":"shard:s1/primary"}`,
		`{"fault":"pause","target":"shard:random/primary","duration":"5s","params":{"a":"b"},"dry_run":true}`,
		`{"fault":"latency","target":"link:replica->primary@s1","params":{"latency":"100ms"}}`,
		`{"fault":1}`, `null`, `{"params":{"x":null}}`, `{"duration":"9999999999h"}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := DecodeAttack(b)
		if err != nil {
			var re *RequestError
			if !errors.As(err, &re) {
				t.Fatalf("error is not a *RequestError: %T %v", err, err)
			}
			return
		}
		if req.Fault == "" || req.Target == "" || req.Duration < 0 || len(req.Params) > MaxParams {
			t.Fatalf("accepted an invalid request: %+v", req)
		}
	})
}
