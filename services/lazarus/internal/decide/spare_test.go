package decide

import (
	"strings"
	"testing"
	"time"
)

func TestSpare(t *testing.T) {
	p := Node{Addr: "p:1", Reachable: true, Role: "master", ReplID: "r1", Offset: 1000, Keys: 50}
	inSync := Node{Addr: "r:1", Reachable: true, Role: "slave", MasterAddr: "p:1", LinkUp: true, ReplID: "r1", Offset: 1000, Keys: 50}
	dead := Node{Addr: "r:1", Err: "connection refused"}
	empty := Node{Addr: "s:1", Reachable: true, Role: "master"}
	following := Node{Addr: "s:2", Reachable: true, Role: "slave", MasterAddr: "p:1", LinkUp: true, Keys: 50}
	stale := Node{Addr: "s:3", Reachable: true, Role: "master", ReplID: "old", Keys: 40}
	oldShardPrimary := Node{Addr: "q:1", Reachable: true, Role: "master", ReplID: "old", ReplID2: "", Offset: 5000, Keys: 40}
	ahead := Node{Addr: "s:4", Reachable: true, Role: "master", ReplID: "zzz", Keys: 90}

	for _, tc := range []struct {
		name    string
		in      SpareInput
		reason  SpareReason
		spare   string
		replace string
		detail  string
	}{
		{"a replica in sync", SpareInput{Primary: p, Replicas: []Node{inSync}, Pool: []PoolNode{{Node: empty}}, NoReplicaFor: time.Hour, After: time.Second}, SpareInSync, "", "", ""},
		{"a replica syncing: reconcile's business", SpareInput{Primary: p, Replicas: []Node{{Addr: "r:1", Reachable: true, Role: "slave", MasterAddr: "p:1", SyncInProgress: true}},
			Pool: []PoolNode{{Node: empty}}, NoReplicaFor: time.Hour, After: time.Second}, SpareRecovering, "", "", "syncing true"},
		{"a parked replica answers", SpareInput{Primary: p, Replicas: []Node{{Addr: "r:1", Reachable: true, Role: "slave", Parked: true}},
			Pool: []PoolNode{{Node: empty}}, NoReplicaFor: time.Hour, After: time.Second}, SpareRecovering, "", "", "parked true"},
		{"within the grace period", SpareInput{Primary: p, Replicas: []Node{dead}, Pool: []PoolNode{{Node: empty}}, NoReplicaFor: 500 * time.Millisecond, After: time.Second}, SpareGrace, "", "", ""},
		{"empty spare attached", SpareInput{Primary: p, Replicas: []Node{dead}, Pool: []PoolNode{{Node: empty}}, NoReplicaFor: 2 * time.Second, After: time.Second}, SpareAttach, "s:1", "r:1", ""},
		{"a spare already following wins", SpareInput{Primary: p, Replicas: []Node{dead}, Pool: []PoolNode{{Node: empty}, {Node: following, From: "s"}}, NoReplicaFor: 2 * time.Second, After: time.Second}, SpareAttach, "s:2", "r:1", ""},
		{"a returning node whose data its old shard holds", SpareInput{Primary: p, Replicas: []Node{dead}, Pool: []PoolNode{{Node: stale, From: "old", FromPrimary: oldShardPrimary}}, NoReplicaFor: 2 * time.Second, After: time.Second}, SpareAttach, "s:3", "r:1", ""},
		{"never a node whose data would be lost", SpareInput{Primary: p, Replicas: []Node{dead}, Pool: []PoolNode{{Node: ahead, From: "old", FromPrimary: oldShardPrimary}}, NoReplicaFor: 2 * time.Second, After: time.Second}, SpareNoneFree, "", "r:1", "90 keys"},
		{"never data of unknown origin", SpareInput{Primary: p, Replicas: []Node{dead}, Pool: []PoolNode{{Node: ahead}}, NoReplicaFor: 2 * time.Second, After: time.Second}, SpareNoneFree, "", "r:1", "unknown origin"},
		{"claimed and unreachable spares are skipped", SpareInput{Primary: p, Replicas: []Node{dead}, Pool: []PoolNode{{Node: empty, Claimed: "other"}, {Node: Node{Addr: "s:9", Err: "timeout"}}},
			NoReplicaFor: 2 * time.Second, After: time.Second}, SpareNoneFree, "", "r:1", "claimed for shard other"},
		{"an empty pool", SpareInput{Primary: p, Replicas: []Node{dead}, NoReplicaFor: 2 * time.Second, After: time.Second}, SpareNoneFree, "", "r:1", "the pool is empty"},
		{"a shard with no replica at all", SpareInput{Primary: p, Pool: []PoolNode{{Node: empty}}, NoReplicaFor: 2 * time.Second, After: time.Second}, SpareAttach, "s:1", "", ""},
	} {
		out := Spare(tc.in)
		if out.Reason != tc.reason || out.Spare != tc.spare || strings.Join(out.Replace, ",") != tc.replace || !strings.Contains(out.Detail, tc.detail) {
			t.Errorf("%s: got %s spare %q replace %v (%s); want %s spare %q replace %q detail ~%q", tc.name, out.Reason, out.Spare, out.Replace, out.Detail,
				tc.reason, tc.spare, tc.replace, tc.detail)
		}
	}
}
