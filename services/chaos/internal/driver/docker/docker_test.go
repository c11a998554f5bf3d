package docker

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/driver"
	"github.com/heartline/heartline/services/chaos/internal/target"
)

// engine is a stand-in for the few Docker Engine API endpoints the driver uses. This is
// a unit test of the requests' shape (there is no Docker engine on the test machine):
// it proves which endpoint, method, container id and parameters each fault sends.
type engine struct {
	mu         sync.Mutex
	containers []map[string]any
	state      map[string]string // id -> running, paused, exited
	calls      []string
}

var versioned = regexp.MustCompile(`^/v[0-9.]+`)

func (e *engine) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	e.mu.Lock()
	defer e.mu.Unlock()
	path := versioned.ReplaceAllString(r.URL.Path, "")
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Api-Version", "1.47")
	switch {
	case path == "/_ping":
		w.Write([]byte("OK"))
		return
	case r.Method == http.MethodGet && path == "/containers/json":
		var filters map[string]map[string]bool
		_ = json.Unmarshal([]byte(r.URL.Query().Get("filters")), &filters)
		e.calls = append(e.calls, "list all="+r.URL.Query().Get("all")+" "+labelsOf(filters))
		var out []map[string]any
		for _, c := range e.containers {
			if matches(c, filters) {
				c2 := map[string]any{}
				for k, v := range c {
					c2[k] = v
				}
				c2["State"] = e.state[c["Id"].(string)]
				out = append(out, c2)
			}
		}
		json.NewEncoder(w).Encode(out)
		return
	}
	m := regexp.MustCompile(`^/containers/([^/]+)/(kill|pause|unpause|stop|start|restart|json)$`).FindStringSubmatch(path)
	if m == nil {
		http.Error(w, `{"message":"unexpected `+r.Method+` `+path+`"}`, http.StatusNotFound)
		return
	}
	id, op := m[1], m[2]
	if _, ok := e.state[id]; !ok {
		w.WriteHeader(http.StatusNotFound)
		w.Write([]byte(`{"message":"No such container: ` + id + `"}`))
		return
	}
	call := r.Method + " " + op + " " + id
	if q := r.URL.RawQuery; q != "" {
		call += "?" + q
	}
	e.calls = append(e.calls, call)
	switch op {
	case "json":
		st := e.state[id]
		json.NewEncoder(w).Encode(map[string]any{"Id": id, "State": map[string]any{"Status": st, "Running": st == "running" || st == "paused", "Paused": st == "paused"}})
		return
	case "kill", "stop":
		e.state[id] = "exited"
	case "pause":
		e.state[id] = "paused"
	case "unpause", "start":
		e.state[id] = "running"
	}
	w.WriteHeader(http.StatusNoContent)
}

func labelsOf(f map[string]map[string]bool) string {
	var l []string
	for v := range f["label"] {
		l = append(l, v)
	}
	if len(l) > 1 {
		if l[0] > l[1] {
			l[0], l[1] = l[1], l[0]
		}
	}
	return strings.Join(l, ",")
}

func matches(c map[string]any, f map[string]map[string]bool) bool {
	labels := c["Labels"].(map[string]string)
	for l := range f["label"] {
		k, v, _ := strings.Cut(l, "=")
		if labels[k] != v {
			return false
		}
	}
	return true
}

func newEngine(t *testing.T) (*engine, *Driver) {
	e := &engine{state: map[string]string{"c1": "running", "c2": "running", "c3": "running", "c4": "running"}}
	mk := func(id, name, svc, num string, extra map[string]string) map[string]any {
		l := map[string]string{LabelProject: "hl", LabelService: svc, LabelNumber: num}
		for k, v := range extra {
			l[k] = v
		}
		return map[string]any{"Id": id, "Names": []string{"/" + name}, "Labels": l}
	}
	e.containers = []map[string]any{
		mk("c1", "hl-redis-s1-a-1", "redis-s1-a", "1", nil),
		mk("c2", "hl-redis-s1-b-1", "redis-s1-b", "1", map[string]string{LabelNode: "10.0.0.9:6379"}),
		mk("c3", "hl-ratequeue-1", "ratequeue", "1", nil),
		mk("c4", "hl-ratequeue-2", "ratequeue", "2", nil),
	}
	srv := httptest.NewServer(e)
	t.Cleanup(srv.Close)
	c, err := client.New(client.WithHost("tcp://"+strings.TrimPrefix(srv.URL, "http://")), client.WithAPIVersion("1.47"))
	if err != nil {
		t.Fatal(err)
	}
	return e, &Driver{C: c, Project: "hl", Log: zerolog.Nop()}
}

func (e *engine) take() []string {
	e.mu.Lock()
	defer e.mu.Unlock()
	c := e.calls
	e.calls = nil
	return c
}

func TestDriverRequestShapes(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	e, d := newEngine(t)
	if !d.NeedsExecute() {
		t.Fatal("the docker driver must need --execute")
	}
	byHost := target.Target{Kind: target.Node, Shard: "s1", Role: "primary", Addr: "redis-s1-a:6379"}
	byLabel := target.Target{Kind: target.Node, Shard: "s1", Role: "replica", Addr: "10.0.0.9:6379"}
	rq2 := target.Target{Kind: target.Service, Service: "ratequeue", Instance: 2}

	steps := []struct {
		name string
		do   func() error
		want []string
	}{
		{"kill -9 by compose service host", func() error { return d.Kill(ctx, byHost, driver.KillOptions{}) },
			[]string{"list all=1 " + LabelProject + "=hl", "POST kill c1?signal=SIGKILL"}},
		{"SIGTERM by heartline.node label", func() error { return d.Kill(ctx, byLabel, driver.KillOptions{Graceful: true}) },
			[]string{"list all=1 " + LabelProject + "=hl", "POST kill c2?signal=SIGTERM"}},
		{"recover starts the stopped container", func() error { return d.EnsureRunning(ctx, byHost) },
			[]string{"list all=1 " + LabelProject + "=hl", "GET json c1", "POST start c1"}},
		{"pause a service instance", func() error { return d.Pause(ctx, rq2) },
			[]string{"list all=1 " + LabelProject + "=hl," + LabelService + "=ratequeue", "POST pause c4"}},
		{"recover unpauses", func() error { return d.EnsureRunning(ctx, rq2) },
			[]string{"list all=1 " + LabelProject + "=hl," + LabelService + "=ratequeue", "GET json c4", "POST unpause c4"}},
		{"restart: stop with no grace, then start", func() error { return d.Restart(ctx, rq2, driver.RestartOptions{}) },
			[]string{"list all=1 " + LabelProject + "=hl," + LabelService + "=ratequeue", "POST stop c4?t=0", "POST start c4"}},
		{"recover of a running container does nothing", func() error { return d.EnsureRunning(ctx, rq2) },
			[]string{"list all=1 " + LabelProject + "=hl," + LabelService + "=ratequeue", "GET json c4"}},
	}
	for _, s := range steps {
		if err := s.do(); err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		got := e.take()
		if strings.Join(got, " | ") != strings.Join(s.want, " | ") {
			t.Fatalf("%s:\n got  %q\n want %q", s.name, got, s.want)
		}
	}
	inst, err := d.Instances(ctx, "ratequeue")
	if err != nil || len(inst) != 2 || inst[1].Name() != "ratequeue/2" {
		t.Fatalf("instances: %v %v", inst, err)
	}
	e.take()
	unknown := target.Target{Kind: target.Node, Addr: "nowhere:6379"}
	if err := d.Kill(ctx, unknown, driver.KillOptions{}); !errors.Is(err, driver.ErrUnknownTarget) {
		t.Fatalf("unknown container: %v", err)
	}
	if err := d.Restart(ctx, byHost, driver.RestartOptions{Wipe: true}); !errors.Is(err, driver.ErrUnsupported) {
		t.Fatalf("wipe: %v", err)
	}
	for _, c := range e.take() {
		if !strings.HasPrefix(c, "list") {
			t.Fatalf("a refused operation reached the engine: %s", c)
		}
	}
}
