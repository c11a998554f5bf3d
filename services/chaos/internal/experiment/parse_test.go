package experiment

import (
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestGameDayPackValidates(t *testing.T) {
	files, err := filepath.Glob("../../experiments/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 9 {
		t.Fatalf("the game-day pack has %d experiments, want at least 9", len(files))
	}
	for _, f := range files {
		x, err := LoadFile(f)
		if err != nil {
			t.Errorf("%v", err)
			continue
		}
		if x.Title == "" || len(x.Method) == 0 || x.Hypothesis.Lost == nil || *x.Hypothesis.Lost != 0 {
			t.Errorf("%s: every pack experiment asserts zero acknowledged messages lost", f)
		}
	}
}

const good = `title: t
hypothesis:
  lost: 0
method:
  - fault: kill
    target: shard:random/primary
    duration: 10s
`

func TestParseGood(t *testing.T) {
	x, err := Parse("good.yaml", []byte(good+`steady_state:
  probes:
    - probe: enqueue_success_rate
      tolerance: 0.05
    - probe: enqueue_latency_p99
      max: 250ms
abort:
  when:
    - probe: shards_healthy
      for: 30s
`))
	if err != nil {
		t.Fatal(err)
	}
	if len(x.SteadyState.Probes) != 2 || *x.SteadyState.Probes[0].Min != 0.95 || *x.SteadyState.Probes[1].Max != 0.25 {
		t.Fatalf("probes: %+v", x.SteadyState.Probes)
	}
	if x.Method[0].Params["restart_after"] != "supervisor" || x.Method[0].Duration != 10*time.Second {
		t.Fatalf("defaults: %+v", x.Method[0])
	}
	if len(x.Rollbacks) == 0 || x.Abort.When[0].For != 30*time.Second {
		t.Fatal("defaults")
	}
	if !x.SteadyState.Probes[0].Holds(0.96) || x.SteadyState.Probes[0].Holds(0.9) {
		t.Fatal("Holds")
	}
}

func TestBadFilesGiveClearErrors(t *testing.T) {
	cases := []struct {
		name, doc string
		want      []string // each must appear in the error text
	}{
		{"unknown top-level field", good + "colour: red\n",
			[]string{"bad.yaml:8:1: colour: unknown field \"colour\""}},
		{"misspelt field", strings.Replace(good, "hypothesis:", "hypothesys:", 1),
			[]string{`bad.yaml:2:1: hypothesys: unknown field "hypothesys" (did you mean "hypothesis"?)`, "hypothesis: required"}},
		{"bad duration", strings.Replace(good, "duration: 10s", "duration: 10x", 1),
			[]string{`bad.yaml:7:15: method[0].duration: "10x" is not a duration`}},
		{"negative duration", strings.Replace(good, "duration: 10s", "duration: -3s", 1),
			[]string{"bad.yaml:7:15: method[0].duration:", "must not be negative"}},
		{"unknown fault", strings.Replace(good, "fault: kill", "fault: nuke", 1),
			[]string{`bad.yaml:5:12: method[0].fault: unknown fault kind "nuke"`}},
		{"misspelt fault", strings.Replace(good, "fault: kill", "fault: kil", 1),
			[]string{`method[0].fault: unknown fault kind "kil" (did you mean "kill"?)`}},
		{"bad selector", strings.Replace(good, "shard:random/primary", "shard:random/leader", 1),
			[]string{`bad.yaml:6:13: method[0].target: "shard:random/leader": node role "leader"`}},
		{"fault cannot act on target", strings.Replace(good, "shard:random/primary", "link:client->ratequeue", 1),
			[]string{`bad.yaml:6:13: method[0].target: "link:client->ratequeue":`, "kill acts on a Redis node"}},
		{"role mismatch", strings.Replace(strings.Replace(good, "fault: kill", "fault: resync-storm", 1), "duration: 10s", "duration: 1s", 1),
			[]string{"method[0].target", "resync-storm acts on a shard's replica"}},
		{"unknown param", good + "    params:\n      colour: red\n",
			[]string{`bad.yaml:9:7: method[0].params: kill has no parameter "colour" (it takes restart_after)`}},
		{"bad param value", good + "    params:\n      restart_after: sometime\n",
			[]string{`method[0].params: kill: restart_after: "sometime": want supervisor, never or a duration`}},
		{"missing duration for pause", strings.Replace(good, "fault: kill", "fault: pause", 1) + "  - fault: pause\n    target: shard:random/primary\n",
			[]string{"bad.yaml:8:5: method[1].duration: pause needs a duration above zero"}},
		{"missing target", "title: t\nhypothesis: {lost: 0}\nmethod:\n  - fault: kill\n",
			[]string{"bad.yaml:4:5: method[0].target: required"}},
		{"empty fault and target", "title: t\nhypothesis: {lost: 0}\nmethod:\n  - fault: ''\n    target: ''\n",
			[]string{"method[0].fault: empty (one of", "method[0].target: empty ("}},
		{"local YAML tags", "title: t\nhypothesis: {lost: 0}\nmethod:\n  - fault: !0\n    target: !x shard:random/primary\n",
			[]string{`method[0].fault: want text, got a value with the YAML tag "!0"`, `method[0].target: want text, got a value with the YAML tag "!x"`}},
		{"empty method", "title: t\nhypothesis: {lost: 0}\nmethod: []\n",
			[]string{"bad.yaml:3:9: method: empty"}},
		{"no hypothesis bound", strings.Replace(good, "  lost: 0\n", "  alert_code: PRIMARY_DOWN\n", 1),
			[]string{"hypothesis: no bound", "hypothesis.alert_code: only applies with detected_within"}},
		{"negative count", strings.Replace(good, "lost: 0", "lost: -1", 1),
			[]string{"bad.yaml:3:9: hypothesis.lost: -1: want 0 to"}},
		{"wrong type", strings.Replace(good, "lost: 0", "lost: [1]", 1),
			[]string{"bad.yaml:3:9: hypothesis.lost: want an integer, got a list"}},
		{"unknown probe", good + "steady_state:\n  probes:\n    - probe: vibes\n",
			[]string{`bad.yaml:10:14: steady_state.probes[0].probe: unknown probe "vibes"`}},
		{"wrong bound", good + "steady_state:\n  probes:\n    - probe: no_open_alerts\n      min: 1\n",
			[]string{"bad.yaml:11:12: steady_state.probes[0].min: no_open_alerts has an upper bound"}},
		{"for outside abort", good + "steady_state:\n  probes:\n    - probe: no_open_alerts\n      for: 1s\n",
			[]string{`steady_state.probes[0].for: unknown field "for"`}},
		{"unknown alert code", strings.Replace(good, "  lost: 0\n", "  lost: 0\n  detected_within: 1s\n  alert_code: FIRE\n", 1),
			[]string{`hypothesis.alert_code: unknown alert code "FIRE"`}},
		{"bad rollback", good + "rollbacks:\n  - action: pray\n",
			[]string{`bad.yaml:9:13: rollbacks[0].action: unknown rollback action "pray"`}},
		{"duplicate key", good + "title: again\n",
			[]string{"bad.yaml:8:1: title: duplicate field"}},
		{"max duration too short", good + "abort:\n  max_duration: 5s\n",
			[]string{"abort.max_duration: 5s is shorter than the method plus observe"}},
		{"yaml syntax", "title: [unclosed\n", []string{"bad.yaml:"}},
		{"not a mapping", "- a\n- b\n", []string{"bad.yaml:1:1: want a mapping, got a list"}},
		{"empty", "", []string{"bad.yaml: empty file"}},
		{"load needed", good + "load:\n  disabled: true\n", []string{"hypothesis.lost: needs load"}},
		{"several problems at once", "title: t\nhypothesis:\n  lost: x\nmethod:\n  - fault: kill\n    target: nope\n    after: soon\n",
			[]string{"bad.yaml:3:9: hypothesis.lost:", "bad.yaml:6:13: method[0].target:", "bad.yaml:7:12: method[0].after:"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse("bad.yaml", []byte(c.doc))
			if err == nil {
				t.Fatal("parsed without error")
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error does not wrap ErrInvalid: %v", err)
			}
			for _, w := range c.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func FuzzParse(f *testing.F) {
	f.Add([]byte(good))
	f.Add([]byte("title: x\nmethod: &a [*a]\n"))
	f.Add([]byte("a: &a [*a, *a, *a]\nb: [*a, *a]\n"))
	f.Add([]byte("title: t\nhypothesis: {lost: 0}\nmethod:\n  - {fault: pause, target: 'shard:all/replicas', duration: 1s}\n"))
	f.Add([]byte("steady_state: {probes: [{probe: enqueue_latency_p99, max: 1h}]}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		x, err := Parse("fuzz.yaml", b)
		if err != nil {
			var es Errors
			if !errors.As(err, &es) || len(es) == 0 {
				t.Fatalf("error is not Errors: %T %v", err, err)
			}
			return
		}
		if x.Title == "" || len(x.Method) == 0 {
			t.Fatalf("accepted an experiment without title or method")
		}
		for _, s := range x.Method {
			if s.Fault == "" || s.Target == "" || s.Duration < 0 || s.After < 0 {
				t.Fatalf("accepted a bad step: %+v", s)
			}
		}
	})
}
