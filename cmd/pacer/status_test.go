package main

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner/coord"
)

// pacer status prints the etcd member's state, and warns from 80 % of the
// quota on (etcd compares the database file's size with it) and on alarms.
func TestStatusWarnsNearTheQuota(t *testing.T) {
	for _, tc := range []struct {
		name string
		st   coord.EtcdStatus
		want []string
		not  []string
	}{
		{"fine", coord.EtcdStatus{Endpoint: "http://e:2379", DBSize: 100 << 20, DBSizeInUse: 40 << 20, Quota: 2 << 30, Keys: 1234, HasLeader: true, At: time.Now()},
			[]string{"etcd:     http://e:2379, database 100.0 MiB (40.0 MiB in use) of 2048.0 MiB quota (5%), 1234 keys, has a leader"}, []string{"WARNING"}},
		{"near the quota", coord.EtcdStatus{Endpoint: "http://e:2379", DBSize: 1700 << 20, DBSizeInUse: 300 << 20, Quota: 2 << 30, HasLeader: true, At: time.Now()},
			[]string{"(83%)", "WARNING:  etcd's database is at 83% of its space quota", "defragment"}, nil},
		{"alarm, no leader", coord.EtcdStatus{DBSize: 10, Quota: 100, Alarms: []string{"NOSPACE"}, Error: "etcd member has no leader", At: time.Now()},
			[]string{"NO LEADER", "etcd member has no leader", "WARNING:  etcd alarms raised: NOSPACE"}, nil},
		{"not looked at yet", coord.EtcdStatus{}, []string{"etcd:     - (not looked at yet)"}, []string{"WARNING"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out strings.Builder
			if err := printEtcd(&out, &tc.st); err != nil {
				t.Fatal(err)
			}
			for _, w := range tc.want {
				if !strings.Contains(out.String(), w) {
					t.Errorf("output lacks %q:\n%s", w, out.String())
				}
			}
			for _, w := range tc.not {
				if strings.Contains(out.String(), w) {
					t.Errorf("output has %q:\n%s", w, out.String())
				}
			}
		})
	}
}

// pacer status on a replica whose cluster.shards is not the cluster's
// prints the cluster's shards (its count, leaders) and its own count.
func TestStatusOfAReplicaWithAnotherShardCount(t *testing.T) {
	st := coord.ClusterState{Cluster: "c", Node: "odd", Leader: "a", LeaseTTL: "10s", ShardCount: 4, ShardsHere: 2, ShardsLed: []int{},
		Members: []string{"a", "b"}, Shards: []coord.ShardState{{Shard: 0, Leader: "a", Assigned: "a"}, {Shard: 1, Leader: "b", Assigned: "b"},
			{Shard: 2, Leader: "a", Assigned: "a"}, {Shard: 3, Leader: "b", Assigned: "b"}}}
	body, _ := json.Marshal(st)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()
	defer srv.Client().CloseIdleConnections()
	var stdout, stderr bytes.Buffer
	if err := statusCmd([]string{"--addr", srv.URL}, &stdout, &stderr); err != nil {
		t.Fatalf("status: %v\n%s", err, stderr.String())
	}
	for _, w := range []string{"leads 0 of 4 shards", "shards:   4 (the cluster's; 2 here), 4 led", "a  leads 2: 0 2", "b  leads 2: 1 3"} {
		if !strings.Contains(stdout.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, stdout.String())
		}
	}
}
