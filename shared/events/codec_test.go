package events

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

var src = Source{Service: "agent", Instance: "agent-0"}

func sampleEvents() []Event {
	hb := New(KindHeartbeat, src, "shard-1", &Heartbeat{Seq: 7, Interval: 250 * time.Millisecond,
		Replica: ReplicaState{Addr: "127.0.0.1:7001", Reachable: true, Role: "slave", LinkUp: true, Offset: 1234},
		Primary: PrimaryProbe{Addr: "127.0.0.1:7000", OK: true, RunID: "abc", Role: "master", Offset: 1234},
		Flags:   []Flag{FlagConfigDrift}, Drift: []ConfigDrift{{Node: "127.0.0.1:7000", Param: "save", Want: "3600 1", Got: ""}}})
	alert := Continue(KindAlertOpened, Source{Service: "alerter"}, hb, &Alert{IncidentID: "inc-1",
		Code: AlertPrimaryDown, Severity: SeverityCritical, State: StateHard, FailedProbes: 3, AgentsReporting: 1, AgentsDown: 1})
	fo := Continue(KindFailoverCompleted, Source{Service: "lazarus"}, alert, &Failover{FailoverID: "fo-1",
		Decision: DecisionFailover, Reason: "PRIMARY_DOWN", FromEpoch: 1, ToEpoch: 2, LossWindow: 0})
	fo.Epoch = 2
	topo := Continue(KindTopologyChanged, Source{Service: "lazarus"}, fo, &TopologyChanged{Primary: "127.0.0.1:7001", Reason: "failover"})
	atk := New(KindChaosAttackStarted, Source{Service: "chaos"}, "shard-1", &ChaosAttack{AttackID: "atk-1", Fault: "kill", Target: "shard-1/primary"})
	res := New(KindExperimentResult, Source{Service: "chaos"}, "", &ExperimentResult{RunID: "r1", Experiment: "kill primary", Passed: true,
		Hypotheses: []HypothesisResult{{Name: "lost", Expected: "0", Actual: "0", Held: true}}})
	return []Event{hb, alert, fo, topo, atk, res}
}

func TestRoundTripEveryKindFamily(t *testing.T) {
	for _, e := range sampleEvents() {
		b, err := Encode(e)
		if err != nil {
			t.Fatalf("%s: encode: %v", e.Kind, err)
		}
		got, err := Decode(b)
		if err != nil {
			t.Fatalf("%s: decode: %v\n%s", e.Kind, err, b)
		}
		b2, _ := Encode(got)
		if string(b) != string(b2) {
			t.Fatalf("%s: round trip changed the event:\n%s\n%s", e.Kind, b, b2)
		}
	}
	ev := sampleEvents()
	if ev[1].CorrelationID != ev[0].ID || ev[3].CorrelationID != ev[0].ID {
		t.Fatal("correlation id must be carried unchanged along the chain")
	}
}

func mutate(t *testing.T, e Event, f func(m map[string]any)) []byte {
	t.Helper()
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	f(m)
	out, _ := json.Marshal(m)
	return out
}

func TestDecodeErrorsNameTheField(t *testing.T) {
	hb := sampleEvents()[0]
	cases := []struct {
		name  string
		data  []byte
		err   error
		field string
	}{
		{"not json", []byte("{"), ErrMalformed, ""},
		{"empty", nil, ErrMalformed, ""},
		{"array", []byte("[1,2]"), ErrInvalidField, ""},
		{"missing schema", mutate(t, hb, func(m map[string]any) { delete(m, "schema") }), ErrMissingField, "schema"},
		{"schema wrong type", mutate(t, hb, func(m map[string]any) { m["schema"] = 1 }), ErrInvalidField, "schema"},
		{"schema garbage", mutate(t, hb, func(m map[string]any) { m["schema"] = "one" }), ErrInvalidField, "schema"},
		{"newer major", mutate(t, hb, func(m map[string]any) { m["schema"] = "2.0" }), ErrUnsupportedVersion, "schema"},
		{"unknown kind", mutate(t, hb, func(m map[string]any) { m["kind"] = "alert.exploded" }), ErrUnknownKind, "kind"},
		{"missing kind", mutate(t, hb, func(m map[string]any) { delete(m, "kind") }), ErrMissingField, "kind"},
		{"missing id", mutate(t, hb, func(m map[string]any) { delete(m, "id") }), ErrMissingField, "id"},
		{"missing shard", mutate(t, hb, func(m map[string]any) { delete(m, "shard") }), ErrMissingField, "shard"},
		{"bad shard", mutate(t, hb, func(m map[string]any) { m["shard"] = "a b" }), ErrInvalidField, "shard"},
		{"missing payload", mutate(t, hb, func(m map[string]any) { delete(m, "payload") }), ErrMissingField, "payload"},
		{"payload wrong type", mutate(t, hb, func(m map[string]any) { m["payload"] = "x" }), ErrInvalidField, "payload"},
		{"epoch wrong type", mutate(t, hb, func(m map[string]any) { m["epoch"] = "three" }), ErrInvalidField, "epoch"},
		{"negative epoch", mutate(t, hb, func(m map[string]any) { m["epoch"] = -1 }), ErrInvalidField, "epoch"},
		{"bad payload time", mutate(t, hb, func(m map[string]any) { m["payload"].(map[string]any)["agent_start"] = "noon" }), ErrInvalidField, "payload.agent_start"},
		{"bad time", mutate(t, hb, func(m map[string]any) { m["time"] = "yesterday" }), ErrInvalidField, "time"},
		{"nested wrong type", mutate(t, hb, func(m map[string]any) { m["payload"].(map[string]any)["primary"].(map[string]any)["offset"] = "x" }), ErrInvalidField, "payload.primary.offset"},
		{"missing seq", mutate(t, hb, func(m map[string]any) { delete(m["payload"].(map[string]any), "seq") }), ErrMissingField, "payload.seq"},
		{"unknown field same version", mutate(t, hb, func(m map[string]any) { m["colour"] = "red" }), ErrUnknownField, "colour"},
		{"unknown payload field", mutate(t, hb, func(m map[string]any) { m["payload"].(map[string]any)["x"] = 1 }), ErrUnknownField, "payload.x"},
		{"unknown flag", mutate(t, hb, func(m map[string]any) { m["payload"].(map[string]any)["flags"] = []string{"BOOM"} }), ErrInvalidField, "payload.flags[0]"},
		{"trailing data", append(mutate(t, hb, func(map[string]any) {}), []byte(" {}")...), ErrMalformed, ""},
		{"oversize", []byte(`{"schema":"1.0","pad":"` + strings.Repeat("x", MaxEncodedSize) + `"}`), ErrTooLarge, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Decode(c.data)
			if !errors.Is(err, c.err) {
				t.Fatalf("want %v, got %v", c.err, err)
			}
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("want a *FieldError, got %T", err)
			}
			if fe.Field != c.field {
				t.Fatalf("field = %q, want %q (%v)", fe.Field, c.field, err)
			}
		})
	}
}

func TestNewerMinorVersionIsRead(t *testing.T) {
	hb := sampleEvents()[0]
	data := mutate(t, hb, func(m map[string]any) {
		m["schema"] = "1.9"
		m["added_later"] = true
		m["payload"].(map[string]any)["new_thing"] = 1
	})
	if _, err := Decode(data); err != nil {
		t.Fatalf("a newer minor version must be readable: %v", err)
	}
}

func TestEncodeRefusesInvalidEvents(t *testing.T) {
	e := New(KindTopologyChanged, src, "shard-1", &TopologyChanged{Primary: "a:1", Reason: "x"})
	if _, err := Encode(e); !errors.Is(err, ErrMissingField) {
		t.Fatalf("topology change without an epoch: want ErrMissingField, got %v", err)
	}
	e = New(KindAlertOpened, src, "shard-1", &Heartbeat{Seq: 1})
	if _, err := Encode(e); !errors.Is(err, ErrInvalidField) {
		t.Fatalf("wrong payload type: want ErrInvalidField, got %v", err)
	}
	e = New(KindChaosAttackStarted, src, "", &ChaosAttack{AttackID: "a", Fault: "kill", Target: "x", Params: map[string]string{"p": strings.Repeat("x", MaxEncodedSize)}})
	if _, err := Encode(e); !errors.Is(err, ErrTooLarge) {
		t.Fatalf("oversize: want ErrTooLarge, got %v", err)
	}
}

func FuzzDecode(f *testing.F) {
	for _, e := range sampleEvents() {
		b, _ := Encode(e)
		f.Add(b)
	}
	f.Add([]byte(`{"schema":"1.0","kind":"heartbeat","payload":null}`))
	f.Add([]byte(`{"schema":"99999999999999999999.0"}`))
	f.Add([]byte(`{"schema":"1.0","kind":"alert.opened","payload":{"failed_probes":-1}}`))
	f.Add([]byte(`{"schema":"1.0","kind":"heartbeat","time":"2026-13-45T99:00:00Z"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		e, err := Decode(data)
		if err != nil {
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("error is not a *FieldError: %T %v", err, err)
			}
			return
		}
		// Whatever decodes must encode again, and decode to the same thing.
		b, err := Encode(e)
		if err != nil {
			t.Fatalf("decoded event does not encode: %v", err)
		}
		if _, err := Decode(b); err != nil {
			t.Fatalf("re-encoded event does not decode: %v", err)
		}
	})
}
