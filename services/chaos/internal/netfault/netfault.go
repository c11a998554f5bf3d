// Package netfault owns the network links the chaos runner can break. The local
// topology routes each named link (client->ratequeue, ratequeue->shard@<shard>,
// replica->primary@<shard>, agents->stream) through TCP proxies of an embedded
// toxiproxy (Shopify/toxiproxy/v2, used as a library); network faults add toxics to
// those proxies (latency with jitter, bandwidth, resets, a blackhole) or stop them
// (connection refused). Nothing here is a hand-written proxy.
package netfault

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"sync"

	toxiproxy "github.com/Shopify/toxiproxy/v2"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/services/chaos/internal/fault"
	"github.com/heartline/heartline/services/chaos/internal/target"
)

var _ fault.Links = (*Links)(nil)

// ErrUnknownLink: no link of that name is routed through the proxies.
var ErrUnknownLink = errors.New("unknown link")

type link struct {
	name    string
	shard   string
	proxies []*toxiproxy.Proxy
	enabled bool
}

// Links is the set of proxied links.
type Links struct {
	srv   *toxiproxy.ApiServer
	log   zerolog.Logger
	mu    sync.Mutex
	links map[string]*link
}

// New returns an empty set. toxiproxy's own logging goes to log at warn level and above
// (it logs every accepted connection at info).
func New(log zerolog.Logger) *Links {
	tl := log.With().Str("component", "toxiproxy").Logger().Level(zerolog.WarnLevel)
	return &Links{srv: toxiproxy.NewServer(toxiproxy.NewMetricsContainer(nil), tl), log: log, links: map[string]*link{}}
}

// Add routes one connection path of a link through a new proxy: it listens on listen
// ("" means 127.0.0.1 on a free port) and forwards to upstream. A link may have several
// proxies (one per upstream node); faults act on all of them. It returns the address
// clients must use instead of upstream.
func (l *Links) Add(from, to, shard, listen, upstream string) (string, error) {
	sel, err := target.Parse("link:" + target.LinkName(from, to, shard))
	if err != nil {
		return "", err
	}
	if sel.Shard == "random" || sel.Shard == "all" {
		return "", fmt.Errorf("%w: a link belongs to one shard, not %q", target.ErrBadSelector, sel.Shard)
	}
	name := target.LinkName(from, to, shard)
	if listen == "" {
		listen = "127.0.0.1:0"
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	lk := l.links[name]
	if lk == nil {
		lk = &link{name: name, shard: shard, enabled: true}
		l.links[name] = lk
	}
	p := toxiproxy.NewProxy(l.srv, name+"#"+strconv.Itoa(len(lk.proxies)), listen, upstream)
	if err := p.Start(); err != nil {
		return "", fmt.Errorf("starting the proxy for %s to %s: %w", name, upstream, err)
	}
	// Faults already on the link apply to the new proxy too.
	for _, t := range lk.existingToxics() {
		b, _ := json.Marshal(t)
		if _, err := p.Toxics.AddToxicJson(bytes.NewReader(b)); err != nil {
			l.log.Warn().Err(err).Str("link", name).Msg("could not copy a toxic to the new proxy")
		}
	}
	if !lk.enabled {
		p.Stop()
	}
	lk.proxies = append(lk.proxies, p)
	return p.Listen, nil
}

func (lk *link) existingToxics() []fault.Toxic {
	if len(lk.proxies) == 0 {
		return nil
	}
	var out []fault.Toxic
	for _, t := range lk.proxies[0].Toxics.GetToxicArray() {
		b, err := json.Marshal(t)
		if err != nil {
			continue
		}
		var ft fault.Toxic
		if json.Unmarshal(b, &ft) == nil {
			out = append(out, ft)
		}
	}
	return out
}

// Proxy returns the listen address of the link's proxy to upstream, if there is one.
func (l *Links) Proxy(name, upstream string) (string, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	lk := l.links[name]
	if lk == nil {
		return "", false
	}
	for _, p := range lk.proxies {
		if p.Upstream == upstream {
			return p.Listen, true
		}
	}
	return "", false
}

// Targets lists the links, for target resolution.
func (l *Links) Targets() []target.Target {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []target.Target
	for _, lk := range l.links {
		out = append(out, target.Target{Kind: target.Link, Link: lk.name, Shard: lk.shard})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Link < out[j].Link })
	return out
}

func (l *Links) get(name string) (*link, error) {
	lk := l.links[name]
	if lk == nil {
		var have []string
		for n := range l.links {
			have = append(have, n)
		}
		sort.Strings(have)
		return nil, fmt.Errorf("%w %q (routed: %s)", ErrUnknownLink, name, strings.Join(have, ", "))
	}
	return lk, nil
}

// AddToxic adds t to every proxy of the link.
func (l *Links) AddToxic(name string, t fault.Toxic) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	lk, err := l.get(name)
	if err != nil {
		return err
	}
	b, err := json.Marshal(t)
	if err != nil {
		return err
	}
	for _, p := range lk.proxies {
		if _, err := p.Toxics.AddToxicJson(bytes.NewReader(b)); err != nil {
			return fmt.Errorf("toxiproxy %s: %w", p.Name, err)
		}
	}
	return nil
}

// RemoveToxic removes the named toxic from every proxy of the link.
func (l *Links) RemoveToxic(ctx context.Context, name, toxic string) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	lk, err := l.get(name)
	if err != nil {
		return err
	}
	var errs []error
	for _, p := range lk.proxies {
		if err := p.Toxics.RemoveToxic(ctx, toxic); err != nil && !errors.Is(err, toxiproxy.ErrToxicNotFound) {
			errs = append(errs, fmt.Errorf("toxiproxy %s: %w", p.Name, err))
		}
	}
	return errors.Join(errs...)
}

// SetEnabled stops (every connection is closed, new ones are refused) or starts the
// link's proxies again on the same addresses.
func (l *Links) SetEnabled(name string, enabled bool) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	lk, err := l.get(name)
	if err != nil {
		return err
	}
	lk.enabled = enabled
	var errs []error
	for _, p := range lk.proxies {
		if enabled {
			if err := p.Start(); err != nil && !errors.Is(err, toxiproxy.ErrProxyAlreadyStarted) {
				errs = append(errs, fmt.Errorf("restarting proxy %s on %s: %w", p.Name, p.Listen, err))
			}
		} else {
			p.Stop()
		}
	}
	return errors.Join(errs...)
}

// Reset removes every toxic and starts every proxy: the state with no fault.
func (l *Links) Reset(ctx context.Context) error {
	l.mu.Lock()
	names := make([]string, 0, len(l.links))
	for n := range l.links {
		names = append(names, n)
	}
	l.mu.Unlock()
	var errs []error
	for _, n := range names {
		if err := l.SetEnabled(n, true); err != nil {
			errs = append(errs, err)
		}
		l.mu.Lock()
		for _, p := range l.links[n].proxies {
			p.Toxics.ResetToxics(ctx)
		}
		l.mu.Unlock()
	}
	return errors.Join(errs...)
}

// Close stops every proxy.
func (l *Links) Close() {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, lk := range l.links {
		for _, p := range lk.proxies {
			p.Stop()
		}
	}
}
