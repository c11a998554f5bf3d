// Package redisinfo reads what Heartline needs to know about a Redis node from INFO:
// its identity (run id), role, replication state and offsets, and key count. The agent,
// lazarus and the chaos runner all judge nodes through it.
package redisinfo

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Replica is one replica as its primary lists it.
type Replica struct {
	Addr   string
	State  string // "online", "wait_bgsave", ...
	Offset int64
	Lag    int64
}

// Node is a snapshot of one Redis node.
type Node struct {
	RunID     string
	UptimeSec int64
	Loading   bool
	Role      string // "master" or "slave"
	// Replica side.
	MasterHost     string
	MasterPort     int
	LinkUp         bool
	LastIOSeconds  int64 // -1 when not reported
	SyncInProgress bool
	// Offset is the replication offset this node has: master_repl_offset on a
	// primary, and the processed offset on a replica.
	Offset  int64
	ReplID  string
	ReplID2 string
	// Primary side.
	ConnectedReplicas int
	Replicas          []Replica
	MinReplicasGood   int // min_slaves_good_slaves, -1 when not reported
	Keys              int64
	// Raw holds every field of the sections read.
	Raw map[string]string
}

// IsPrimary reports whether the node says it is a primary.
func (n Node) IsPrimary() bool { return n.Role == "master" }

// MasterAddr is the replica's configured primary as host:port ("" on a primary).
func (n Node) MasterAddr() string {
	if n.MasterHost == "" {
		return ""
	}
	return net.JoinHostPort(n.MasterHost, strconv.Itoa(n.MasterPort))
}

// Read runs INFO server, replication and keyspace on c and parses them.
func Read(ctx context.Context, c redis.Cmdable) (Node, error) {
	s, err := c.Info(ctx, "server", "replication", "keyspace").Result()
	if err != nil {
		return Node{}, err
	}
	return Parse(s)
}

// Parse parses INFO output.
func Parse(info string) (Node, error) {
	raw := map[string]string{}
	sc := bufio.NewScanner(strings.NewReader(info))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if ok {
			raw[k] = v
		}
	}
	if err := sc.Err(); err != nil {
		return Node{}, fmt.Errorf("redisinfo: %w", err)
	}
	if raw["role"] == "" {
		return Node{}, fmt.Errorf("redisinfo: INFO output has no role field")
	}
	n := Node{Raw: raw, RunID: raw["run_id"], Role: raw["role"], ReplID: raw["master_replid"],
		ReplID2: raw["master_replid2"], MasterHost: raw["master_host"], LastIOSeconds: -1, MinReplicasGood: -1}
	n.UptimeSec = atoi(raw["uptime_in_seconds"])
	n.Loading = raw["loading"] == "1"
	n.MasterPort = int(atoi(raw["master_port"]))
	n.LinkUp = raw["master_link_status"] == "up"
	if v, ok := raw["master_last_io_seconds_ago"]; ok {
		n.LastIOSeconds = atoi(v)
	}
	n.SyncInProgress = raw["master_sync_in_progress"] == "1"
	n.Offset = atoi(raw["master_repl_offset"])
	if n.Role == "slave" {
		if v, ok := raw["slave_repl_offset"]; ok {
			n.Offset = atoi(v)
		}
	}
	n.ConnectedReplicas = int(atoi(raw["connected_slaves"]))
	if v, ok := raw["min_slaves_good_slaves"]; ok {
		n.MinReplicasGood = int(atoi(v))
	}
	for i := 0; ; i++ {
		v, ok := raw["slave"+strconv.Itoa(i)]
		if !ok {
			break
		}
		n.Replicas = append(n.Replicas, parseReplica(v))
	}
	for k, v := range raw {
		if strings.HasPrefix(k, "db") {
			for _, f := range strings.Split(v, ",") {
				if kk, vv, ok := strings.Cut(f, "="); ok && kk == "keys" {
					n.Keys += atoi(vv)
				}
			}
		}
	}
	return n, nil
}

// parseReplica parses "ip=127.0.0.1,port=7001,state=online,offset=123,lag=0".
func parseReplica(v string) Replica {
	f := map[string]string{}
	for _, kv := range strings.Split(v, ",") {
		if k, val, ok := strings.Cut(kv, "="); ok {
			f[k] = val
		}
	}
	return Replica{Addr: net.JoinHostPort(f["ip"], f["port"]), State: f["state"], Offset: atoi(f["offset"]), Lag: atoi(f["lag"])}
}

func atoi(s string) int64 {
	n, _ := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	return n
}

// Park is the address a parked replica points at: the agent freezes a replica's
// replication, the moment its link to the primary drops, with REPLICAOF <host> <port>.
// Nothing listens there, so the replica keeps its data and its cached primary state,
// cannot resync from anything (in particular not from a primary that restarted empty),
// and a later "REPLICAOF <primary>" continues with a partial resync when the primary is
// the same incarnation.
//
// The default is 127.0.0.1 port 1, on loopback: the parked replica retries its
// connection about once a second for as long as it stays parked, and every attempt must
// stay on the replica's own host (a loopback connection to a closed port is refused at
// once and never leaves the machine). The earlier default, 192.0.2.1 (TEST-NET-1), is
// routed on real networks (it is the default gateway of some CI machines), so parked
// replicas sent traffic off the host; replicas parked there are still recognised.
type Park struct {
	Host string
	Port int
}

var (
	// DefaultPark is where the agent parks replicas unless -park-addr says otherwise.
	DefaultPark = Park{Host: "127.0.0.1", Port: 1}
	// LegacyPark is the park address of earlier releases, still recognised as parked
	// (so an upgrade keeps the guard) but never used to park.
	LegacyPark = Park{Host: "192.0.2.1", Port: 1}
)

// ErrParkAnswers: something accepts connections at the park address, so a replica
// parked there could be fed a full resync by whatever listens: parking is off.
var ErrParkAnswers = errors.New("something accepts connections at the park address")

// Check dials the park address once, from this process's network namespace, and
// returns ErrParkAnswers when a connection is accepted. A refused connection is the
// expected answer; a dial that times out (packets dropped) is safe too, since nothing
// there can answer a replica. Only a cancelled ctx is reported otherwise.
func (p Park) Check(ctx context.Context, timeout time.Duration) error {
	addr := p.OrDefault().Addr()
	dctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(dctx, "tcp", addr)
	if err == nil {
		local := c.LocalAddr().String()
		_ = c.Close()
		return fmt.Errorf("%w %s (a test connection from %s was accepted)", ErrParkAnswers, addr, local)
	}
	if ctx.Err() != nil {
		return fmt.Errorf("park address check of %s: %w", addr, ctx.Err())
	}
	return nil
}

// ErrParkAddr: a park address that is not host:port on a loopback IP.
var ErrParkAddr = errors.New("invalid park address")

// ParkUsage is the help text of the park-addr flag of every service.
const ParkUsage = "address parked replicas point at (REPLICAOF host port); a loopback IP and a port where nothing listens, so a parked replica's retries never leave its host"

// ParsePark parses a park address: host:port where host is a loopback IP literal
// (127.0.0.0/8 or ::1) and port is 1-65535. Anything else is refused: the replica
// dials the park address about once a second while parked, and that traffic must not
// leave its host. Empty means DefaultPark.
func ParsePark(s string) (Park, error) {
	if s == "" {
		return DefaultPark, nil
	}
	h, ps, err := net.SplitHostPort(s)
	if err != nil {
		return Park{}, fmt.Errorf("%w %q: want host:port: %v", ErrParkAddr, s, err)
	}
	ip := net.ParseIP(h)
	if ip == nil || !ip.IsLoopback() {
		return Park{}, fmt.Errorf("%w %q: host must be a loopback IP (127.0.0.0/8 or ::1), so a parked replica never dials off its host", ErrParkAddr, s)
	}
	port, err := strconv.Atoi(ps)
	if err != nil || port < 1 || port > 65535 {
		return Park{}, fmt.Errorf("%w %q: port must be 1-65535", ErrParkAddr, s)
	}
	return Park{Host: h, Port: port}, nil
}

// Addr is host:port.
func (p Park) Addr() string { return net.JoinHostPort(p.Host, strconv.Itoa(p.Port)) }

// String is the address, as the flag shows it.
func (p Park) String() string { return p.Addr() }

// IsZero reports an unset Park (a zero value means DefaultPark wherever one is used).
func (p Park) IsZero() bool { return p.Host == "" && p.Port == 0 }

// OrDefault is p, or DefaultPark when p is unset.
func (p Park) OrDefault() Park {
	if p.IsZero() {
		return DefaultPark
	}
	return p
}

// Holds reports whether node n is parked: a replica whose master is this park address,
// the default one or the legacy one (a replica parked by an earlier release, or by an
// agent configured with another park address, is still parked).
func (p Park) Holds(n Node) bool {
	if n.Role != "slave" {
		return false
	}
	for _, q := range []Park{p.OrDefault(), DefaultPark, LegacyPark} {
		if n.MasterPort == q.Port && sameHost(n.MasterHost, q.Host) {
			return true
		}
	}
	return false
}

func sameHost(a, b string) bool {
	if a == b {
		return true
	}
	ia, ib := net.ParseIP(a), net.ParseIP(b)
	return ia != nil && ib != nil && ia.Equal(ib)
}

// Parked reports whether the node is parked at the default or the legacy park
// address. Services configured with another park address use Park.Holds.
func (n Node) Parked() bool { return DefaultPark.Holds(n) }
