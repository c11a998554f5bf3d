package agent

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/heartline/heartline/shared/config"
)

func TestValidateReportsEveryProblem(t *testing.T) {
	c := DefaultConfig()
	c.Shard = "bad shard"
	c.Replica = "nohostport"
	c.Primary = "127.0.0.1:99999"
	c.Interval = 100 * time.Millisecond
	c.ProbeTimeout = 200 * time.Millisecond
	c.UnfreezeAfter = 0
	c.DriftEvery = 0
	c.BufferSize = 3
	c.HTTPListen = "nope"
	c.LogLevel = "loud"
	c.LogFormat = "xml"
	c.Desired = "save,Bad Name=1,min-replicas-to-write=1,min-replicas-to-write=2"
	err := c.Validate()
	if !errors.Is(err, config.ErrInvalid) {
		t.Fatalf("want ErrInvalid, got %v", err)
	}
	var ce *config.Error
	if !errors.As(err, &ce) {
		t.Fatalf("want *config.Error, got %T", err)
	}
	for _, want := range []string{"shard", "replica", "primary", "probe-timeout", "unfreeze-after", "drift-every",
		"buffer", "http-listen", "log-level", "log-format", `item 1 "save"`, `"bad name"`, "declared twice"} {
		found := false
		for _, p := range ce.Problems {
			if strings.Contains(p, want) {
				found = true
			}
		}
		if !found {
			t.Errorf("no problem mentions %q:\n%v", want, err)
		}
	}
	if len(ce.Problems) < 13 {
		t.Errorf("want every problem reported, got %d:\n%v", len(ce.Problems), err)
	}
}

func TestValidateGoodConfig(t *testing.T) {
	c := DefaultConfig()
	c.Shard, c.Replica = "shard-1", "127.0.0.1:7001"
	c.Desired = ` min-replicas-to-write=1 , save="3600 1", appendonly=yes ,`
	if err := c.Validate(); err != nil {
		t.Fatal(err)
	}
	if len(c.desired) != 3 || c.desired[2].Name != "save" || c.desired[2].Want != "3600 1" {
		t.Fatalf("parsed %+v", c.desired)
	}
	if c.InstanceName() != "agent-127.0.0.1:7001" {
		t.Fatalf("instance %q", c.InstanceName())
	}
}

func TestSameSetting(t *testing.T) {
	for _, c := range []struct {
		want, got string
		same      bool
	}{
		{"1", "1", true},
		{"1", "0", false},
		{"3600 1  300 100", "3600 1 300 100", true},
		{`""`, "", true},
		{"", "3600 1", false},
		{"1gb", "1073741824", true},
		{"1g", "1000000000", true},
		{"100mb", "104857600", true},
		{"YES", "yes", true},
		{"true", "yes", true},
		{"noeviction", "allkeys-lru", false},
	} {
		if got := sameSetting(c.want, c.got); got != c.same {
			t.Errorf("sameSetting(%q, %q) = %v", c.want, c.got, got)
		}
	}
}

func FuzzParseDesired(f *testing.F) {
	f.Add("min-replicas-to-write=1,save=3600 1")
	f.Add("=,,,=x")
	f.Add(`save="",appendonly='yes'`)
	f.Add("a=b,a=c,Ä=1")
	f.Fuzz(func(t *testing.T, s string) {
		params, errs := parseDesired(s)
		seen := map[string]bool{}
		for _, p := range params {
			if !paramName.MatchString(p.Name) || seen[p.Name] {
				t.Fatalf("accepted bad or duplicate parameter %q from %q", p.Name, s)
			}
			seen[p.Name] = true
		}
		for _, e := range errs {
			if !errors.Is(e, ErrBadDesired) {
				t.Fatalf("error %v does not wrap ErrBadDesired", e)
			}
		}
	})
}
