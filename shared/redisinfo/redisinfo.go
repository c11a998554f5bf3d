// Package redisinfo reads what Heartline needs to know about a Redis node from INFO:
// its identity (run id), role, replication state and offsets, and key count. The agent,
// lazarus and the chaos runner all judge nodes through it.
package redisinfo

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"strconv"
	"strings"

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

// The park address: the agent freezes a replica's replication, the moment its link to
// the primary drops, by pointing it at this address (REPLICAOF 192.0.2.1 1). 192.0.2.1
// is TEST-NET-1 (RFC 5737), never assigned to a host, and port 1 never runs Redis, so
// the replica keeps its data and its cached primary state, cannot resync from anything
// (in particular not from a primary that restarted empty), and a later
// "REPLICAOF <primary>" continues with a partial resync when the primary is the same
// incarnation. INFO on a parked replica shows master_host:192.0.2.1 master_port:1.
const (
	ParkHost = "192.0.2.1"
	ParkPort = 1
)

// Parked reports whether the agent froze this replica (see ParkHost).
func (n Node) Parked() bool {
	return n.Role == "slave" && n.MasterHost == ParkHost && n.MasterPort == ParkPort
}
