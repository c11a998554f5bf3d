package gameday

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/heartline/heartline/services/chaos/internal/runner"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/redisproc"
)

// Results of one experiment in the summary.
const (
	Passed      = "passed"
	Failed      = "FAILED"
	Aborted     = "ABORTED"
	Errored     = "ERROR"
	NotRun      = "not run"
	Interrupted = "INTERRUPTED"
)

// Summary is the game day's outcome: summary.json and index.html.
type Summary struct {
	Started     time.Time `json:"started"`
	Ended       time.Time `json:"ended"`
	Command     string    `json:"command,omitempty"`
	Stream      string    `json:"stream"`
	Shards      int       `json:"shards"`
	Replicas    int       `json:"replicas"`
	Dir         string    `json:"dir"`
	Passed      bool      `json:"passed"`
	Interrupted bool      `json:"interrupted,omitempty"`
	Experiments []Result  `json:"experiments"`
	// Network is the audit of every Redis node's log at the end: the master
	// addresses the nodes dialed, none of which may be outside loopback.
	Network *NetworkAudit `json:"network,omitempty"`
}

// NetworkAudit is what the Redis nodes' logs say they dialed ("Connecting to MASTER").
type NetworkAudit struct {
	Nodes int              `json:"nodes"`
	Dials []redisproc.Dial `json:"dials"`
	// Off are the dials outside 127.0.0.0/8; any fails the game day.
	Off   []redisproc.Dial `json:"off_loopback"`
	Error string           `json:"error,omitempty"`
}

// Clean reports that the audit ran and found nothing outside loopback.
func (n *NetworkAudit) Clean() bool { return n != nil && n.Error == "" && len(n.Off) == 0 }

// Line is the audit's line in the summary.
func (n *NetworkAudit) Line() string {
	switch {
	case n == nil:
		return "network: not audited"
	case n.Error != "":
		return "network: audit failed: " + n.Error
	case len(n.Off) > 0:
		var s []string
		for _, d := range n.Off {
			s = append(s, d.String())
		}
		return "network: NODES DIALED OUTSIDE LOOPBACK: " + strings.Join(s, "; ")
	}
	park, times := redisinfo.DefaultPark.Addr(), 0
	for _, d := range n.Dials {
		if d.Addr == park {
			times += d.Count
		}
	}
	return fmt.Sprintf("network: no node dialed outside loopback (%d Redis nodes' logs, %d master addresses dialed; the park address %s %d times)",
		n.Nodes, len(n.Dials), park, times)
}

// Result is one experiment's line of the summary. Times are from the first fault, as
// the report's timeline measures them; "-" when it did not happen (or was not
// expected to, such as a failover in kill-replica).
type Result struct {
	Name          string `json:"name"`
	Title         string `json:"title"`
	File          string `json:"file"`
	Result        string `json:"result"`
	Shards        string `json:"attacked_shards,omitempty"`
	FirstFailedHB string `json:"first_failed_heartbeat"`
	Detected      string `json:"detected"`
	FailedOver    string `json:"failed_over"`
	WritesResumed string `json:"writes_resumed"`
	// Acked, Lost and Violations come from `ratequeue check` (nil: it did not run).
	Acked      *int64 `json:"acked"`
	Lost       *int64 `json:"lost"`
	Violations *int64 `json:"rate_violations"`
	// Report is report.html, relative to the game day's folder.
	Report string `json:"report"`
	// Broken lists the hypotheses that did not hold: "name: expected X, got Y".
	Broken []string `json:"broken,omitempty"`
	Abort  string   `json:"abort,omitempty"`
	Error  string   `json:"error,omitempty"`
}

func resultOf(e Entry, rep *runner.Report, out string) Result {
	r := Result{Name: e.Name, Title: e.X.Title, File: e.X.File, Result: Passed, Shards: strings.Join(rep.Shards, ","),
		FirstFailedHB: "-", Detected: "-", FailedOver: "-", WritesResumed: "-", Abort: rep.AbortReason, Error: rep.Error}
	switch {
	case rep.Passed:
	case rep.Aborted:
		r.Result = Aborted
	case rep.Error != "" && len(rep.Hypotheses) == 0:
		r.Result = Errored
	default:
		r.Result = Failed
	}
	if rel, err := filepath.Rel(out, filepath.Join(rep.Dir, "report.html")); err == nil {
		r.Report = rel
	} else {
		r.Report = filepath.Join(rep.Dir, "report.html")
	}
	for _, t := range rep.Timeline {
		at := fmt.Sprintf("%.2fs", float64(t.OffsetMS)/1000)
		switch t.Mark {
		case "first failed heartbeat":
			r.FirstFailedHB = at
		case "alert":
			r.Detected = at
		case "topology changed":
			r.FailedOver = at
		case "writes resumed":
			r.WritesResumed = at
		}
	}
	if c := rep.Check; c != nil {
		acked, lost, viol := c.Acknowledged, c.Lost, c.RateViolations
		r.Acked, r.Lost, r.Violations = &acked, &lost, &viol
	}
	for _, h := range rep.Hypotheses {
		if !h.Held {
			r.Broken = append(r.Broken, fmt.Sprintf("%s: expected %s, got %s", h.Name, h.Expected, h.Actual))
		}
	}
	return r
}

func num(p *int64) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprint(*p)
}

// Table prints the summary table and, when something failed, the list of what and
// why.
func (s *Summary) Table(w io.Writer) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "EXPERIMENT\tRESULT\tSHARD\tDETECTED\tFAILED OVER\tWRITES RESUMED\tACKED\tLOST\tVIOLATIONS\tREPORT")
	for _, r := range s.Experiments {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Name, r.Result, orDash(r.Shards), r.Detected, r.FailedOver,
			r.WritesResumed, num(r.Acked), num(r.Lost), num(r.Violations), orDash(r.Report))
	}
	tw.Flush()
	fmt.Fprintln(w, "\ntimes are from the first fault; ACKED and LOST count acknowledged enqueues (ratequeue check)")
	var bad []Result
	for _, r := range s.Experiments {
		if r.Result != Passed {
			bad = append(bad, r)
		}
	}
	fmt.Fprintf(w, "\n%s\n", s.Network.Line())
	switch {
	case len(bad) == 0 && s.Network != nil && !s.Network.Clean():
		fmt.Fprintf(w, "\nevery experiment passed, but the network audit failed: the game day fails (%s)\n", s.Network.Line())
	case len(bad) == 0:
		fmt.Fprintf(w, "\nevery hypothesis held (%d experiments, %s over %s)\n", len(s.Experiments), s.Ended.Sub(s.Started).Round(time.Second), s.Stream)
	default:
		fmt.Fprintf(w, "\n%d of %d experiments did not pass:\n", len(bad), len(s.Experiments))
		for _, r := range bad {
			fmt.Fprintf(w, "  %s (%s)\n", r.Name, r.Result)
			for _, b := range r.Broken {
				fmt.Fprintf(w, "    - %s\n", b)
			}
			if r.Abort != "" {
				fmt.Fprintf(w, "    - aborted: %s\n", r.Abort)
			}
			if r.Error != "" {
				fmt.Fprintf(w, "    - error: %s\n", r.Error)
			}
		}
	}
	fmt.Fprintf(w, "\nreports: %s\n  summary: %s\n  index:   %s\n  logs:    %s\n", s.Dir, filepath.Join(s.Dir, "summary.json"),
		filepath.Join(s.Dir, "index.html"), filepath.Join(s.Dir, "stack", "logs"))
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// Write writes summary.json and index.html into the game day's folder.
func (s *Summary) Write() error {
	b, err := json.MarshalIndent(s, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(s.Dir, "summary.json"), b, 0o644); err != nil {
		return err
	}
	var h bytes.Buffer
	if err := indexHTML.Execute(&h, s); err != nil {
		return fmt.Errorf("rendering index.html: %w", err)
	}
	return os.WriteFile(filepath.Join(s.Dir, "index.html"), h.Bytes(), 0o644)
}

var indexHTML = template.Must(template.New("index").Funcs(template.FuncMap{
	"num": num,
	"ts":  func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05 UTC") },
	"took": func(a, b time.Time) string {
		if b.IsZero() {
			return "-"
		}
		return b.Sub(a).Round(time.Second).String()
	},
	"cls": func(r string) string {
		if r == Passed {
			return "ok"
		}
		return "bad"
	},
}).Parse(`<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>Heartline game day {{ts .Started}}</title>
<style>
body{font-family:system-ui,sans-serif;margin:2em;color:#222}
table{border-collapse:collapse;margin:1em 0}
td,th{border:1px solid #ccc;padding:.3em .6em;text-align:left;vertical-align:top}
th{background:#f3f3f3}
.ok{color:#0a7a0a;font-weight:bold}.bad{color:#b00;font-weight:bold}
.num{text-align:right;font-variant-numeric:tabular-nums}
ul{margin:.2em 0;padding-left:1.2em}
.muted{color:#777}
</style></head><body>
<h1>Heartline game day: <span class="{{if .Passed}}ok{{else}}bad{{end}}">{{if .Passed}}every hypothesis held{{else if .Interrupted}}interrupted{{else}}some hypotheses failed{{end}}</span></h1>
<p>{{ts .Started}}, {{took .Started .Ended}}; stream: {{.Stream}}; {{.Shards}} shards of a primary and {{.Replicas}} replica(s).
{{if .Command}}<br><span class="muted">{{.Command}}</span>{{end}}</p>
<table>
<tr><th>experiment</th><th>result</th><th>shard</th><th>first failed heartbeat</th><th>detected</th><th>failed over</th><th>writes resumed</th><th>acked</th><th>lost</th><th>rate violations</th><th>what broke</th></tr>
{{range .Experiments}}<tr>
<td>{{if .Report}}<a href="{{.Report}}">{{.Name}}</a>{{else}}{{.Name}}{{end}}<br><span class="muted">{{.Title}}</span></td>
<td class="{{cls .Result}}">{{.Result}}</td><td>{{.Shards}}</td>
<td class="num">{{.FirstFailedHB}}</td><td class="num">{{.Detected}}</td><td class="num">{{.FailedOver}}</td><td class="num">{{.WritesResumed}}</td>
<td class="num">{{num .Acked}}</td><td class="num">{{num .Lost}}</td><td class="num">{{num .Violations}}</td>
<td>{{if or .Broken .Abort .Error}}<ul>{{range .Broken}}<li>{{.}}</li>{{end}}{{if .Abort}}<li>aborted: {{.Abort}}</li>{{end}}{{if .Error}}<li>error: {{.Error}}</li>{{end}}</ul>{{end}}</td>
</tr>
{{end}}</table>
<p class="{{if .Network.Clean}}ok{{else}}bad{{end}}">{{.Network.Line}}</p>
<p class="muted">Times are from the first fault. Acked and lost count acknowledged enqueues, from <code>ratequeue check</code> on each run's history.
Each experiment's report.html has the timeline, the expected-versus-actual table and control versus experiment; the services' logs are in <code>stack/logs</code>.</p>
</body></html>
`))
