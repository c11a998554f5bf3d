package natskv

import (
	"context"
	"fmt"
	neturl "net/url"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/rs/zerolog"

	"github.com/heartline/heartline/shared/backoff"
)

// DialOptions tune Dial.
type DialOptions struct {
	// Name is the connection name the server shows (monitoring, logs).
	Name string
	// ReconnectWait is the pause between reconnect attempts (default 250 ms).
	ReconnectWait time.Duration
	Log           zerolog.Logger
}

// dialRetry is the pause between failed first connection attempts.
var dialRetry = backoff.Policy{Initial: 100 * time.Millisecond, Max: 2 * time.Second}

// Dial connects to the NATS server(s) at url (a comma-separated list is allowed) with
// the settings every Heartline process uses: reconnect forever, buffer publishes while
// reconnecting, log disconnects and reconnects. When the first connection fails it
// retries with backoff until ctx is done, so that a service started before its NATS
// server waits for it instead of exiting.
func Dial(ctx context.Context, url string, o DialOptions) (*nats.Conn, error) {
	if url == "" {
		return nil, fmt.Errorf("not connecting to NATS: empty server URL")
	}
	if o.ReconnectWait <= 0 {
		o.ReconnectWait = 250 * time.Millisecond
	}
	log := o.Log.With().Str("nats_url", Redact(url)).Logger()
	opts := []nats.Option{
		nats.Name(o.Name),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(o.ReconnectWait),
		nats.ReconnectJitter(o.ReconnectWait/2, time.Second),
		nats.Timeout(2 * time.Second),
		nats.PingInterval(10 * time.Second),
		nats.MaxPingsOutstanding(3),
		nats.DrainTimeout(10 * time.Second),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil {
				log.Warn().Err(err).Msg("NATS connection lost; reconnecting")
			}
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			log.Info().Str("server", nc.ConnectedUrlRedacted()).Msg("NATS connection re-established")
		}),
		nats.ErrorHandler(func(_ *nats.Conn, sub *nats.Subscription, err error) {
			ev := log.Warn().Err(err)
			if sub != nil {
				ev = ev.Str("subject", sub.Subject)
			}
			ev.Msg("NATS asynchronous error")
		}),
	}
	for attempt := 1; ; attempt++ {
		nc, err := nats.Connect(url, opts...)
		if err == nil {
			return nc, nil
		}
		if attempt == 1 || attempt%10 == 0 {
			log.Warn().Err(err).Int("attempt", attempt).Msg("cannot connect to NATS yet; retrying")
		}
		if backoff.Sleep(ctx, dialRetry.Delay(attempt)) != nil {
			return nil, fmt.Errorf("not connecting to NATS at %s: %w (last error: %w)", Redact(url), ctx.Err(), err)
		}
	}
}

// Redact removes credentials from a NATS server URL list, for logs and errors.
func Redact(url string) string {
	parts := strings.Split(url, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		u, err := neturl.Parse(p)
		if err != nil {
			if strings.Contains(p, "@") {
				parts[i] = "(unparsable URL)"
			}
			continue
		}
		if u.User != nil {
			u.User = neturl.User("REDACTED")
		}
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}
