// Package localaws starts the local stand-ins for the AWS services Heartline uses:
// kinesalite for Amazon Kinesis and dynalite for DynamoDB. They are node programs kept in
// scripts/localaws (installed from its package-lock.json by ./scripts/test, or by
// `cd scripts/localaws && npm ci`). Tests use Kinesis(t) and Dynamo(t); the game day
// uses StartKinesis and StartDynamo. Servers listen on 127.0.0.1 only.
package localaws

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Errors of Start*.
var (
	// ErrNodeMissing: the node binary is not on PATH.
	ErrNodeMissing = errors.New("localaws: node is not installed (install nodejs and npm, then run ./scripts/test or `cd scripts/localaws && npm ci`)")
	// ErrNotInstalled: scripts/localaws or its node_modules is missing.
	ErrNotInstalled = errors.New("localaws: kinesalite/dynalite are not installed (./scripts/test installs them, or run `cd scripts/localaws && npm ci`)")
)

// DirEnv names the environment variable that points at scripts/localaws.
const DirEnv = "HEARTLINE_LOCALAWS_DIR"

// Options tune a server.
type Options struct {
	// Dir is the scripts/localaws directory; default $HEARTLINE_LOCALAWS_DIR, else found
	// by walking up from the working directory.
	Dir string
	// DataDir keeps the server's data on disk; empty keeps it in memory.
	DataDir string
	// Port to listen on; 0 picks a free one.
	Port int
	// Output receives the server's stdout and stderr after the ready line (nil: discarded).
	Output io.Writer
	// StartTimeout bounds the wait for the ready line (default 30 s).
	StartTimeout time.Duration
}

// Server is a running kinesalite or dynalite process.
type Server struct {
	service string
	addr    string
	cmd     *exec.Cmd
	done    chan struct{}
	stop    sync.Once
	stopErr error
}

// StartKinesis starts kinesalite.
func StartKinesis(ctx context.Context, o Options) (*Server, error) { return start(ctx, "kinesis", o) }

// StartDynamo starts dynalite.
func StartDynamo(ctx context.Context, o Options) (*Server, error) { return start(ctx, "dynamodb", o) }

// FindDir returns the scripts/localaws directory: $HEARTLINE_LOCALAWS_DIR, else the
// first scripts/localaws/serve.js found walking up from the working directory.
func FindDir() (string, error) {
	if d := os.Getenv(DirEnv); d != "" {
		return d, nil
	}
	wd, err := os.Getwd()
	if err != nil {
		return "", fmt.Errorf("localaws: %w", err)
	}
	for d := wd; ; d = filepath.Dir(d) {
		cand := filepath.Join(d, "scripts", "localaws")
		if _, err := os.Stat(filepath.Join(cand, "serve.js")); err == nil {
			return cand, nil
		}
		if filepath.Dir(d) == d {
			return "", fmt.Errorf("%w: no scripts/localaws/serve.js above %s (set %s)", ErrNotInstalled, wd, DirEnv)
		}
	}
}

// Check reports what is missing to run the servers, naming the fix.
func Check(dir string) error {
	if _, err := exec.LookPath("node"); err != nil {
		return ErrNodeMissing
	}
	if _, err := os.Stat(filepath.Join(dir, "serve.js")); err != nil {
		return fmt.Errorf("%w: %s has no serve.js", ErrNotInstalled, dir)
	}
	for _, m := range []string{"kinesalite", "dynalite"} {
		if _, err := os.Stat(filepath.Join(dir, "node_modules", m)); err != nil {
			return fmt.Errorf("%w: %s missing", ErrNotInstalled, filepath.Join(dir, "node_modules", m))
		}
	}
	return nil
}

func start(ctx context.Context, service string, o Options) (*Server, error) {
	dir := o.Dir
	if dir == "" {
		d, err := FindDir()
		if err != nil {
			return nil, err
		}
		dir = d
	}
	if err := Check(dir); err != nil {
		return nil, err
	}
	if o.StartTimeout <= 0 {
		o.StartTimeout = 30 * time.Second
	}
	// serve.js also keeps the servers alive when a client hangs up mid-request.
	args := []string{filepath.Join(dir, "serve.js"), service, fmt.Sprint(o.Port)}
	if o.DataDir != "" {
		if err := os.MkdirAll(o.DataDir, 0o755); err != nil {
			return nil, fmt.Errorf("localaws: data dir: %w", err)
		}
		args = append(args, o.DataDir)
	}
	cmd := exec.Command("node", args...)
	cmd.Dir = dir
	cmd.SysProcAttr = sysProcAttr()
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, fmt.Errorf("localaws: %w", err)
	}
	cmd.Stderr = cmd.Stdout // one pipe for both
	var tail tailBuffer
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("localaws: start %s: %w", service, err)
	}
	s := &Server{service: service, cmd: cmd, done: make(chan struct{})}
	ready := make(chan string, 1)
	go func() {
		r := bufio.NewReader(out)
	scan:
		for {
			line, err := r.ReadString('\n')
			if line != "" {
				if a, ok := strings.CutPrefix(strings.TrimSpace(line), "ready "+service+" "); ok {
					ready <- a // buffered: never blocks
					break scan
				}
				tail.add(line)
			}
			if err != nil {
				break scan
			}
		}
		// Keep draining so that the server never blocks on a full pipe.
		w := o.Output
		if w == nil {
			w = io.Discard
		}
		_, _ = io.Copy(w, r)
	}()
	go func() {
		_ = cmd.Wait()
		close(s.done)
	}()
	timer := time.NewTimer(o.StartTimeout)
	defer timer.Stop()
	select {
	case a := <-ready:
		s.addr = a
		return s, nil
	case <-s.done:
		return nil, fmt.Errorf("localaws: %s exited before it was ready: %s", service, tail.String())
	case <-timer.C:
		_ = s.Stop()
		return nil, fmt.Errorf("localaws: %s not ready within %s: %s", service, o.StartTimeout, tail.String())
	case <-ctx.Done():
		_ = s.Stop()
		return nil, ctx.Err()
	}
}

// Service is "kinesis" or "dynamodb".
func (s *Server) Service() string { return s.service }

// Addr is host:port.
func (s *Server) Addr() string { return s.addr }

// Endpoint is the server's base URL, for BaseEndpoint of an AWS client.
func (s *Server) Endpoint() string { return "http://" + s.addr }

// PID is the node process id.
func (s *Server) PID() int { return s.cmd.Process.Pid }

// Stop terminates the server's process group and waits for it (killing it after 5 s).
func (s *Server) Stop() error {
	s.stop.Do(func() {
		pgid := s.cmd.Process.Pid
		_ = syscall.Kill(-pgid, syscall.SIGTERM)
		select {
		case <-s.done:
		case <-time.After(5 * time.Second):
			_ = syscall.Kill(-pgid, syscall.SIGKILL)
			<-s.done
			s.stopErr = fmt.Errorf("localaws: %s did not exit within 5s of SIGTERM; killed", s.service)
		}
	})
	return s.stopErr
}

// Done is closed when the process exited.
func (s *Server) Done() <-chan struct{} { return s.done }

type tailBuffer struct {
	mu    sync.Mutex
	lines []string
}

func (t *tailBuffer) add(l string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.lines = append(t.lines, strings.TrimRight(l, "\n"))
	if len(t.lines) > 20 {
		t.lines = t.lines[len(t.lines)-20:]
	}
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.lines) == 0 {
		return "(no output)"
	}
	return strings.Join(t.lines, " | ")
}
