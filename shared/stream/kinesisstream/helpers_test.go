package kinesisstream_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/service/kinesis"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/kv/memkv"
	"github.com/heartline/heartline/shared/localaws"
	"github.com/heartline/heartline/shared/stream/kinesisstream"
)

var prefixSeq atomic.Int64

// uniquePrefix isolates a test's streams on a shared kinesalite.
func uniquePrefix(t *testing.T) string {
	return fmt.Sprintf("t%d-%d", time.Now().UnixNano()%1e9, prefixSeq.Add(1))
}

// testLog writes warnings and errors to the test log.
func testLog(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel).With().Timestamp().Logger()
}

// fastOptions are short intervals for tests.
func fastOptions(t *testing.T, c kinesisstream.Client, prefix string, store kv.Store) kinesisstream.Options {
	return kinesisstream.Options{
		Client: c, StreamPrefix: prefix, Create: true, ShardCount: 2, Checkpoints: store,
		LeaseTTL: time.Second, PollInterval: 20 * time.Millisecond, MinGetInterval: -1,
		PublishRetry: backoff.Policy{Initial: 5 * time.Millisecond, Max: 50 * time.Millisecond},
		HandlerRetry: backoff.Policy{Initial: 10 * time.Millisecond, Max: 100 * time.Millisecond},
		Log:          testLog(t),
	}
}

func newBackend(t *testing.T, o kinesisstream.Options) *kinesisstream.Backend {
	t.Helper()
	b, err := kinesisstream.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close() })
	return b
}

// env is one kinesalite with a client, a store, and a fault injector in front.
type env struct {
	srv    *localaws.Server
	inj    *injector
	client *kinesis.Client
	store  *memkv.Store
	prefix string
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := localaws.Kinesis(t)
	inj := &injector{base: http.DefaultTransport, queued: map[string][]string{}, calls: map[string]int{}}
	c := localaws.KinesisClient(srv.Endpoint(), func(o *kinesis.Options) {
		o.HTTPClient = &http.Client{Transport: inj, Timeout: 30 * time.Second}
	})
	return &env{srv: srv, inj: inj, client: c, store: memkv.New(), prefix: uniquePrefix(t)}
}

func testCtx(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// ---- fault injection in front of kinesalite ----

type putEntry struct {
	Data         []byte `json:"Data"`
	PartitionKey string `json:"PartitionKey"`
}

type putRequest struct {
	StreamName string     `json:"StreamName"`
	Records    []putEntry `json:"Records"`
}

type putResult struct {
	SequenceNumber string `json:"SequenceNumber,omitempty"`
	ShardID        string `json:"ShardId,omitempty"`
	ErrorCode      string `json:"ErrorCode,omitempty"`
	ErrorMessage   string `json:"ErrorMessage,omitempty"`
}

type putResponse struct {
	FailedRecordCount int         `json:"FailedRecordCount"`
	Records           []putResult `json:"Records"`
}

// injector is an http.RoundTripper in front of kinesalite that answers chosen calls
// with error responses and fails chosen PutRecords entries (without writing them).
type injector struct {
	base http.RoundTripper

	mu      sync.Mutex
	queued  map[string][]string // operation -> error codes for its next calls
	calls   map[string]int
	puts    []putRequest // every PutRecords request that reached the injector
	partial func(call int, i int, e putEntry) string
}

func (in *injector) fail(op string, codes ...string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.queued[op] = append(in.queued[op], codes...)
}

func (in *injector) setPartial(f func(call, i int, e putEntry) string) {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.partial = f
}

func (in *injector) count(op string) int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.calls[op]
}

func (in *injector) putRequests() []putRequest {
	in.mu.Lock()
	defer in.mu.Unlock()
	return append([]putRequest(nil), in.puts...)
}

func (in *injector) reset() {
	in.mu.Lock()
	defer in.mu.Unlock()
	in.puts = nil
	in.calls = map[string]int{}
	in.partial = nil
}

func jsonResponse(req *http.Request, status int, body []byte) *http.Response {
	return &http.Response{
		StatusCode: status, Status: fmt.Sprintf("%d %s", status, http.StatusText(status)),
		Header:        http.Header{"Content-Type": []string{"application/x-amz-json-1.1"}},
		Body:          io.NopCloser(bytes.NewReader(body)),
		ContentLength: int64(len(body)), Request: req, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
	}
}

func (in *injector) RoundTrip(req *http.Request) (*http.Response, error) {
	op := strings.TrimPrefix(req.Header.Get("X-Amz-Target"), "Kinesis_20131202.")
	var body []byte
	if req.Body != nil {
		b, err := io.ReadAll(req.Body)
		if err != nil {
			return nil, err
		}
		req.Body.Close()
		body = b
	}
	in.mu.Lock()
	in.calls[op]++
	call := in.calls[op]
	var code string
	if q := in.queued[op]; len(q) > 0 {
		code, in.queued[op] = q[0], q[1:]
	}
	var pr putRequest
	if op == "PutRecords" {
		_ = json.Unmarshal(body, &pr)
		in.puts = append(in.puts, pr)
	}
	partial := in.partial
	in.mu.Unlock()
	if code != "" {
		status := 400
		if code == "InternalFailure" || code == "ServiceUnavailable" {
			status = 500
		}
		b, _ := json.Marshal(map[string]string{"__type": code, "message": "injected by the test"})
		return jsonResponse(req, status, b), nil
	}
	if op != "PutRecords" || partial == nil {
		return in.forward(req, body)
	}
	// Fail some entries: forward only the others, then merge the answers.
	var keep []putEntry
	failed := map[int]string{}
	for i, e := range pr.Records {
		if c := partial(call, i, e); c != "" {
			failed[i] = c
		} else {
			keep = append(keep, e)
		}
	}
	var fwd putResponse
	if len(keep) > 0 {
		b, _ := json.Marshal(putRequest{StreamName: pr.StreamName, Records: keep})
		resp, err := in.forward(req, b)
		if err != nil {
			return nil, err
		}
		rb, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return jsonResponse(req, resp.StatusCode, rb), nil
		}
		if err := json.Unmarshal(rb, &fwd); err != nil {
			return nil, err
		}
	}
	out := putResponse{FailedRecordCount: len(failed)}
	j := 0
	for i := range pr.Records {
		if c, ok := failed[i]; ok {
			out.Records = append(out.Records, putResult{ErrorCode: c, ErrorMessage: "injected by the test"})
			continue
		}
		out.Records = append(out.Records, fwd.Records[j])
		j++
	}
	b, _ := json.Marshal(out)
	return jsonResponse(req, 200, b), nil
}

func (in *injector) forward(req *http.Request, body []byte) (*http.Response, error) {
	r2 := req.Clone(req.Context())
	r2.Body = io.NopCloser(bytes.NewReader(body))
	r2.ContentLength = int64(len(body))
	r2.Header.Set("Content-Length", fmt.Sprint(len(body)))
	return in.base.RoundTrip(r2)
}
