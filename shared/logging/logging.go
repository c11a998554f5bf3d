// Package logging builds Heartline's zerolog loggers: JSON lines on stdout (a human
// console format when stdout is a terminal), a level from configuration, child loggers
// that carry the fields on-call engineers filter by (service, shard, node,
// correlation_id, epoch), and redaction so that secrets never reach a log line.
package logging

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/rs/zerolog"
)

// Field names shared by every service, so one query finds one incident across services.
const (
	FieldService       = "service"
	FieldInstance      = "instance"
	FieldShard         = "shard"
	FieldNode          = "node"
	FieldCorrelationID = "correlation_id"
	FieldEpoch         = "epoch"
)

// Options configures New.
type Options struct {
	Service  string    // the service name, on every line
	Instance string    // this process's instance id, on every line when set
	Level    string    // trace, debug, info, warn, error; empty means info
	Format   string    // "json", "console" or "" (auto: console on a terminal, else JSON)
	Out      io.Writer // defaults to os.Stdout
}

// New returns the root logger for a service.
func New(o Options) (zerolog.Logger, error) {
	lvl := zerolog.InfoLevel
	if o.Level != "" {
		l, err := zerolog.ParseLevel(strings.ToLower(o.Level))
		if err != nil || l == zerolog.NoLevel {
			return zerolog.Nop(), fmt.Errorf("log level %q: want trace, debug, info, warn or error", o.Level)
		}
		lvl = l
	}
	out := o.Out
	if out == nil {
		out = os.Stdout
	}
	var w io.Writer = &redactWriter{w: out}
	switch o.Format {
	case "json":
	case "console":
		w = zerolog.ConsoleWriter{Out: w, TimeFormat: time.RFC3339Nano}
	case "":
		if f, ok := out.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			w = zerolog.ConsoleWriter{Out: w, TimeFormat: "15:04:05.000"}
		}
	default:
		return zerolog.Nop(), fmt.Errorf("log format %q: want json or console", o.Format)
	}
	ctx := zerolog.New(w).Level(lvl).With().Timestamp()
	if o.Service != "" {
		ctx = ctx.Str(FieldService, o.Service)
	}
	if o.Instance != "" {
		ctx = ctx.Str(FieldInstance, o.Instance)
	}
	return ctx.Logger(), nil
}

// Shard returns a child logger that carries the shard id.
func Shard(l zerolog.Logger, shard string) zerolog.Logger {
	return l.With().Str(FieldShard, shard).Logger()
}

// Incident returns a child logger for one chain of events: shard, correlation id and
// the shard's failover epoch.
func Incident(l zerolog.Logger, shard, correlationID string, epoch uint64) zerolog.Logger {
	return l.With().Str(FieldShard, shard).Str(FieldCorrelationID, correlationID).Uint64(FieldEpoch, epoch).Logger()
}

// Test returns a logger for tests: JSON into w at debug level.
func Test(w io.Writer) zerolog.Logger {
	return zerolog.New(&redactWriter{w: w}).Level(zerolog.DebugLevel).With().Timestamp().Logger()
}

// secretPatterns match values that must never be logged, whatever field or message
// they were put in by mistake: passwords in URLs, bearer tokens, AWS access keys and
// the values of fields whose names say they are secret.
var secretPatterns = []struct {
	re   *regexp.Regexp
	repl string
}{
	{regexp.MustCompile(`(?i)(bearer\s+)([A-Za-z0-9._~+/=-]+)`), "${1}[REDACTED]"},
	{regexp.MustCompile(`(?i)((?:password|passwd|secret|token|masterauth|requirepass|aws_secret_access_key|secret_access_key|session_token)"?\s*[:=]\s*"?)([^",\s}]+)`), "${1}[REDACTED]"},
	{regexp.MustCompile(`((?:redis|rediss|nats|tls|http|https)://[^:/@\s"]*:)([^@\s"]+)(@)`), "${1}[REDACTED]${3}"},
	{regexp.MustCompile(`\b(?:AKIA|ASIA)[A-Z0-9]{16}\b`), "[REDACTED]"},
}

// Redact replaces secrets in s with "[REDACTED]".
func Redact(s string) string {
	for _, p := range secretPatterns {
		s = p.re.ReplaceAllString(s, p.repl)
	}
	return s
}

// RedactURL returns u with any password replaced, for logging a configured address.
func RedactURL(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.User == nil {
		return Redact(u)
	}
	if _, ok := p.User.Password(); ok {
		p.User = url.UserPassword(p.User.Username(), "REDACTED")
	}
	return p.String()
}

// redactWriter scrubs every encoded line before it leaves the process. It is the last
// line of defence; code should not log secrets in the first place.
type redactWriter struct{ w io.Writer }

func (r *redactWriter) Write(p []byte) (int, error) {
	s := Redact(string(p))
	if _, err := io.WriteString(r.w, s); err != nil {
		return 0, err
	}
	return len(p), nil
}
