// Package config is the small helper every Heartline service uses to read its one
// Config struct from command-line flags and environment variables, and to report
// every configuration problem at once.
//
// Precedence is flag, then environment variable, then default. The environment name of
// a flag is the service prefix plus the flag name in upper case with dashes turned into
// underscores: flag -check-interval of the agent is AGENT_CHECK_INTERVAL. Settings
// shared by every service (the stream, the key-value store, logging) use the
// HEARTLINE_ prefix.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strconv"
	"strings"
	"time"
)

// ErrInvalid is wrapped by every error that reports bad configuration.
var ErrInvalid = errors.New("invalid configuration")

// Loader binds flags and environment variables to fields of a Config struct.
type Loader struct {
	fs     *flag.FlagSet
	prefix string
	envs   map[string]string // flag name -> env name
	errs   []string
}

// NewLoader returns a loader for a command. envPrefix is, for example, "AGENT".
func NewLoader(command, envPrefix string) *Loader {
	fs := flag.NewFlagSet(command, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return &Loader{fs: fs, prefix: envPrefix, envs: map[string]string{}}
}

// FlagSet exposes the underlying flag set, for positional arguments.
func (l *Loader) FlagSet() *flag.FlagSet { return l.fs }

// EnvName is the environment variable that sets a flag of this loader.
func (l *Loader) EnvName(flagName string) string {
	if e, ok := l.envs[flagName]; ok {
		return e
	}
	return envName(l.prefix, flagName)
}

func envName(prefix, flagName string) string {
	n := strings.ToUpper(strings.ReplaceAll(flagName, "-", "_"))
	if prefix == "" {
		return n
	}
	return prefix + "_" + n
}

// Shared registers a flag whose environment variable uses the HEARTLINE_ prefix
// instead of the service's own.
func (l *Loader) Shared(flagName string) { l.envs[flagName] = envName("HEARTLINE", flagName) }

func (l *Loader) String(p *string, name, def, usage string) {
	l.fs.StringVar(p, name, def, usage)
}
func (l *Loader) Int(p *int, name string, def int, usage string) { l.fs.IntVar(p, name, def, usage) }
func (l *Loader) Float(p *float64, name string, def float64, usage string) {
	l.fs.Float64Var(p, name, def, usage)
}
func (l *Loader) Bool(p *bool, name string, def bool, usage string) {
	l.fs.BoolVar(p, name, def, usage)
}
func (l *Loader) Duration(p *time.Duration, name string, def time.Duration, usage string) {
	l.fs.DurationVar(p, name, def, usage)
}

// List binds a comma-separated list.
func (l *Loader) List(p *[]string, name string, def []string, usage string) {
	*p = append([]string(nil), def...)
	l.fs.Func(name, usage+" (comma-separated)", func(s string) error {
		*p = SplitList(s)
		return nil
	})
}

// SplitList splits a comma-separated list, trimming blanks and dropping empty items.
func SplitList(s string) []string {
	var out []string
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			out = append(out, part)
		}
	}
	return out
}

// Parse reads args, then fills every flag not given on the command line from its
// environment variable (looked up with getenv, normally os.Getenv). All problems are
// reported together.
func (l *Loader) Parse(args []string, getenv func(string) string) error {
	if err := l.fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return fmt.Errorf("%w: %v", ErrInvalid, err)
	}
	set := map[string]bool{}
	l.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var problems Problems
	l.fs.VisitAll(func(f *flag.Flag) {
		if set[f.Name] || getenv == nil {
			return
		}
		env := l.EnvName(f.Name)
		v := getenv(env)
		if v == "" {
			return
		}
		if err := f.Value.Set(v); err != nil {
			problems.Addf("%s=%q: %v", env, v, err)
		}
	})
	return problems.Err()
}

// Usage writes every flag with its environment variable and default.
func (l *Loader) Usage(w io.Writer) {
	fmt.Fprintf(w, "Usage of %s:\n", l.fs.Name())
	l.fs.VisitAll(func(f *flag.Flag) {
		def := f.DefValue
		if def == "" {
			def = `""`
		}
		fmt.Fprintf(w, "  -%s (env %s, default %s)\n      %s\n", f.Name, l.EnvName(f.Name), def, f.Usage)
	})
}

// Table writes the flags as a Markdown table, for a service README.
func (l *Loader) Table(w io.Writer) {
	fmt.Fprintln(w, "| Flag | Environment | Default | Meaning |")
	fmt.Fprintln(w, "| --- | --- | --- | --- |")
	var rows []string
	l.fs.VisitAll(func(f *flag.Flag) {
		rows = append(rows, fmt.Sprintf("| `-%s` | `%s` | `%s` | %s |", f.Name, l.EnvName(f.Name), f.DefValue, f.Usage))
	})
	sort.Strings(rows)
	for _, r := range rows {
		fmt.Fprintln(w, r)
	}
}

// Problems collects configuration problems so that Validate can report all of them.
type Problems struct{ list []string }

// Addf records one problem.
func (p *Problems) Addf(format string, args ...any) {
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

// Check records msg when bad is true.
func (p *Problems) Check(bad bool, format string, args ...any) {
	if bad {
		p.Addf(format, args...)
	}
}

// Positive records a problem when d is not above zero.
func (p *Problems) Positive(name string, d time.Duration) {
	p.Check(d <= 0, "%s must be positive, got %s", name, d)
}

// Err returns nil or an error listing every problem, wrapping ErrInvalid.
func (p *Problems) Err() error {
	if len(p.list) == 0 {
		return nil
	}
	return &Error{Problems: append([]string(nil), p.list...)}
}

// Error lists configuration problems.
type Error struct{ Problems []string }

func (e *Error) Error() string {
	if len(e.Problems) == 1 {
		return "invalid configuration: " + e.Problems[0]
	}
	var b strings.Builder
	b.WriteString("invalid configuration (" + strconv.Itoa(len(e.Problems)) + " problems):")
	for _, p := range e.Problems {
		b.WriteString("\n  - " + p)
	}
	return b.String()
}

func (e *Error) Unwrap() error { return ErrInvalid }
