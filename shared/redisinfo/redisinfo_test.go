package redisinfo

import "testing"

const replicaInfo = `# Server
redis_version:7.0.15
run_id:6f1c0e9f2b0a4c0c9a5a3e7b8c9d0e1f2a3b4c5d
uptime_in_seconds:42

# Replication
role:slave
master_host:127.0.0.1
master_port:7000
master_link_status:down
master_last_io_seconds_ago:-1
master_sync_in_progress:0
slave_read_repl_offset:1500
slave_repl_offset:1500
master_link_down_since_seconds:3
slave_priority:100
slave_read_only:1
replica_announced:1
connected_slaves:0
master_failover_state:no-failover
master_replid:aaaa
master_replid2:0000000000000000000000000000000000000000
master_repl_offset:1500

# Keyspace
db0:keys=12,expires=1,avg_ttl=100
db1:keys=3,expires=0,avg_ttl=0
`

const primaryInfo = `# Replication
role:master
connected_slaves:2
min_slaves_good_slaves:1
slave0:ip=127.0.0.1,port=7001,state=online,offset=1500,lag=0
slave1:ip=127.0.0.1,port=7002,state=wait_bgsave,offset=0,lag=1
master_replid:aaaa
master_repl_offset:1600
`

func TestParseReplica(t *testing.T) {
	n, err := Parse(replicaInfo)
	if err != nil {
		t.Fatal(err)
	}
	if n.IsPrimary() || n.MasterAddr() != "127.0.0.1:7000" || n.LinkUp || n.Offset != 1500 || n.Keys != 15 || n.RunID == "" || n.UptimeSec != 42 || n.LastIOSeconds != -1 {
		t.Fatalf("%+v", n)
	}
}

func TestParsePrimary(t *testing.T) {
	n, err := Parse(primaryInfo)
	if err != nil {
		t.Fatal(err)
	}
	if !n.IsPrimary() || n.Offset != 1600 || n.ConnectedReplicas != 2 || len(n.Replicas) != 2 || n.MinReplicasGood != 1 {
		t.Fatalf("%+v", n)
	}
	if r := n.Replicas[1]; r.Addr != "127.0.0.1:7002" || r.State != "wait_bgsave" || r.Lag != 1 {
		t.Fatalf("%+v", r)
	}
	if _, err := Parse("garbage"); err == nil {
		t.Fatal("want an error without a role")
	}
}
