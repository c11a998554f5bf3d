// Package redisproc starts and controls redis-server processes on loopback: the
// integration tests' shards, and the game day's local topology. It writes a config file
// per node, so that a restarted node comes back with the same configuration (or, on
// purpose, a wrong one), and offers the process-level faults the chaos injector applies:
// kill -9, SIGTERM, SIGSTOP/SIGCONT and restart with or without data.
package redisproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heartline/heartline/shared/proc"
)

// ErrNoBinary: redis-server is not installed.
var ErrNoBinary = errors.New("redis-server not found (install it: apt-get install redis-server, or set REDIS_SERVER)")

// Binary returns the redis-server to run: $REDIS_SERVER, else redis-server on PATH.
func Binary() (string, error) {
	if b := os.Getenv("REDIS_SERVER"); b != "" {
		return b, nil
	}
	b, err := exec.LookPath("redis-server")
	if err != nil {
		return "", ErrNoBinary
	}
	return b, nil
}

// Config describes one node.
type Config struct {
	Name string // label for logs and file names, such as "shard-0-primary"
	Dir  string // working directory: config, RDB/AOF files and log live here
	Host string // default 127.0.0.1
	Port int    // 0: pick a free port
	// ReplicaOf is the primary's host:port for a replica.
	ReplicaOf string
	// Directives are extra redis.conf lines as name/value pairs; they override the
	// defaults (for example {"save", "3600 1"} to turn persistence on).
	Directives [][2]string
}

// Defaults are the directives every node gets unless overridden: loopback only, no
// persistence (the restart-wipe case is what Heartline must survive), immediate full
// syncs and fast replica-lag detection for quick tests.
var Defaults = [][2]string{
	{"protected-mode", "no"},
	{"save", `""`},
	{"appendonly", "no"},
	{"repl-diskless-sync", "yes"},
	{"repl-diskless-sync-delay", "0"},
	{"repl-ping-replica-period", "1"},
	{"repl-timeout", "5"},
	{"min-replicas-max-lag", "5"},
	{"loglevel", "notice"},
}

// Process is a running (or stopped) redis-server started by this package.
type Process struct {
	cfg  Config
	conf string
	p    *proc.Process
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Start writes the node's config and starts it, waiting until it answers PING.
func Start(ctx context.Context, cfg Config) (*Process, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	if cfg.Host == "" {
		cfg.Host = "127.0.0.1"
	}
	if cfg.Name == "" {
		cfg.Name = "redis"
	}
	if cfg.Dir == "" {
		return nil, errors.New("redisproc: Dir is required")
	}
	if err := os.MkdirAll(cfg.Dir, 0o755); err != nil {
		return nil, err
	}
	pickPort := cfg.Port == 0
	for attempt := 0; ; attempt++ {
		if pickPort {
			if cfg.Port, err = FreePort(); err != nil {
				return nil, err
			}
		}
		conf := filepath.Join(cfg.Dir, cfg.Name+".conf")
		p := &Process{cfg: cfg, conf: conf, p: proc.New(proc.Spec{Name: cfg.Name, Path: bin, Args: []string{conf}, Dir: cfg.Dir,
			Log: filepath.Join(cfg.Dir, cfg.Name+".stdout")})}
		if err := p.WriteConfig(nil); err != nil {
			return nil, err
		}
		err = p.start(ctx)
		if err == nil {
			return p, nil
		}
		if !pickPort || attempt >= 3 {
			return nil, err
		}
	}
}

// Addr is the node's host:port.
func (p *Process) Addr() string { return net.JoinHostPort(p.cfg.Host, strconv.Itoa(p.cfg.Port)) }

// Name is the node's label.
func (p *Process) Name() string { return p.cfg.Name }

// ConfigPath is the node's redis.conf.
func (p *Process) ConfigPath() string { return p.conf }

// LogPath is the node's log file.
func (p *Process) LogPath() string { return filepath.Join(p.cfg.Dir, p.cfg.Name+".log") }

// Dir is the node's working directory (its RDB file lives there as <name>.rdb).
func (p *Process) Dir() string { return p.cfg.Dir }

// PID returns the running process id, or 0.
func (p *Process) PID() int { return p.p.PID() }

// Proc is the underlying process, for faults that act on processes in general.
func (p *Process) Proc() *proc.Process { return p.p }

// WriteConfig writes the node's config file. override replaces or adds directives for
// the next start only when non-nil (the wrong-configuration restart).
func (p *Process) WriteConfig(override [][2]string) error {
	lines := map[string]string{}
	var order []string
	set := func(k, v string) {
		if _, ok := lines[k]; !ok {
			order = append(order, k)
		}
		lines[k] = v
	}
	for _, d := range Defaults {
		set(d[0], d[1])
	}
	set("bind", p.cfg.Host)
	set("port", strconv.Itoa(p.cfg.Port))
	set("dir", p.cfg.Dir)
	set("dbfilename", p.cfg.Name+".rdb")
	set("appenddirname", p.cfg.Name+"-aof")
	set("logfile", p.LogPath())
	set("pidfile", filepath.Join(p.cfg.Dir, p.cfg.Name+".pid"))
	if p.cfg.ReplicaOf != "" {
		host, port, err := net.SplitHostPort(p.cfg.ReplicaOf)
		if err != nil {
			return fmt.Errorf("redisproc: replicaof %q: %w", p.cfg.ReplicaOf, err)
		}
		set("replicaof", host+" "+port)
	}
	for _, d := range p.cfg.Directives {
		set(d[0], d[1])
	}
	for _, d := range override {
		set(d[0], d[1])
	}
	var b strings.Builder
	b.WriteString("# written by heartline redisproc\n")
	for _, k := range order {
		if lines[k] == "" {
			continue // an override with an empty value removes the directive
		}
		fmt.Fprintf(&b, "%s %s\n", k, lines[k])
	}
	return os.WriteFile(p.conf, []byte(b.String()), 0o644)
}

func (p *Process) start(ctx context.Context) error {
	if err := p.p.Start(); err != nil {
		return fmt.Errorf("redisproc: %w", err)
	}
	if err := WaitReady(ctx, p.Addr(), p.p.Exited(), 10*time.Second); err != nil {
		_ = p.p.Kill()
		log, _ := os.ReadFile(p.LogPath())
		return fmt.Errorf("redisproc: %s on %s did not start: %w\n%s", p.cfg.Name, p.Addr(), err, tail(string(log), 800))
	}
	return nil
}

// WaitReady polls addr with PING until it answers (a LOADING reply counts as not yet),
// exited is closed, or timeout passes.
func WaitReady(ctx context.Context, addr string, exited <-chan struct{}, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := redis.NewClient(&redis.Options{Addr: addr, MaxRetries: -1, DialTimeout: 200 * time.Millisecond,
		ReadTimeout: 500 * time.Millisecond, PoolSize: 1, ContextTimeoutEnabled: true})
	defer c.Close()
	for {
		err := c.Ping(ctx).Err()
		if err == nil {
			return nil
		}
		select {
		case <-exited:
			return errors.New("process exited")
		case <-ctx.Done():
			return fmt.Errorf("no answer within %s: %w", timeout, err)
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// Running reports whether the process is alive (paused counts as alive).
func (p *Process) Running() bool { return p.p.Running() }

// Signal sends sig to the process.
func (p *Process) Signal(sig syscall.Signal) error { return p.p.Signal(sig) }

// Kill sends SIGKILL and waits for the process to be gone. It is a no-op on a node
// that is not running.
func (p *Process) Kill() error { return p.p.Kill() }

// Terminate sends SIGTERM and waits for the process to exit.
func (p *Process) Terminate() error { return p.p.Terminate(15 * time.Second) }

// Pause stops the process with SIGSTOP: connections are accepted, commands hang.
func (p *Process) Pause() error { return p.p.Pause() }

// Resume continues a paused process.
func (p *Process) Resume() error { return p.p.Resume() }

// Restart starts a stopped node again on the same port with its config file. With
// wipe, its RDB and AOF files are deleted first (a node that comes back empty whatever
// its persistence settings).
func (p *Process) Restart(ctx context.Context, wipe bool) error {
	if p.Running() {
		return fmt.Errorf("redisproc: %s is still running; kill it first", p.cfg.Name)
	}
	if wipe {
		_ = os.Remove(filepath.Join(p.cfg.Dir, p.cfg.Name+".rdb"))
		_ = os.RemoveAll(filepath.Join(p.cfg.Dir, p.cfg.Name+"-aof"))
	}
	return p.start(ctx)
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}
