package localaws

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"
)

// Kinesis starts kinesalite for t and stops it when t ends. A missing node or
// node_modules fails the test with the command that installs it; it never skips.
func Kinesis(t testing.TB) *Server { t.Helper(); return startT(t, "kinesis") }

// Dynamo starts dynalite for t and stops it when t ends, like Kinesis.
func Dynamo(t testing.TB) *Server { t.Helper(); return startT(t, "dynamodb") }

func startT(t testing.TB, service string) *Server {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var s *Server
	var err error
	if service == "kinesis" {
		s, err = StartKinesis(ctx, Options{Output: testWriter{t: t}})
	} else {
		s, err = StartDynamo(ctx, Options{Output: testWriter{t: t}})
	}
	if err != nil {
		if errors.Is(err, ErrNodeMissing) || errors.Is(err, ErrNotInstalled) {
			t.Fatalf("%s is needed by this test and cannot run: %v", service, err)
		}
		t.Fatalf("starting %s: %v", service, err)
	}
	t.Cleanup(func() {
		done.Lock()
		done.m[t] = true
		done.Unlock()
		if err := s.Stop(); err != nil {
			t.Logf("stopping %s: %v", service, err)
		}
	})
	return s
}

// done records finished tests, so that server output arriving after the test ended is
// not written to t (testing panics on Log after a test completed).
var done = struct {
	sync.Mutex
	m map[testing.TB]bool
}{m: map[testing.TB]bool{}}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	done.Lock()
	defer done.Unlock()
	if !done.m[w.t] {
		w.t.Logf("localaws: %s", p)
	}
	return len(p), nil
}
