// Package cli is the chaos command line: serve (the HTTP API), validate, run,
// schedule, halt and flags-table. main only wires signals and exit codes.
package cli

import (
	"errors"
	"fmt"
	"os"
	"path"
	"strings"
	"time"

	"github.com/heartline/heartline/services/chaos/internal/target"
	"github.com/heartline/heartline/shared/config"
	"github.com/heartline/heartline/shared/connect"
	"github.com/heartline/heartline/shared/events"
)

// ErrUsage: bad command line (exit code 2).
var ErrUsage = errors.New("usage")

// Config is the chaos command's configuration (flags, then CHAOS_* variables, then
// defaults; the platform settings use HEARTLINE_*).
type Config struct {
	Connect   connect.Config
	LogLevel  string
	LogFormat string

	// Where targets live, and the safety rules.
	Driver    string
	Execute   bool
	DryRun    bool
	Allow     []string
	MaxShards int

	// local driver
	LocalPIDs         []string
	RedisRestartDelay time.Duration

	// docker driver
	DockerHost     string
	ComposeProject string

	// kubernetes driver
	Kubeconfig string
	Namespace  string

	// serve
	Listen          string
	Token           string
	TokenFile       string
	ShutdownTimeout time.Duration

	// run / schedule
	Reports      string
	RatequeueBin string
	LoadArgs     string
	CheckArgs    string
	Poll         time.Duration
	NoBackup     bool

	// schedule
	Every    time.Duration
	StartNow bool
	MaxRuns  int

	// halt (client)
	API string

	// gameday
	BinDir         string
	Pack           string
	Only           []string
	Out            string
	Backend        string
	Shards         int
	Replicas       int
	Spares         int
	Degrade        []string
	HealthyTimeout time.Duration
}

// register binds the flags a command uses.
func (c *Config) register(l *config.Loader, cmd string) {
	if cmd != "halt" && cmd != "gameday" {
		c.Connect.Register(l)
	}
	l.String(&c.LogLevel, "log-level", "info", "log level: trace, debug, info, warn, error")
	l.Shared("log-level")
	l.String(&c.LogFormat, "log-format", "", `log format: json, console, or "" (console on a terminal)`)
	l.Shared("log-format")
	if cmd == "gameday" {
		c.registerGameday(l)
		return
	}
	if cmd == "halt" {
		l.String(&c.API, "api", "http://127.0.0.1:8090", "chaos HTTP API base URL")
		l.String(&c.Token, "token", "", "bearer token (prefer -token-file or CHAOS_TOKEN)")
		l.String(&c.TokenFile, "token-file", "", "file holding the bearer token")
		return
	}

	l.String(&c.Driver, "driver", "local", "where targets live: local (processes of this machine), docker (compose containers via the Engine API) or kubernetes (pods)")
	l.Bool(&c.Execute, "execute", false, "act through the docker or kubernetes driver (without it every attack there is a dry run; the local driver acts by default)")
	l.Bool(&c.DryRun, "dry-run", false, "make every attack a dry run, whatever the driver")
	l.List(&c.Allow, "allow", nil, `allowlist of target names (path patterns such as shard-*/primary, shard-1/*, ratequeue/*, link/*; "*" allows everything with the local driver); required for docker and kubernetes`)
	l.Int(&c.MaxShards, "max-shards", 1, "how many shards may be under attack at once (an experiment's safety.max_shards may raise it for its run)")

	l.List(&c.LocalPIDs, "local-pids", nil, "local driver: processes known by pid file, ADDR=PIDFILE for a Redis node, SERVICE/N=PIDFILE for a service instance (signals only: kill, terminate, pause)")
	l.Duration(&c.RedisRestartDelay, "redis-restart-delay", 3*time.Second, "local driver: the modelled supervisor's delay before it starts a dead Redis node again (negative: never)")

	l.String(&c.DockerHost, "docker-host", "", "docker driver: Engine API address (default: DOCKER_HOST or the local socket)")
	l.String(&c.ComposeProject, "compose-project", "", "docker driver: compose project whose containers may be attacked")

	l.String(&c.Kubeconfig, "kubeconfig", "", "kubernetes driver: kubeconfig file (default: in-cluster configuration)")
	l.String(&c.Namespace, "namespace", "heartline", "kubernetes driver: namespace of the pods")

	switch cmd {
	case "serve":
		l.String(&c.Listen, "listen", "127.0.0.1:8090", "HTTP API listen address")
		l.String(&c.Token, "token", "", "bearer token of the HTTP API (at least 16 characters; prefer -token-file or CHAOS_TOKEN)")
		l.String(&c.TokenFile, "token-file", "", "file holding the bearer token")
		l.Duration(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "bound on the halt and the HTTP shutdown at exit")
	case "run", "schedule":
		l.String(&c.Reports, "reports", "chaos-reports", "folder that receives one sub-folder per run (report.json, report.html, history, backups)")
		l.String(&c.RatequeueBin, "ratequeue-bin", "ratequeue", "the ratequeue binary (its load and check commands)")
		l.String(&c.LoadArgs, "load-args", "", "how `ratequeue load` reaches Ratequeue, space-separated, such as \"-targets=http://127.0.0.1:8080\" or \"-direct -topology-file=F\"")
		l.String(&c.CheckArgs, "check-args", "", "extra flags for `ratequeue check`, space-separated")
		l.Duration(&c.Poll, "poll", 250*time.Millisecond, "how often probes and abort conditions are evaluated")
		l.Bool(&c.NoBackup, "no-backup", false, "skip the RDB copy of the attacked shards (not recommended)")
		l.Duration(&c.ShutdownTimeout, "shutdown-timeout", 30*time.Second, "bound on the halt at exit")
		if cmd == "schedule" {
			l.Duration(&c.Every, "every", 4*time.Hour, "interval between runs")
			l.Bool(&c.StartNow, "start-now", false, "run the first slot at once instead of after one interval")
			l.Int(&c.MaxRuns, "max-runs", 0, "stop after this many slots (0: until stopped)")
		}
	}
}

// registerGameday binds the flags of chaos gameday: it builds its own topology, so it
// has none of the driver and platform settings.
func (c *Config) registerGameday(l *config.Loader) {
	l.String(&c.BinDir, "bin-dir", "bin", "folder with the agent, alerter, lazarus and ratequeue binaries (./scripts/build)")
	l.String(&c.Pack, "pack", "services/chaos/experiments", "folder of the game-day experiments (*.yaml, run in name order)")
	l.List(&c.Only, "only", nil, "run only these experiments (file names without .yaml, such as kill-primary,pause-primary)")
	l.String(&c.Out, "out", "", "folder for the reports, the summary and the topology's logs (default gameday-reports/<UTC time>)")
	l.String(&c.Backend, "stream", "nats", "stream of the local topology: nats (embedded NATS with JetStream, NATS KV) or kinesis (kinesalite and dynalite)")
	l.Int(&c.Shards, "shards", 3, "shards of the local topology")
	l.Int(&c.Replicas, "replicas", 1, "replicas per shard")
	l.List(&c.Degrade, "degrade", []string{"shard-3"}, "shards of the local topology whose durability policy is degrade, the others strict (default shard-3: the pack's degrade experiment attacks it)")
	l.Int(&c.Spares, "spares", 2, "empty Redis nodes in lazarus's spare pool (a shard that loses a host for good gets one)")
	l.Duration(&c.RedisRestartDelay, "redis-restart-delay", 3*time.Second, "the modelled supervisor's delay before it starts a dead Redis node again")
	l.Duration(&c.HealthyTimeout, "healthy-timeout", 3*time.Minute, "how long to wait for every shard to be healthy (and every service ready) before the next experiment")
	l.Duration(&c.Poll, "poll", 250*time.Millisecond, "how often probes and abort conditions are evaluated")
}

// Validate reports every problem.
func (c *Config) Validate(cmd string) error {
	var p config.Problems
	if cmd == "gameday" {
		p.Check(c.BinDir == "", "-bin-dir is required")
		p.Check(c.Pack == "", "-pack is required")
		p.Check(c.Backend != "nats" && c.Backend != "kinesis", "-stream %q: want nats or kinesis", c.Backend)
		p.Check(c.Shards < 1 || c.Shards > 20, "-shards %d: want 1 to 20", c.Shards)
		p.Check(c.Spares < 0 || c.Spares > 10, "-spares %d: want 0 to 10", c.Spares)
		for _, id := range c.Degrade {
			p.Check(!events.ValidShardID(id), "-degrade: shard id %q: want 1-64 of A-Z a-z 0-9 _ -", id)
		}
		p.Check(c.Replicas < 1 || c.Replicas > 5, "-replicas %d: want 1 to 5", c.Replicas)
		p.Check(c.RedisRestartDelay <= 0, "-redis-restart-delay must be positive (the pack relies on the supervisor)")
		p.Positive("-healthy-timeout", c.HealthyTimeout)
		p.Positive("-poll", c.Poll)
		return p.Err()
	}
	if cmd == "halt" {
		if err := c.loadToken(); err != nil {
			p.Addf("%v", err)
		} else if len(c.Token) < 16 {
			p.Addf("the API token must be at least 16 characters (set -token-file or CHAOS_TOKEN)")
		}
		p.Check(c.API == "", "-api is required")
		return p.Err()
	}
	c.Connect.Validate(&p)
	switch c.Driver {
	case "local", "docker", "kubernetes":
	default:
		p.Addf("-driver %q: want local, docker or kubernetes", c.Driver)
	}
	if c.Driver != "local" && len(c.Allow) == 0 {
		p.Addf("-allow: the %s driver needs an explicit allowlist (CHAOS_ALLOW)", c.Driver)
	}
	for _, a := range c.Allow {
		if a == "*" && c.Driver != "local" {
			p.Addf("-allow *: allowing every target is only possible with the local driver")
		}
		if _, err := path.Match(a, "x"); err != nil {
			p.Addf("-allow %q: %v", a, err)
		}
	}
	p.Check(c.MaxShards < 1 || c.MaxShards > 1000, "-max-shards %d: want 1 to 1000", c.MaxShards)
	for _, e := range c.LocalPIDs {
		name, file, ok := strings.Cut(e, "=")
		if !ok || file == "" {
			p.Addf("-local-pids %q: want ADDR=PIDFILE or SERVICE/N=PIDFILE", e)
			continue
		}
		if _, _, err := parseLocalName(name); err != nil {
			p.Addf("-local-pids %q: %v", e, err)
		}
	}
	if c.Driver == "docker" && c.ComposeProject == "" {
		p.Addf("-compose-project: the docker driver acts on one compose project; name it")
	}
	switch cmd {
	case "serve":
		if err := c.loadToken(); err != nil {
			p.Addf("%v", err)
		} else if len(c.Token) < 16 {
			p.Addf("the API token must be at least 16 characters (set -token-file or CHAOS_TOKEN)")
		}
		p.Check(c.Listen == "", "-listen is required")
		p.Positive("-shutdown-timeout", c.ShutdownTimeout)
	case "run", "schedule":
		p.Check(c.Reports == "", "-reports is required")
		p.Check(c.RatequeueBin == "", "-ratequeue-bin is required")
		p.Positive("-poll", c.Poll)
		p.Positive("-shutdown-timeout", c.ShutdownTimeout)
		if cmd == "schedule" {
			p.Positive("-every", c.Every)
			p.Check(c.MaxRuns < 0, "-max-runs %d: want 0 or more", c.MaxRuns)
		}
	}
	return p.Err()
}

func (c *Config) loadToken() error {
	if c.TokenFile == "" {
		return nil
	}
	b, err := os.ReadFile(c.TokenFile)
	if err != nil {
		return fmt.Errorf("-token-file: %v", err)
	}
	c.Token = strings.TrimSpace(string(b))
	return nil
}

// parseLocalName parses the left side of a -local-pids entry: a node address or
// SERVICE/N.
func parseLocalName(name string) (target.Target, bool, error) {
	if svc, n, ok := strings.Cut(name, "/"); ok {
		sel, err := target.Parse(svc + ":instance:" + n)
		if err != nil || sel.Kind != target.Service || sel.Which == "any" || sel.Which == "all" || sel.Which == "random" {
			return target.Target{}, false, fmt.Errorf("%q: want SERVICE/N with SERVICE one of %s", name, strings.Join(target.Services, ", "))
		}
		var inst int
		fmt.Sscanf(n, "%d", &inst)
		return target.Target{Kind: target.Service, Service: svc, Instance: inst}, false, nil
	}
	if _, err := target.Parse("node:" + name); err != nil {
		return target.Target{}, false, fmt.Errorf("%q: want a node address host:port", name)
	}
	return target.Target{Kind: target.Node, Addr: name}, true, nil
}

func pathMatch(pattern, name string) (bool, error) { return path.Match(pattern, name) }
