package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/heartline/heartline/shared/backoff"
	"github.com/heartline/heartline/shared/redisinfo"
)

// What a check of the primary found after the watch connection broke (the label of
// agent_watch_breaks_total).
const (
	verdictGone      = "gone"      // refused or reset: no Redis process behind the address
	verdictRestarted = "restarted" // a new incarnation (run id changed, or loading)
	verdictSame      = "same"      // the same incarnation answers: the connection alone broke
	verdictUnknown   = "unknown"   // no answer within the probe timeout (paused or unreachable)
)

var watchRetry = backoff.Policy{Initial: 20 * time.Millisecond, Max: time.Second}

// errWatchReply: the primary answered the watch's SUBSCRIBE with an error.
var errWatchReply = errors.New("watch refused")

// watchLoop keeps a dedicated connection to the guarded primary blocked in SUBSCRIBE
// on a private channel nobody publishes to. Nothing ever arrives on it, so the only
// thing a read can return is the connection breaking: a primary killed with -9 closes
// it at once (EOF or reset), long before the replica's own reconnection, which Redis
// attempts from its once-a-second replication cron. A paused (SIGSTOPped) primary
// does not break it. SUBSCRIBE is not a write, so it is refused neither by
// min-replicas-to-write nor on a read-only node.
func (a *Agent) watchLoop(ctx context.Context) {
	attempt := 0
	for ctx.Err() == nil {
		addr, changed := a.watchTarget()
		if addr == "" {
			a.m.watchUp.Set(0)
			select {
			case <-ctx.Done():
				return
			case <-changed:
				continue
			}
		}
		wctx, cancel := context.WithCancel(ctx)
		go func() {
			select {
			case <-changed:
				cancel()
			case <-wctx.Done():
			}
		}()
		established, err := a.watchOnce(wctx, addr)
		moved := wctx.Err() != nil
		cancel()
		a.m.watchUp.Set(0)
		switch {
		case ctx.Err() != nil:
			return
		case moved:
			attempt = 0 // the guarded primary changed: watch the new one at once
		case established || isBreak(err):
			attempt = 0
			a.onWatchBreak(ctx, addr, err)
		default:
			attempt++
			if attempt == 1 || attempt%50 == 0 {
				a.log.Debug().Err(err).Str("primary", addr).Int("attempt", attempt).Msg("watch connection to the primary not established; retrying")
			}
			select {
			case <-ctx.Done():
				return
			case <-changed:
				attempt = 0
			case <-time.After(watchRetry.Delay(attempt)):
			}
		}
	}
}

// watchOnce holds one watch connection until it breaks or wctx ends. established
// reports whether the SUBSCRIBE was confirmed; err says how the connection ended.
func (a *Agent) watchOnce(wctx context.Context, addr string) (established bool, err error) {
	d := net.Dialer{Timeout: time.Second,
		KeepAliveConfig: net.KeepAliveConfig{Enable: true, Idle: 5 * time.Second, Interval: time.Second, Count: 3}}
	conn, err := d.DialContext(wctx, "tcp", addr)
	if err != nil {
		return false, err
	}
	stopClose := context.AfterFunc(wctx, func() { _ = conn.Close() })
	defer stopClose()
	defer conn.Close()
	channel := "heartline:agent:watch:" + a.src.Instance
	cmd := fmt.Sprintf("*2\r\n$9\r\nSUBSCRIBE\r\n$%d\r\n%s\r\n", len(channel), channel)
	_ = conn.SetWriteDeadline(time.Now().Add(time.Second))
	if _, err := io.WriteString(conn, cmd); err != nil {
		return false, err
	}
	_ = conn.SetWriteDeadline(time.Time{})
	br := bufio.NewReader(conn)
	line, err := br.ReadString('\n')
	if err != nil {
		return false, err
	}
	if strings.HasPrefix(line, "-") {
		return false, fmt.Errorf("%w: %s", errWatchReply, strings.TrimSpace(line))
	}
	a.m.watchUp.Set(1)
	a.log.Debug().Str("primary", addr).Msg("watch connection established")
	buf := make([]byte, 256)
	for {
		if _, err := br.Read(buf); err != nil {
			return true, err
		}
	}
}

// isBreak: the connection reached the primary and was then closed or reset by it (a
// process that died while paused never confirms the subscription, but still closes).
func isBreak(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET) || errors.Is(err, io.ErrUnexpectedEOF)
}

// onWatchBreak reacts to a broken watch connection at once: it checks what answers at
// the primary's address and, if the primary died or came back as a new incarnation,
// parks the replica before it can resync; then it asks for a probe now.
func (a *Agent) onWatchBreak(ctx context.Context, addr string, cause error) {
	t0 := time.Now()
	verdict, detail := a.checkAfterBreak(ctx, addr)
	a.m.watchBreaks.WithLabelValues(verdict).Inc()
	ev := a.log.Info()
	if verdict == verdictGone || verdict == verdictRestarted {
		ev = a.log.Warn()
	}
	ev.Str("primary", addr).AnErr("cause", cause).Str("verdict", verdict).Str("detail", detail).
		Dur("check_took", time.Since(t0)).Msg("watch connection to the primary broke")
	switch verdict {
	case verdictGone:
		if err := a.park(ctx, reasonPrimaryGone, "watch connection broke and the primary does not answer: "+detail); err != nil {
			a.logParkErr(err, reasonPrimaryGone)
		}
	case verdictRestarted:
		if err := a.park(ctx, reasonPrimaryRestarted, "watch connection broke and a new incarnation answers: "+detail); err != nil {
			a.logParkErr(err, reasonPrimaryRestarted)
		}
	}
	a.Kick()
}

// checkAfterBreak asks the primary's address, within the probe timeout, who is there.
func (a *Agent) checkAfterBreak(ctx context.Context, addr string) (verdict, detail string) {
	a.mu.Lock()
	prevRun := ""
	if a.st.primary == addr {
		prevRun = a.st.runID
	}
	a.mu.Unlock()
	c := redis.NewClient(&redis.Options{Addr: addr, Protocol: 2, DisableIdentity: true, MaxRetries: -1, DialerRetries: 1,
		DialTimeout: a.cfg.ProbeTimeout, ReadTimeout: a.cfg.ProbeTimeout, WriteTimeout: a.cfg.ProbeTimeout,
		ContextTimeoutEnabled: true, PoolSize: 1})
	defer c.Close()
	cctx, cancel := context.WithTimeout(ctx, a.cfg.ProbeTimeout)
	defer cancel()
	s, err := c.Info(cctx, "server", "persistence", "replication").Result()
	if err != nil {
		switch {
		case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET), errors.Is(err, io.EOF):
			return verdictGone, err.Error()
		case strings.HasPrefix(err.Error(), "LOADING"):
			return verdictRestarted, "loading its data"
		default:
			return verdictUnknown, err.Error()
		}
	}
	n, perr := redisinfo.Parse(s)
	if perr != nil {
		return verdictUnknown, perr.Error()
	}
	switch {
	case n.Loading:
		return verdictRestarted, "loading its data (run id " + n.RunID + ")"
	case prevRun != "" && n.RunID != prevRun:
		return verdictRestarted, "run id " + prevRun + " is now " + n.RunID
	default:
		return verdictSame, "run id " + n.RunID + " answers"
	}
}
