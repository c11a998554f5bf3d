package logging

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
)

func TestJSONFieldsAndChildLoggers(t *testing.T) {
	var buf bytes.Buffer
	l, err := New(Options{Service: "lazarus", Instance: "i-1", Level: "debug", Format: "json", Out: &buf})
	if err != nil {
		t.Fatal(err)
	}
	child := Incident(l, "shard-1", "hb-42", 7)
	child.Info().Msg("promoted")
	var m map[string]any
	if err := json.Unmarshal(buf.Bytes(), &m); err != nil {
		t.Fatalf("not JSON: %v: %s", err, buf.String())
	}
	for k, want := range map[string]any{"service": "lazarus", "instance": "i-1", "shard": "shard-1", "correlation_id": "hb-42", "epoch": float64(7), "message": "promoted"} {
		if m[k] != want {
			t.Errorf("%s = %v, want %v", k, m[k], want)
		}
	}
}

func TestSecretsNeverLogged(t *testing.T) {
	var buf bytes.Buffer
	l, _ := New(Options{Service: "x", Format: "json", Out: &buf})
	secrets := []string{"hunter2", "s3cr3tT0ken", "wJalrXUtnFEMI/K7MDENG", "AKIAIOSFODNN7EXAMPLE", "redispw"}
	l.Info().Str("password", "hunter2").Msg("connecting")
	l.Info().Str("header", "Authorization: Bearer s3cr3tT0ken").Send()
	l.Info().Msg("aws_secret_access_key=wJalrXUtnFEMI/K7MDENG key AKIAIOSFODNN7EXAMPLE")
	l.Info().Str("url", "redis://default:redispw@10.0.0.1:6379").Send()
	out := buf.String()
	for _, s := range secrets {
		if strings.Contains(out, s) {
			t.Errorf("secret %q leaked: %s", s, out)
		}
	}
	if got := RedactURL("nats://u:pw@host:4222"); strings.Contains(got, "pw@") {
		t.Errorf("RedactURL left the password: %s", got)
	}
}

func TestBadLevelAndFormat(t *testing.T) {
	if _, err := New(Options{Level: "loud"}); err == nil {
		t.Error("want an error for an unknown level")
	}
	if _, err := New(Options{Format: "xml"}); err == nil {
		t.Error("want an error for an unknown format")
	}
}
