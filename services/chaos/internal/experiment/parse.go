package experiment

import (
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/heartline/heartline/services/chaos/internal/fault"
	"github.com/heartline/heartline/services/chaos/internal/target"
	"github.com/heartline/heartline/shared/events"
)

// ErrInvalid is wrapped by every parse error.
var ErrInvalid = errors.New("invalid experiment")

// MaxFileSize bounds an experiment file.
const MaxFileSize = 1 << 20

// Error is one problem in a file.
type Error struct {
	File string
	Line int
	Col  int
	Path string // field path such as method[0].duration
	Msg  string
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(e.File)
	if e.Line > 0 {
		fmt.Fprintf(&b, ":%d", e.Line)
		if e.Col > 0 {
			fmt.Fprintf(&b, ":%d", e.Col)
		}
	}
	b.WriteString(": ")
	if e.Path != "" {
		b.WriteString(e.Path + ": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

// Errors is every problem found in one file.
type Errors []*Error

func (es Errors) Error() string {
	parts := make([]string, len(es))
	for i, e := range es {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

func (es Errors) Unwrap() error { return ErrInvalid }

// LoadFile reads and parses a file.
func LoadFile(path string) (*Experiment, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, Errors{{File: path, Msg: err.Error()}}
	}
	if st.Size() > MaxFileSize {
		return nil, Errors{{File: path, Msg: fmt.Sprintf("%d bytes, at most %d", st.Size(), MaxFileSize)}}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, Errors{{File: path, Msg: err.Error()}}
	}
	return Parse(path, b)
}

var yamlLine = regexp.MustCompile(`line (\d+)`)

// Parse parses an experiment. name is used in error messages. It never panics; the
// error is an Errors listing every problem.
func Parse(name string, data []byte) (exp *Experiment, err error) {
	defer func() {
		if r := recover(); r != nil { // the YAML library must not take the caller down
			exp, err = nil, Errors{{File: name, Msg: fmt.Sprintf("unparsable YAML (%v)", r)}}
		}
	}()
	if len(data) > MaxFileSize {
		return nil, Errors{{File: name, Msg: fmt.Sprintf("%d bytes, at most %d", len(data), MaxFileSize)}}
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		e := &Error{File: name, Msg: strings.TrimPrefix(err.Error(), "yaml: ")}
		if m := yamlLine.FindStringSubmatch(err.Error()); m != nil {
			e.Line, _ = strconv.Atoi(m[1])
			e.Msg = strings.TrimPrefix(e.Msg, "line "+m[1]+": ")
		}
		return nil, Errors{e}
	}
	p := &parser{file: name}
	if doc.Kind == 0 || len(doc.Content) == 0 {
		return nil, Errors{{File: name, Msg: "empty file: want a mapping with title, hypothesis and method"}}
	}
	x := p.build(doc.Content[0])
	if len(p.errs) > 0 {
		sort.SliceStable(p.errs, func(i, j int) bool { return p.errs[i].Line < p.errs[j].Line })
		return nil, p.errs
	}
	return x, nil
}

type parser struct {
	file  string
	errs  Errors
	nodes int
}

func (p *parser) errf(n *yaml.Node, path, format string, args ...any) {
	if len(p.errs) >= 50 {
		return
	}
	e := &Error{File: p.file, Path: path, Msg: fmt.Sprintf(format, args...)}
	if n != nil {
		e.Line, e.Col = n.Line, n.Column
	}
	p.errs = append(p.errs, e)
}

func deref(n *yaml.Node) *yaml.Node {
	for i := 0; n != nil && n.Kind == yaml.AliasNode && i < 8; i++ {
		n = n.Alias
	}
	return n
}

func kindName(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing (null)"
		}
		return fmt.Sprintf("%q", trunc(n.Value))
	}
	return "something else"
}

type field struct {
	name string
	set  func(v *yaml.Node, path string)
}

// mapping walks a mapping node, calling the handler of each known key, and reports
// unknown and duplicate keys.
func (p *parser) mapping(n *yaml.Node, path string, fields []field) bool {
	n = deref(n)
	if n == nil || n.Kind != yaml.MappingNode {
		if n != nil {
			p.errf(n, path, "want a mapping, got %s", kindName(n))
		}
		return false
	}
	p.nodes += len(n.Content)
	if p.nodes > 100000 {
		p.errf(n, path, "too many nodes")
		return false
	}
	seen := map[string]bool{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := deref(n.Content[i]), n.Content[i+1]
		if k == nil || k.Kind != yaml.ScalarNode {
			p.errf(n.Content[i], path, "keys must be plain names")
			continue
		}
		fp := join(path, k.Value)
		if seen[k.Value] {
			p.errf(k, fp, "duplicate field")
			continue
		}
		seen[k.Value] = true
		var h func(*yaml.Node, string)
		var names []string
		for _, f := range fields {
			names = append(names, f.name)
			if f.name == k.Value {
				h = f.set
			}
		}
		if h == nil {
			msg := fmt.Sprintf("unknown field %q", trunc(k.Value))
			if s := suggest(k.Value, names); s != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", s)
			} else {
				msg += " (want one of " + strings.Join(names, ", ") + ")"
			}
			p.errf(k, fp, "%s", msg)
			continue
		}
		h(v, fp)
	}
	return true
}

func join(path, k string) string {
	if path == "" {
		return k
	}
	return path + "." + k
}

func (p *parser) scalar(n *yaml.Node, path, want string) (string, bool) {
	n = deref(n)
	if n == nil || n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		if n != nil {
			p.errf(n, path, "want %s, got %s", want, kindName(n))
		}
		return "", false
	}
	if n.Tag != "" && !strings.HasPrefix(n.Tag, "!!") {
		// A local tag (!x) makes YAML hand over the text unchecked, an empty one too.
		p.errf(n, path, "want %s, got a value with the YAML tag %q", want, trunc(n.Tag))
		return "", false
	}
	return n.Value, true
}

func (p *parser) str(n *yaml.Node, path string, max int) string {
	s, ok := p.scalar(n, path, "text")
	if !ok {
		return ""
	}
	if len(s) > max {
		p.errf(n, path, "longer than %d characters", max)
		return ""
	}
	return s
}

func (p *parser) duration(n *yaml.Node, path string) (time.Duration, bool) {
	s, ok := p.scalar(n, path, "a duration such as 500ms or 2s")
	if !ok {
		return 0, false
	}
	d, err := fault.ParseDuration(s)
	if err != nil {
		p.errf(n, path, "%v", err)
		return 0, false
	}
	if d < 0 {
		p.errf(n, path, "%q: must not be negative", s)
		return 0, false
	}
	return d, true
}

func (p *parser) durPtr(n *yaml.Node, path string) *time.Duration {
	d, ok := p.duration(n, path)
	if !ok {
		return nil
	}
	return &d
}

func (p *parser) integer(n *yaml.Node, path string, min, max int64) (int64, bool) {
	s, ok := p.scalar(n, path, "an integer")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		p.errf(n, path, "%q is not an integer", trunc(s))
		return 0, false
	}
	if v < min || v > max {
		p.errf(n, path, "%d: want %d to %d", v, min, max)
		return 0, false
	}
	return v, true
}

func (p *parser) intPtr(n *yaml.Node, path string, min, max int64) *int64 {
	v, ok := p.integer(n, path, min, max)
	if !ok {
		return nil
	}
	return &v
}

func (p *parser) number(n *yaml.Node, path string) (float64, bool) {
	s, ok := p.scalar(n, path, "a number")
	if !ok {
		return 0, false
	}
	v, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(v) || math.IsInf(v, 0) {
		p.errf(n, path, "%q is not a number", trunc(s))
		return 0, false
	}
	return v, true
}

func (p *parser) boolean(n *yaml.Node, path string) (bool, bool) {
	s, ok := p.scalar(n, path, "true or false")
	if !ok {
		return false, false
	}
	switch s {
	case "true":
		return true, true
	case "false":
		return false, true
	}
	p.errf(n, path, "%q: want true or false", trunc(s))
	return false, false
}

func (p *parser) list(n *yaml.Node, path string, each func(i int, v *yaml.Node, path string)) {
	n = deref(n)
	if n == nil || n.Kind != yaml.SequenceNode {
		if n != nil {
			p.errf(n, path, "want a list, got %s", kindName(n))
		}
		return
	}
	if len(n.Content) > 1000 {
		p.errf(n, path, "more than 1000 items")
		return
	}
	p.nodes += len(n.Content)
	for i, v := range n.Content {
		each(i, v, fmt.Sprintf("%s[%d]", path, i))
	}
}

func (p *parser) build(root *yaml.Node) *Experiment {
	x := &Experiment{File: p.file, Observe: 10 * time.Second,
		SteadyState: SteadyState{Warmup: 3 * time.Second},
		Load:        Load{Queues: 50, Rate: 200, Consumers: 4},
		Abort:       Abort{MaxDuration: 10 * time.Minute}}
	var hasTitle, hasMethod, hasHyp bool
	ok := p.mapping(root, "", []field{
		{"title", func(v *yaml.Node, path string) {
			x.Title = strings.TrimSpace(p.str(v, path, 200))
			hasTitle = x.Title != ""
			if !hasTitle && deref(v).Kind == yaml.ScalarNode {
				p.errf(v, path, "must not be empty")
				hasTitle = true
			}
		}},
		{"description", func(v *yaml.Node, path string) { x.Description = p.str(v, path, 20000) }},
		{"tags", func(v *yaml.Node, path string) {
			p.list(v, path, func(_ int, v *yaml.Node, path string) { x.Tags = append(x.Tags, p.str(v, path, 64)) })
		}},
		{"steady_state", func(v *yaml.Node, path string) { p.steady(v, path, x) }},
		{"load", func(v *yaml.Node, path string) { p.load(v, path, x) }},
		{"hypothesis", func(v *yaml.Node, path string) { hasHyp = true; p.hypothesis(v, path, x) }},
		{"method", func(v *yaml.Node, path string) {
			hasMethod = true
			p.list(v, path, func(i int, v *yaml.Node, path string) {
				if s, ok := p.step(v, path); ok {
					x.Method = append(x.Method, s)
				}
			})
			if n := deref(v); n != nil && n.Kind == yaml.SequenceNode && len(n.Content) == 0 {
				p.errf(v, path, "empty: an experiment injects at least one fault")
			}
		}},
		{"observe", func(v *yaml.Node, path string) {
			if d, ok := p.duration(v, path); ok {
				x.Observe = d
			}
		}},
		{"rollbacks", func(v *yaml.Node, path string) {
			p.list(v, path, func(i int, v *yaml.Node, path string) {
				var r Rollback
				p.mapping(v, path, []field{
					{"action", func(v *yaml.Node, path string) {
						r.Action = p.str(v, path, 64)
						if r.Action != "" && !contains(RollbackActions, r.Action) {
							p.errf(v, path, "unknown rollback action %q (want one of %s)", trunc(r.Action), strings.Join(RollbackActions, ", "))
						}
					}},
					{"timeout", func(v *yaml.Node, path string) { r.Timeout, _ = p.duration(v, path) }},
				})
				if r.Action == "" && deref(v).Kind == yaml.MappingNode {
					p.errf(v, path+".action", "required")
				}
				x.Rollbacks = append(x.Rollbacks, r)
			})
		}},
		{"abort", func(v *yaml.Node, path string) {
			p.mapping(v, path, []field{
				{"max_duration", func(v *yaml.Node, path string) {
					if d, ok := p.duration(v, path); ok {
						if d == 0 {
							p.errf(v, path, "must be above zero")
						}
						x.Abort.MaxDuration = d
					}
				}},
				{"when", func(v *yaml.Node, path string) {
					p.list(v, path, func(i int, v *yaml.Node, path string) {
						if pr, ok := p.probe(v, path, true); ok {
							x.Abort.When = append(x.Abort.When, pr)
						}
					})
				}},
			})
		}},
		{"safety", func(v *yaml.Node, path string) {
			p.mapping(v, path, []field{
				{"max_shards", func(v *yaml.Node, path string) {
					if n, ok := p.integer(v, path, 1, 1000); ok {
						x.Safety.MaxShards = int(n)
					}
				}},
			})
		}},
	})
	if !ok {
		return nil
	}
	if !hasTitle {
		p.errf(root, "title", "required")
	}
	if !hasHyp {
		p.errf(root, "hypothesis", "required: the measurable bounds the run checks")
	}
	if !hasMethod {
		p.errf(root, "method", "required: the faults to inject")
	}
	if len(x.SteadyState.Probes) == 0 {
		// The default steady state: everything healthy, writes succeed.
		x.SteadyState.Probes = []Probe{{Kind: ShardsHealthy}, {Kind: NoOpenAlerts}}
		if !x.Load.Disabled {
			x.SteadyState.Probes = append(x.SteadyState.Probes, Probe{Kind: EnqueueSuccessRate})
		}
	}
	if len(x.Rollbacks) == 0 {
		x.Rollbacks = []Rollback{{Action: RollbackRecoverFaults}, {Action: RollbackStartStopped}, {Action: RollbackWaitHealthy, Timeout: time.Minute}}
	}
	if x.Load.Disabled {
		h := x.Hypothesis
		for _, c := range []struct {
			set  bool
			name string
		}{{h.Lost != nil, "lost"}, {h.RateLimitViolations != nil, "rate_limit_violations"}, {h.Unexpected != nil, "unexpected"},
			{h.WritesResumedWithin != nil, "writes_resumed_within"}, {h.FailedRequestP99 != nil, "failed_request_p99"}, {h.EnqueueLatencyP99 != nil, "enqueue_latency_p99"}} {
			if c.set {
				p.errf(root, "hypothesis."+c.name, "needs load (load.disabled is true)")
			}
		}
	}
	if end := x.End() + x.Observe; end > x.Abort.MaxDuration {
		p.errf(root, "abort.max_duration", "%s is shorter than the method plus observe (%s)", x.Abort.MaxDuration, end)
	}
	return x
}

func (p *parser) steady(v *yaml.Node, path string, x *Experiment) {
	p.mapping(v, path, []field{
		{"warmup", func(v *yaml.Node, path string) {
			if d, ok := p.duration(v, path); ok {
				x.SteadyState.Warmup = d
			}
		}},
		{"probes", func(v *yaml.Node, path string) {
			p.list(v, path, func(i int, v *yaml.Node, path string) {
				if pr, ok := p.probe(v, path, false); ok {
					x.SteadyState.Probes = append(x.SteadyState.Probes, pr)
				}
			})
		}},
	})
}

func (p *parser) probe(v *yaml.Node, path string, abort bool) (Probe, bool) {
	pr := Probe{Line: deref(v).Line}
	var kindNode *yaml.Node
	var tol *float64
	var minN, maxN *yaml.Node
	var bound *yaml.Node
	fields := []field{
		{"probe", func(v *yaml.Node, path string) { kindNode = v; pr.Kind = ProbeKind(p.str(v, path, 64)) }},
		{"min", func(v *yaml.Node, path string) { minN = v }},
		{"max", func(v *yaml.Node, path string) { maxN = v }},
		{"tolerance", func(v *yaml.Node, path string) {
			if f, ok := p.number(v, path); ok {
				if f < 0 {
					p.errf(v, path, "must not be negative")
				}
				tol = &f
			}
		}},
		{"window", func(v *yaml.Node, path string) { pr.Window, _ = p.duration(v, path) }},
	}
	if abort {
		fields = append(fields, field{"for", func(v *yaml.Node, path string) { pr.For, _ = p.duration(v, path) }})
	}
	if !p.mapping(v, path, fields) {
		return pr, false
	}
	if kindNode == nil {
		p.errf(v, path+".probe", "required (one of %s)", probeNames())
		return pr, false
	}
	info, ok := LookupProbe(pr.Kind)
	if !ok {
		msg := fmt.Sprintf("unknown probe %q", trunc(string(pr.Kind)))
		if s := suggest(string(pr.Kind), strings.Split(probeNames(), ", ")); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		} else {
			msg += " (want one of " + probeNames() + ")"
		}
		p.errf(kindNode, path+".probe", "%s", msg)
		return pr, false
	}
	val := func(n *yaml.Node, path string) (float64, bool) {
		if info.Seconds {
			d, ok := p.duration(n, path)
			return d.Seconds(), ok
		}
		return p.number(n, path)
	}
	if info.Lower {
		if maxN != nil {
			p.errf(maxN, path+".max", "%s has a lower bound: use min or tolerance", pr.Kind)
		}
		if minN != nil {
			bound = minN
			if f, ok := val(minN, path+".min"); ok {
				pr.Min = &f
			}
		}
		if tol != nil {
			m := info.Ideal - *tol
			pr.Min = &m
		}
	} else {
		if minN != nil {
			p.errf(minN, path+".min", "%s has an upper bound: use max or tolerance", pr.Kind)
		}
		if maxN != nil {
			bound = maxN
			if f, ok := val(maxN, path+".max"); ok {
				pr.Max = &f
			}
		}
		if tol != nil {
			m := info.Ideal + *tol
			pr.Max = &m
		}
	}
	if tol != nil && bound != nil {
		p.errf(bound, path, "give either a bound or a tolerance, not both")
	}
	return pr, true
}

func probeNames() string {
	var n []string
	for _, p := range Probes {
		n = append(n, string(p.Kind))
	}
	return strings.Join(n, ", ")
}

func (p *parser) load(v *yaml.Node, path string, x *Experiment) {
	p.mapping(v, path, []field{
		{"disabled", func(v *yaml.Node, path string) { x.Load.Disabled, _ = p.boolean(v, path) }},
		{"queues", func(v *yaml.Node, path string) {
			if n, ok := p.integer(v, path, 1, 1000000); ok {
				x.Load.Queues = int(n)
			}
		}},
		{"rate", func(v *yaml.Node, path string) {
			if n, ok := p.integer(v, path, 1, 1000000); ok {
				x.Load.Rate = int(n)
			}
		}},
		{"consumers", func(v *yaml.Node, path string) {
			if n, ok := p.integer(v, path, 1, 1000); ok {
				x.Load.Consumers = int(n)
			}
		}},
		{"args", func(v *yaml.Node, path string) {
			p.list(v, path, func(_ int, v *yaml.Node, path string) { x.Load.Args = append(x.Load.Args, p.str(v, path, 256)) })
		}},
	})
}

func (p *parser) hypothesis(v *yaml.Node, path string, x *Experiment) {
	h := &x.Hypothesis
	n := 0
	count := func(set func(v *yaml.Node, path string)) func(v *yaml.Node, path string) {
		return func(v *yaml.Node, path string) { n++; set(v, path) }
	}
	ok := p.mapping(v, path, []field{
		{"first_failed_heartbeat_within", count(func(v *yaml.Node, path string) { h.FirstFailedHeartbeatWithin = p.durPtr(v, path) })},
		{"detected_within", count(func(v *yaml.Node, path string) { h.DetectedWithin = p.durPtr(v, path) })},
		{"alert_code", func(v *yaml.Node, path string) {
			h.AlertCode = p.str(v, path, 64)
			if h.AlertCode != "" && !validAlertCode(h.AlertCode) {
				p.errf(v, path, "unknown alert code %q (want one of %s)", trunc(h.AlertCode), strings.Join(alertCodes, ", "))
			}
		}},
		{"failed_over_within", count(func(v *yaml.Node, path string) { h.FailedOverWithin = p.durPtr(v, path) })},
		{"writes_resumed_within", count(func(v *yaml.Node, path string) { h.WritesResumedWithin = p.durPtr(v, path) })},
		{"healthy_within", count(func(v *yaml.Node, path string) { h.HealthyWithin = p.durPtr(v, path) })},
		{"lost", count(func(v *yaml.Node, path string) { h.Lost = p.intPtr(v, path, 0, math.MaxInt64) })},
		{"rate_limit_violations", count(func(v *yaml.Node, path string) { h.RateLimitViolations = p.intPtr(v, path, 0, math.MaxInt64) })},
		{"unexpected", count(func(v *yaml.Node, path string) { h.Unexpected = p.intPtr(v, path, 0, math.MaxInt64) })},
		{"failovers", count(func(v *yaml.Node, path string) { h.Failovers = p.intPtr(v, path, 0, 1000) })},
		{"no_failover", count(func(v *yaml.Node, path string) {
			if b, ok := p.boolean(v, path); ok && b {
				if h.Failovers != nil && *h.Failovers != 0 {
					p.errf(v, path, "contradicts failovers: %d", *h.Failovers)
				}
				zero := int64(0)
				h.Failovers = &zero
			}
		})},
		{"failed_request_p99", count(func(v *yaml.Node, path string) { h.FailedRequestP99 = p.durPtr(v, path) })},
		{"enqueue_latency_p99", count(func(v *yaml.Node, path string) { h.EnqueueLatencyP99 = p.durPtr(v, path) })},
	})
	if ok && n == 0 {
		p.errf(v, path, "no bound: a hypothesis needs at least one measurable bound")
	}
	if h.AlertCode != "" && h.DetectedWithin == nil {
		p.errf(v, path+".alert_code", "only applies with detected_within")
	}
}

var alertCodes = []string{string(events.AlertPrimaryDown), string(events.AlertPrimaryDataRegressed), string(events.AlertPrimaryRoleChanged),
	string(events.AlertReplicaProblem), string(events.AlertAgentLost), string(events.AlertConfigDrift)}

func validAlertCode(s string) bool { return contains(alertCodes, s) }

func (p *parser) step(v *yaml.Node, path string) (Step, bool) {
	s := Step{Line: deref(v).Line}
	var faultNode, targetNode, paramsNode, durNode *yaml.Node
	ok := p.mapping(v, path, []field{
		{"name", func(v *yaml.Node, path string) { s.Name = p.str(v, path, 200) }},
		{"fault", func(v *yaml.Node, path string) { faultNode = v; s.Fault = fault.Kind(p.str(v, path, 64)) }},
		{"target", func(v *yaml.Node, path string) { targetNode = v; s.Target = p.str(v, path, 256) }},
		{"after", func(v *yaml.Node, path string) { s.After, _ = p.duration(v, path) }},
		{"duration", func(v *yaml.Node, path string) { durNode = v; s.Duration, _ = p.duration(v, path) }},
		{"params", func(v *yaml.Node, path string) { paramsNode = v }},
	})
	if !ok {
		return s, false
	}
	valid := true
	var info fault.Info
	if faultNode == nil {
		p.errf(v, path+".fault", "required (one of %s)", strings.Join(fault.KindNames(), ", "))
		valid = false
	} else if s.Fault == "" {
		p.errf(faultNode, path+".fault", "empty (one of %s)", strings.Join(fault.KindNames(), ", "))
		valid = false
	} else {
		var err error
		if info, err = fault.Lookup(s.Fault); err != nil {
			msg := err.Error()
			if sg := suggest(string(s.Fault), fault.KindNames()); sg != "" {
				msg = fmt.Sprintf("unknown fault kind %q (did you mean %q?)", trunc(string(s.Fault)), sg)
			}
			p.errf(faultNode, path+".fault", "%s", msg)
			valid = false
		}
	}
	if targetNode == nil {
		p.errf(v, path+".target", "required (%s)", target.Syntax)
		valid = false
	} else if s.Target == "" {
		p.errf(targetNode, path+".target", "empty (%s)", target.Syntax)
		valid = false
	} else {
		sel, err := target.Parse(s.Target)
		if err != nil {
			p.errf(targetNode, path+".target", "%s", strings.TrimPrefix(err.Error(), target.ErrBadSelector.Error()+": "))
			valid = false
		} else {
			s.Selector = sel
			if info.Kind != "" {
				if err := info.CheckSelector(sel); err != nil {
					p.errf(targetNode, path+".target", "%q: %v", trunc(s.Target), err)
					valid = false
				}
			}
		}
	}
	raw := map[string]string{}
	if paramsNode != nil {
		p.mapping(paramsNode, path+".params", p.anyFields(paramsNode, path+".params", raw))
	}
	if info.Kind != "" {
		params, err := info.CheckParams(raw)
		if err != nil {
			at := paramsNode
			if at == nil {
				at = v
			}
			for _, e := range splitJoined(err) {
				p.errf(at, path+".params", "%s", strings.TrimPrefix(e, fault.ErrBadParam.Error()+": "))
			}
			valid = false
		}
		s.Params = params
		if info.Duration == fault.DurationRequired && s.Duration <= 0 {
			at := durNode
			if at == nil {
				at = v
			}
			p.errf(at, path+".duration", "%s needs a duration above zero", info.Kind)
			valid = false
		}
	}
	return s, valid
}

// anyFields accepts every key of a params mapping as a scalar string.
func (p *parser) anyFields(n *yaml.Node, path string, out map[string]string) []field {
	n = deref(n)
	if n == nil || n.Kind != yaml.MappingNode {
		return nil
	}
	var fs []field
	for i := 0; i+1 < len(n.Content); i += 2 {
		k := deref(n.Content[i])
		if k == nil || k.Kind != yaml.ScalarNode {
			continue
		}
		name := k.Value
		fs = append(fs, field{name, func(v *yaml.Node, path string) {
			if s, ok := p.scalar(v, path, "a value"); ok {
				out[name] = s
			}
		}})
	}
	return fs
}

func splitJoined(err error) []string {
	var out []string
	for _, l := range strings.Split(err.Error(), "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

// suggest returns the name closest to s within edit distance 2.
func suggest(s string, names []string) string {
	best, bestD := "", 3
	for _, n := range names {
		if d := distance(s, n); d < bestD {
			best, bestD = n, d
		}
	}
	return best
}

func distance(a, b string) int {
	if len(a) > 64 || len(b) > 64 {
		return 99
	}
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}
