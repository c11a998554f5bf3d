package runner

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/heartline/heartline/services/chaos/internal/injector"
	"github.com/heartline/heartline/shared/events"
)

// Report is everything one run found. It is written as report.json and report.html.
type Report struct {
	RunID       string    `json:"run_id"`
	Experiment  string    `json:"experiment"`
	File        string    `json:"file"`
	Description string    `json:"description,omitempty"`
	Env         string    `json:"environment"`
	Dir         string    `json:"dir"`
	Started     time.Time `json:"started"`
	Ended       time.Time `json:"ended"`
	// Passed: the run completed and every hypothesis held.
	Passed      bool   `json:"passed"`
	Aborted     bool   `json:"aborted"`
	AbortReason string `json:"abort_reason,omitempty"`
	// Error: the run could not be carried out as planned.
	Error string `json:"error,omitempty"`
	// Shards the run attacked (the experiment group); the others are the control.
	Shards      []string                  `json:"attacked_shards"`
	SteadyState []ProbeResult             `json:"steady_state"`
	Backups     []Backup                  `json:"backups"`
	Load        *LoadInfo                 `json:"load,omitempty"`
	Attacks     []injector.Attack         `json:"attacks"`
	Hypotheses  []events.HypothesisResult `json:"hypotheses"`
	Timeline    []TimelineEntry           `json:"timeline"`
	Check       *CheckReport              `json:"check,omitempty"`
	// Control compares each shard's traffic over the fault window: the attacked shards
	// against the untouched ones.
	Control       []ShardStats     `json:"control_vs_experiment"`
	ControlWindow [2]time.Time     `json:"control_window"`
	Rollbacks     []RollbackResult `json:"rollbacks"`
	// UndecodableEvents counts stream messages the watch could not decode.
	UndecodableEvents int `json:"undecodable_events,omitempty"`
}

// ProbeResult is one steady-state probe's verdict.
type ProbeResult struct {
	Probe    string  `json:"probe"`
	Expected string  `json:"expected"`
	Value    float64 `json:"value"`
	Actual   string  `json:"actual"`
	Held     bool    `json:"held"`
}

// MarshalJSON writes NaN values as null.
func (p ProbeResult) MarshalJSON() ([]byte, error) {
	type alias ProbeResult
	v := struct {
		alias
		Value *float64 `json:"value"`
	}{alias: alias(p)}
	if !math.IsNaN(p.Value) && !math.IsInf(p.Value, 0) {
		v.Value = &p.Value
	}
	return json.Marshal(v)
}

// MarshalJSON writes a NaN success rate as null.
func (s ShardStats) MarshalJSON() ([]byte, error) {
	type alias ShardStats
	v := struct {
		alias
		SuccessRate *float64 `json:"success_rate"`
	}{alias: alias(s)}
	if !math.IsNaN(s.SuccessRate) {
		v.SuccessRate = &s.SuccessRate
	}
	return json.Marshal(v)
}

// LoadInfo describes the load of the run.
type LoadInfo struct {
	Args    []string `json:"args"`
	History string   `json:"history"`
	Error   string   `json:"error,omitempty"`
}

// TimelineEntry is one thing that happened, relative to the first fault.
type TimelineEntry struct {
	At            time.Time `json:"at"`
	OffsetMS      int64     `json:"offset_ms"`
	Source        string    `json:"source"`
	What          string    `json:"what"`
	Shard         string    `json:"shard,omitempty"`
	Detail        string    `json:"detail,omitempty"`
	CorrelationID string    `json:"correlation_id,omitempty"`
	// Mark flags the entries the hypotheses are measured by.
	Mark string `json:"mark,omitempty"`
}

// RollbackResult is one rollback action's outcome.
type RollbackResult struct {
	Action string `json:"action"`
	Took   string `json:"took"`
	Error  string `json:"error,omitempty"`
}

// Write writes report.json and report.html into r.Dir.
func (r *Report) Write() error {
	if err := os.MkdirAll(r.Dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encoding the report: %w", err)
	}
	if err := os.WriteFile(filepath.Join(r.Dir, "report.json"), b, 0o644); err != nil {
		return err
	}
	var h bytes.Buffer
	if err := reportHTML.Execute(&h, r); err != nil {
		return fmt.Errorf("rendering the report: %w", err)
	}
	return os.WriteFile(filepath.Join(r.Dir, "report.html"), h.Bytes(), 0o644)
}

// ExitCode is 0 when the run passed, 1 otherwise.
func (r *Report) ExitCode() int {
	if r.Passed {
		return 0
	}
	return 1
}

func fmtDur(d time.Duration) string {
	if d < 0 {
		return "-" + fmtDur(-d)
	}
	switch {
	case d < time.Millisecond:
		return d.String()
	case d < 10*time.Second:
		return fmt.Sprintf("%.3fs", d.Seconds())
	default:
		return d.Round(100 * time.Millisecond).String()
	}
}

func fmtRate(f float64) string {
	if math.IsNaN(f) {
		return "n/a"
	}
	return fmt.Sprintf("%.2f%%", f*100)
}

type svgMark struct {
	X      float64
	Anchor string
	Label  string
	Class  string
	Y      int
}

var reportHTML = template.Must(template.New("report").Funcs(template.FuncMap{
	"dur":  fmtDur,
	"rate": fmtRate,
	"ts":   func(t time.Time) string { return t.UTC().Format("2006-01-02 15:04:05.000 UTC") },
	"ms": func(v int64) string {
		return fmt.Sprintf("%+.3fs", float64(v)/1000)
	},
	"join": strings.Join,
	"marks": func(r *Report) []svgMark {
		var out []svgMark
		var lo, hi int64
		for _, e := range r.Timeline {
			if e.Mark == "" {
				continue
			}
			lo, hi = min(lo, e.OffsetMS), max(hi, e.OffsetMS)
		}
		if hi == lo {
			hi = lo + 1000
		}
		i := 0
		for _, e := range r.Timeline {
			if e.Mark == "" {
				continue
			}
			x := 40 + 880*float64(e.OffsetMS-lo)/float64(hi-lo)
			anchor := "start"
			if x > 640 {
				anchor = "end"
			}
			out = append(out, svgMark{X: x, Anchor: anchor, Label: fmt.Sprintf("%s %+.2fs", e.Mark, float64(e.OffsetMS)/1000), Class: e.Source, Y: 28 + (i%5)*16})
			i++
		}
		return out
	},
}).Parse(`<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<title>{{.Experiment}} — chaos report {{.RunID}}</title>
<style>
body{font:14px/1.45 -apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1100px;color:#1d2330;padding:0 1em}
h1{font-size:1.6em;margin-bottom:.2em}h2{font-size:1.15em;margin-top:1.8em;border-bottom:1px solid #dde;padding-bottom:.2em}
.badge{display:inline-block;padding:.15em .6em;border-radius:.3em;font-weight:600;color:#fff}
.pass{background:#1a7f37}.fail{background:#c62828}.abort{background:#b26a00}
table{border-collapse:collapse;width:100%;margin:.5em 0}th,td{border:1px solid #dde;padding:.3em .5em;text-align:left;vertical-align:top}
th{background:#f3f4f8}td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.held td.v{color:#1a7f37;font-weight:600}tr.broken td.v{color:#c62828;font-weight:600}
tr.attacked{background:#fff4e5}tr.mark{background:#eef6ff}
.muted{color:#667}code,pre{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:.92em}
pre{background:#f6f8fa;padding:.6em;overflow-x:auto;white-space:pre-wrap}
svg text{font-size:11px;font-family:inherit}
</style></head><body>
<h1>{{.Experiment}}</h1>
<p>{{if .Aborted}}<span class="badge abort">ABORTED</span>{{else if .Passed}}<span class="badge pass">PASSED</span>{{else}}<span class="badge fail">FAILED</span>{{end}}
<span class="muted">run <code>{{.RunID}}</code> · {{.Env}} · {{ts .Started}} → {{ts .Ended}} · file <code>{{.File}}</code></span></p>
{{if .Description}}<p>{{.Description}}</p>{{end}}
{{if .AbortReason}}<p><b>Abort:</b> {{.AbortReason}}</p>{{end}}
{{if .Error}}<p><b>Error:</b> {{.Error}}</p>{{end}}
<p>Attacked shards: {{if .Shards}}<b>{{join .Shards ", "}}</b>{{else}}none (the faults hit no shard directly){{end}}</p>

<h2>Hypothesis: expected versus actual</h2>
{{if .Hypotheses}}<table><tr><th>bound</th><th>expected</th><th>actual</th><th>held</th></tr>
{{range .Hypotheses}}<tr class="{{if .Held}}held{{else}}broken{{end}}"><td>{{.Name}}</td><td>{{.Expected}}</td><td>{{.Actual}}</td><td class="v">{{if .Held}}✔ held{{else}}✘ broken{{end}}</td></tr>
{{end}}</table>{{else}}<p class="muted">Not evaluated (the run stopped before its method).</p>{{end}}

<h2>Timeline</h2>
{{$m := marks .}}{{if $m}}<svg width="960" height="120" viewBox="0 0 960 120" role="img" aria-label="timeline">
<line x1="40" y1="12" x2="920" y2="12" stroke="#99a" stroke-width="2"/>
{{range $m}}<line x1="{{.X}}" y1="6" x2="{{.X}}" y2="{{.Y}}" stroke="#4466aa"/><circle cx="{{.X}}" cy="12" r="4" fill="#4466aa"/><text x="{{.X}}" y="{{.Y}}" dy="10" text-anchor="{{.Anchor}}">{{.Label}}</text>
{{end}}</svg>{{end}}
<table><tr><th>offset</th><th>time</th><th>source</th><th>event</th><th>shard</th><th>detail</th></tr>
{{range .Timeline}}<tr{{if .Mark}} class="mark"{{end}}><td class="num">{{ms .OffsetMS}}</td><td>{{ts .At}}</td><td>{{.Source}}</td><td>{{.What}}</td><td>{{.Shard}}</td><td>{{.Detail}}{{if .CorrelationID}} <span class="muted">corr {{.CorrelationID}}</span>{{end}}</td></tr>
{{end}}</table>

<h2>Control versus experiment</h2>
<p class="muted">Enqueues completed and deliveries received per shard from {{ts (index .ControlWindow 0)}} to {{ts (index .ControlWindow 1)}} (the fault window and the observation after it), from the load history.</p>
{{if .Control}}<table><tr><th>shard</th><th>group</th><th>attempts</th><th>acknowledged</th><th>failed</th><th>success</th><th>p50 ack latency</th><th>p99 ack latency</th><th>delivered</th></tr>
{{range .Control}}<tr{{if .Attacked}} class="attacked"{{end}}><td>{{.Shard}}</td><td>{{if .Attacked}}experiment{{else}}control{{end}}</td><td class="num">{{.Attempts}}</td><td class="num">{{.OK}}</td><td class="num">{{.Failed}}</td><td class="num">{{rate .SuccessRate}}</td><td class="num">{{dur .LatencyP50}}</td><td class="num">{{dur .LatencyP99}}</td><td class="num">{{.Delivered}}</td></tr>
{{end}}</table>{{else}}<p class="muted">No load history.</p>{{end}}

<h2>Steady state</h2>
<table><tr><th>probe</th><th>expected</th><th>actual</th><th>held</th></tr>
{{range .SteadyState}}<tr class="{{if .Held}}held{{else}}broken{{end}}"><td>{{.Probe}}</td><td>{{.Expected}}</td><td>{{.Actual}}</td><td class="v">{{if .Held}}✔{{else}}✘{{end}}</td></tr>
{{end}}</table>

{{with .Check}}<h2>Loss check (ratequeue check)</h2>
<table><tr><th>valid</th><th>drained</th><th>acknowledged</th><th>delivered</th><th>lost</th><th>unexpected</th><th>corrupt</th><th>duplicated</th><th>reordered</th><th>rate violations</th></tr>
<tr><td>{{.Valid}}</td><td>{{.Drained}}</td><td class="num">{{.Acknowledged}}</td><td class="num">{{.Delivered}}</td><td class="num">{{.Lost}}</td><td class="num">{{.Unexpected}}</td><td class="num">{{.Corrupt}}</td><td class="num">{{.Duplicated}}</td><td class="num">{{.Reordered}}</td><td class="num">{{.RateViolations}}</td></tr></table>
{{if .Problems}}<pre>{{join .Problems "\n"}}</pre>{{end}}{{end}}

<h2>Attacks</h2>
<table><tr><th>id</th><th>fault</th><th>targets</th><th>started</th><th>recovered</th><th>state</th><th>error</th></tr>
{{range .Attacks}}<tr><td><code>{{.ID}}</code></td><td>{{.Fault}}</td><td>{{range .Targets}}{{.}} {{end}}</td><td>{{ts .Started}}</td><td>{{if not .Recovered.IsZero}}{{ts .Recovered}}{{end}}</td><td>{{.State}}</td><td>{{.Error}}</td></tr>
{{end}}</table>

<h2>Backups</h2>
{{if .Backups}}<table><tr><th>shard</th><th>node</th><th>file</th><th>bytes</th><th>took</th><th>error</th></tr>
{{range .Backups}}<tr><td>{{.Shard}}</td><td>{{.Node}}</td><td><code>{{.File}}</code></td><td class="num">{{.Bytes}}</td><td>{{.Took}}</td><td>{{.Error}}</td></tr>
{{end}}</table>{{else}}<p class="muted">None.</p>{{end}}

<h2>Rollbacks</h2>
<table><tr><th>action</th><th>took</th><th>error</th></tr>
{{range .Rollbacks}}<tr><td>{{.Action}}</td><td>{{.Took}}</td><td>{{.Error}}</td></tr>
{{end}}</table>
{{with .Load}}<h2>Load</h2><p><code>{{join .Args " "}}</code></p><p>History: <code>{{.History}}</code>{{if .Error}} — {{.Error}}{{end}}</p>{{end}}
</body></html>
`))
