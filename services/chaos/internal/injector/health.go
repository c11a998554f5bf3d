package injector

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/fault"
	"github.com/heartline/heartline/services/chaos/internal/target"
	"github.com/heartline/heartline/shared/events"
	"github.com/heartline/heartline/shared/kv"
	"github.com/heartline/heartline/shared/redisinfo"
	"github.com/heartline/heartline/shared/stream"
	"github.com/heartline/heartline/shared/topology"
)

// Health says whether a shard may be attacked.
type Health interface {
	// Check returns nil for a healthy shard with no open alert, else an error wrapping
	// ErrDegraded or ErrOpenAlert that says why.
	Check(ctx context.Context, shard string) error
}

// ShardHealth judges a shard from the topology, the kv store (open incidents, paused
// automation) and INFO of each of its nodes.
type ShardHealth struct {
	KV kv.Store
	// Alerts, when set, adds the open alerts seen on the alerts topic.
	Alerts *AlertWatch
	// Redis returns a client for a node (nil: a default one, closed after use).
	Redis func(addr string) *redis.Client
	// MaxLag is how far, in bytes, a replica may be behind its primary (default 1 MiB).
	MaxLag int64
	// Timeout bounds the INFO of one node (default 1 s).
	Timeout time.Duration
}

// IncidentKey is the alerter's kv key of a shard's open incident.
func IncidentKey(shard string) string { return kv.Key("alerter", "incident", shard) }

// Check implements Health: no open alert, and not degraded.
func (h ShardHealth) Check(ctx context.Context, shard string) error {
	if err := h.OpenAlert(ctx, shard); err != nil {
		return err
	}
	return h.Degraded(ctx, shard)
}

// Degraded returns an error wrapping ErrDegraded when the shard is not in its normal
// state: the topology lacks a primary, an epoch or a replica; failover automation is
// paused; the primary does not answer as a primary; a replica is down, parked,
// replicating from elsewhere, syncing or lagging.
func (h ShardHealth) Degraded(ctx context.Context, shard string) error {
	sh, _, err := topology.Store{KV: h.KV}.Get(ctx, shard)
	if err != nil {
		return fmt.Errorf("%w: %s: topology: %v", ErrDegraded, shard, err)
	}
	if sh.Primary == "" || sh.Epoch == 0 {
		return fmt.Errorf("%w: %s: the topology has no primary or no epoch", ErrDegraded, shard)
	}
	if len(sh.Replicas) == 0 {
		return fmt.Errorf("%w: %s: the topology lists no replica", ErrDegraded, shard)
	}
	for _, k := range []string{kv.Key("lazarus", "pause", shard), kv.Key("lazarus", "pause", "all")} {
		if _, err := h.KV.Get(ctx, k); err == nil {
			return fmt.Errorf("%w: %s: failover automation is paused (%s)", ErrDegraded, shard, k)
		} else if !errors.Is(err, kv.ErrNotFound) {
			return fmt.Errorf("%w: %s: reading %s: %v", ErrDegraded, shard, k, err)
		}
	}
	p, err := h.info(ctx, sh.Primary)
	if err != nil {
		return fmt.Errorf("%w: %s: primary %s: %v", ErrDegraded, shard, sh.Primary, err)
	}
	if !p.IsPrimary() {
		return fmt.Errorf("%w: %s: primary %s says it is a %s", ErrDegraded, shard, sh.Primary, p.Role)
	}
	for _, r := range sh.Replicas {
		ri, err := h.info(ctx, r)
		if err != nil {
			return fmt.Errorf("%w: %s: replica %s: %v", ErrDegraded, shard, r, err)
		}
		switch {
		case ri.IsPrimary():
			return fmt.Errorf("%w: %s: replica %s says it is a primary", ErrDegraded, shard, r)
		case ri.Parked():
			return fmt.Errorf("%w: %s: replica %s is parked (replication frozen)", ErrDegraded, shard, r)
		case ri.MasterAddr() != sh.Primary:
			return fmt.Errorf("%w: %s: replica %s replicates from %s, not the primary %s", ErrDegraded, shard, r, ri.MasterAddr(), sh.Primary)
		case !ri.LinkUp || ri.SyncInProgress:
			return fmt.Errorf("%w: %s: replica %s link is down or syncing", ErrDegraded, shard, r)
		case p.Offset-ri.Offset > h.maxLag():
			return fmt.Errorf("%w: %s: replica %s is %d bytes behind", ErrDegraded, shard, r, p.Offset-ri.Offset)
		}
	}
	return nil
}

func (h ShardHealth) maxLag() int64 {
	if h.MaxLag > 0 {
		return h.MaxLag
	}
	return 1 << 20
}

// OpenAlert returns an error wrapping ErrOpenAlert when the shard has an open incident.
func (h ShardHealth) OpenAlert(ctx context.Context, shard string) error {
	if h.Alerts != nil {
		if code, ok := h.Alerts.Open(shard); ok {
			return fmt.Errorf("%w: %s: %s is open on the alerts topic", ErrOpenAlert, shard, code)
		}
	}
	if h.KV == nil {
		return nil
	}
	e, err := h.KV.Get(ctx, IncidentKey(shard))
	switch {
	case err == nil:
		if open, what := IncidentOpen(e.Value); open {
			return fmt.Errorf("%w: %s: the alerter has an open incident (%s: %s)", ErrOpenAlert, shard, IncidentKey(shard), what)
		}
		return nil
	case errors.Is(err, kv.ErrNotFound):
		return nil
	default:
		return fmt.Errorf("%w: %s: cannot tell whether an incident is open: %v", ErrDegraded, shard, err)
	}
}

// IncidentOpen reads the alerter's record of a shard (alerter.incident.<shard>). The
// record outlives its incidents (it keeps the flap history), so only an open incident
// or alerts decided but not yet published count. A record that does not decode counts
// as open: chaos does not attack what it cannot judge.
func IncidentOpen(b []byte) (bool, string) {
	var r struct {
		Incident *struct {
			ID   string `json:"id"`
			Code string `json:"code"`
		} `json:"incident"`
		Pending []json.RawMessage `json:"pending"`
	}
	if err := json.Unmarshal(b, &r); err != nil {
		return true, "undecodable record: " + err.Error()
	}
	switch {
	case r.Incident != nil:
		return true, r.Incident.Code + " " + r.Incident.ID
	case len(r.Pending) > 0:
		return true, fmt.Sprintf("%d alert(s) decided and not yet published", len(r.Pending))
	}
	return false, ""
}

// AnyOpenAlert lists the shards with an open incident (kv and stream).
func (h ShardHealth) AnyOpenAlert(ctx context.Context) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	if h.KV != nil {
		entries, err := h.KV.List(ctx, kv.Key("alerter", "incident"))
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			if open, _ := IncidentOpen(e.Value); !open {
				continue
			}
			s := strings.TrimPrefix(e.Key, "alerter.incident.")
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	if h.Alerts != nil {
		for _, s := range h.Alerts.OpenShards() {
			if !seen[s] {
				seen[s] = true
				out = append(out, s)
			}
		}
	}
	return out, nil
}

func (h ShardHealth) info(ctx context.Context, addr string) (redisinfo.Node, error) {
	to := h.Timeout
	if to <= 0 {
		to = time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, to)
	defer cancel()
	var c *redis.Client
	if h.Redis != nil {
		c = h.Redis(addr)
	} else {
		c = fault.NewRedisClient(addr, 1)
	}
	defer c.Close()
	return redisinfo.Read(ctx, c)
}

// AlertWatch follows the alerts topic and keeps which shards have an open alert.
type AlertWatch struct {
	mu   sync.Mutex
	open map[string]events.AlertCode
}

// NewAlertWatch returns an empty watch; run Follow to fill it.
func NewAlertWatch() *AlertWatch { return &AlertWatch{open: map[string]events.AlertCode{}} }

// Follow consumes the alerts topic with a private group until ctx is done.
func (w *AlertWatch) Follow(ctx context.Context, c stream.Consumer, group string, log zerolog.Logger) error {
	return c.Consume(ctx, stream.Subscription{Topic: events.TopicAlerts, Group: group, Start: stream.StartLatest, Ephemeral: true},
		func(_ context.Context, d stream.Delivery) error {
			e, err := events.Decode(d.Data)
			if err != nil {
				log.Warn().Err(err).Str("id", d.ID).Msg("undecodable alert event; ignored by the chaos alert watch")
				return nil
			}
			w.Observe(e)
			return nil
		})
}

// Observe applies one alert event.
func (w *AlertWatch) Observe(e events.Event) {
	a, ok := e.Payload.(*events.Alert)
	if !ok {
		return
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	switch e.Kind {
	case events.KindAlertOpened, events.KindAlertEscalated:
		w.open[e.Shard] = a.Code
	case events.KindAlertResolved:
		delete(w.open, e.Shard)
	}
}

// Open reports the shard's open alert code.
func (w *AlertWatch) Open(shard string) (events.AlertCode, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	c, ok := w.open[shard]
	return c, ok
}

// OpenShards lists shards with an open alert.
func (w *AlertWatch) OpenShards() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	out := make([]string, 0, len(w.open))
	for s := range w.open {
		out = append(out, s)
	}
	return out
}

// Inventory is the target.Inventory of a deployment: the topology in kv, the service
// instances the driver knows and the links the chaos proxies carry.
type Inventory struct {
	KV     kv.Store
	Driver interface {
		Instances(ctx context.Context, service string) ([]target.Target, error)
	}
	Proxies interface{ Targets() []target.Target }
}

// Topology loads the shard map.
func (i Inventory) Topology(ctx context.Context) (topology.Map, error) {
	return topology.Store{KV: i.KV}.Load(ctx)
}

// Instances lists a service's instances through the driver.
func (i Inventory) Instances(ctx context.Context, service string) ([]target.Target, error) {
	if i.Driver == nil {
		return nil, nil
	}
	return i.Driver.Instances(ctx, service)
}

// Links lists the proxied links.
func (i Inventory) Links() []target.Target {
	if i.Proxies == nil {
		return nil
	}
	return i.Proxies.Targets()
}
