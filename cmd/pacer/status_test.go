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
		// etcd < 3.6 whose /metrics could not be read: no guessed quota
		// (attack 27, R2: "of 2048.0 MiB quota (0%)" at NOSPACE).
		{"quota unknown", coord.EtcdStatus{Endpoint: "http://e:2379", DBSize: 7 << 20, DBSizeInUse: 6 << 20, Keys: 12, HasLeader: true, At: time.Now(),
			QuotaError: coord.QuotaUnknown + "GET http://e:2379/metrics: 403 Forbidden)"},
			[]string{"etcd:     http://e:2379, database 7.0 MiB (6.0 MiB in use), quota unknown (etcd < 3.6 does not report it, and its /metrics could not be read: GET http://e:2379/metrics: 403 Forbidden), 12 keys, has a leader"},
			[]string{"WARNING", "of 0.0 MiB", "%"}},
		// A failed look says so, with its age, and shows the last good
		// look's values with theirs: not zeros, not NO LEADER.
		{"look failed", coord.EtcdStatus{Endpoint: "http://e:2379", DBSize: 100 << 20, DBSizeInUse: 40 << 20, Quota: 2 << 30, Keys: 1234,
			Error: "context deadline exceeded", At: time.Now().Add(-20 * time.Second), LastGood: time.Now().Add(-35 * time.Second)},
			[]string{"etcd:     http://e:2379, look failed 20s ago: context deadline exceeded; last good look 35s ago: database 100.0 MiB (40.0 MiB in use) of 2048.0 MiB quota (5%), 1234 keys"},
			[]string{"NO LEADER", "has a leader", "0 keys"}},
		{"no look succeeded yet", coord.EtcdStatus{Error: "context deadline exceeded", At: time.Now().Add(-3 * time.Second)},
			[]string{"etcd:     -, look failed 3s ago: context deadline exceeded; no look has succeeded yet"}, []string{"NO LEADER", "MiB"}},
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
	stdout := statusOf(t, body)
	for _, w := range []string{"leads 0 of 4 shards", "shards:   4 (the cluster's; 2 here), 4 led", "a  leads 2: 0 2", "b  leads 2: 1 3"} {
		if !strings.Contains(stdout.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, stdout.String())
		}
	}
}

// R6 (attack 27): during a change of cluster.shards, election keys a
// replica at the old count holds are not the cluster's shards led: status
// says whose count they are of, and counts them unled.
func TestStatusDuringAShardCountChange(t *testing.T) {
	st := coord.ClusterState{Cluster: "c", Node: "r3", Leader: "r3", LeaseTTL: "10s", ShardCount: 4, ShardsHere: 8, ShardsLed: []int{0, 1, 2, 3, 4, 5, 6, 7},
		Members: []string{"r3", "r1", "r2"}, Shards: []coord.ShardState{{Shard: 0, Leader: "r3", LeaderShards: 8, Assigned: "r1"},
			{Shard: 1, Leader: "r3", LeaderShards: 8, Assigned: "r2"}, {Shard: 2, Leader: "r3", LeaderShards: 8, Assigned: "r1"}, {Shard: 3, Leader: "r3", LeaderShards: 8, Assigned: "r2"}},
	}
	var answer map[string]any
	body, _ := json.Marshal(st)
	if err := json.Unmarshal(body, &answer); err != nil {
		t.Fatal(err)
	}
	// The API adds the job set's agreement to the cluster's state.
	answer["job_set"], answer["cluster_job_set"], answer["job_set_mismatch"] = "aaaa", "bbbb", coord.MismatchRefuse
	body, _ = json.Marshal(answer)
	out := statusOf(t, body).String()
	for _, w := range []string{"shards:   4 (the cluster's; 8 here), 0 led",
		"shard 2: not led under 4 shards; r3 holds its shard 2 of 8 (its cluster.shards) until it restarts with 4 (assigned to r1)",
		"stepping down from its shards (cluster.job_set_mismatch: refuse)"} {
		if !strings.Contains(out, w) {
			t.Errorf("output lacks %q:\n%s", w, out)
		}
	}
	for _, w := range []string{"r3  leads", "may lead anyway"} {
		if strings.Contains(out, w) {
			t.Errorf("output has %q:\n%s", w, out)
		}
	}
}

// pacer status of a replica that cannot read etcd says so, with what the
// replica knows by itself, and fails with an actionable message; -o json
// passes the answer through and fails too.
func TestStatusOfAReplicaCutOffFromEtcd(t *testing.T) {
	contact := time.Now().Add(-42 * time.Second)
	body, _ := json.Marshal(map[string]any{"error": "read elections: context deadline exceeded", "cluster": "c", "node": "r2",
		"lease_ttl": "10s", "keepalive_age": "41.9s", "shards_led": []int{}, "last_contact": contact, "jobs_state": "unknown"})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(http.StatusServiceUnavailable)
		w.Write(body)
	}))
	defer srv.Close()
	defer srv.Client().CloseIdleConnections()
	var stdout, stderr bytes.Buffer
	err := statusCmd([]string{"--addr", srv.URL}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "replica r2 cannot reach etcd (last heard from etcd at ") ||
		!strings.Contains(err.Error(), "it leads nothing") || !strings.Contains(err.Error(), "cluster.etcd.endpoints") {
		t.Fatalf("status: %v", err)
	}
	for _, w := range []string{"node:     r2 (CANNOT REACH ETCD)", "etcd:     read elections: context deadline exceeded",
		"contact:  last heard from etcd at " + contact.Local().Format(time.DateTime) + ", 42s ago",
		"last acknowledged keepalive sent 41.9s ago", "leads:    nothing", "jobs:     state unknown"} {
		if !strings.Contains(stdout.String(), w) {
			t.Errorf("output lacks %q:\n%s", w, stdout.String())
		}
	}
	stdout.Reset()
	if err := statusCmd([]string{"--addr", srv.URL, "-o", "json"}, &stdout, &stderr); err == nil || stdout.String() != string(body) {
		t.Fatalf("-o json: %v, output %s", err, stdout.String())
	}
}

// pacer status lists every replica with whether it is a candidate and, if
// not, why.
func TestStatusSaysWhyAReplicaIsNotACandidate(t *testing.T) {
	body, _ := json.Marshal(map[string]any{"cluster": "c", "node": "a", "leader": "a", "lease_ttl": "10s", "shard_count": 1,
		"members": []string{"a", "b"}, "shards_led": []int{0}, "shards": []coord.ShardState{{Shard: 0, Leader: "a", Assigned: "a"}},
		"job_set": "aaaa", "cluster_job_set": "aaaa", "job_set_agreed": true, "may_lead": true,
		"replicas": []coord.ReplicaView{
			{MemberRecord: coord.MemberRecord{Node: "a", JobSet: "aaaa", Shards: 1}, Agrees: true, Candidate: true, LeadsShards: []int{0}},
			{MemberRecord: coord.MemberRecord{Node: "b", JobSet: "bbbb", Shards: 8}, LeadsShards: []int{}, Reason: "job set differs from the cluster's (bbbb, the cluster's aaaa)"},
			{MemberRecord: coord.MemberRecord{Node: "a", JobSet: "aaaa"}, Agrees: true, LeadsShards: []int{}, Unpublished: true,
				Reason: coord.ReasonUnpublished + ", node name in use by another replica"},
		}})
	stdout := statusOf(t, body)
	var a, b, dup string
	for _, l := range strings.Split(stdout.String(), "\n") {
		switch {
		case strings.HasPrefix(l, "a (this process) "):
			dup = strings.Join(strings.Fields(l), " ")
		case strings.HasPrefix(l, "a "):
			a = strings.Join(strings.Fields(l), " ")
		case strings.HasPrefix(l, "b "):
			b = strings.Join(strings.Fields(l), " ")
		}
	}
	// SHARDS: each replica's cluster.shards, "?" for a record without it
	// (attack 10, F3).
	if !strings.HasPrefix(a, "a aaaa 0 1 yes yes 1 ") || !strings.HasSuffix(a, " -") ||
		!strings.HasPrefix(b, "b bbbb 0 8 NO NO 0 ") || !strings.HasSuffix(b, "job set differs from the cluster's (bbbb, the cluster's aaaa)") {
		t.Fatalf("replica lines %q and %q:\n%s", a, b, stdout.String())
	}
	// A replica under a node name another one publishes: its own entry,
	// marked.
	if !strings.HasPrefix(dup, "a (this process) aaaa 0 ? yes NO 0 ") || !strings.HasSuffix(dup, "this process: not published, node name in use by another replica") {
		t.Fatalf("this process's line %q:\n%s", dup, stdout.String())
	}
	if !strings.Contains(stdout.String(), "members:  a, b") {
		t.Fatalf("output lacks the members:\n%s", stdout.String())
	}
}

// statusOf runs pacer status against a server that answers body, and
// returns what it printed.
func statusOf(t *testing.T, body []byte) *bytes.Buffer {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()
	defer srv.Client().CloseIdleConnections()
	var stdout, stderr bytes.Buffer
	if err := statusCmd([]string{"--addr", srv.URL}, &stdout, &stderr); err != nil {
		t.Fatalf("status: %v\n%s", err, stderr.String())
	}
	return &stdout
}

// pacer status prints what the runner sends through the sanitizer of its
// errors: a runner of an older version sends the etcd endpoint with the
// user and password of cluster.etcd.endpoints, and errors and reasons that
// quote it (attack 23, U7).
func TestStatusMasksEtcdCredentials(t *testing.T) {
	const ep = "http://etcduser:EtcdUrlPw55@127.0.0.1:44379"
	body, _ := json.Marshal(map[string]any{"cluster": "c", "node": "a", "leader": "a", "lease_ttl": "10s", "shard_count": 1,
		"members": []string{"a"}, "shards_led": []int{0}, "shards": []coord.ShardState{{Shard: 0, Leader: "a", Assigned: "a"}},
		"job_set": "aaaa", "cluster_job_set": "bbbb", "not_leading": "etcd at " + ep + " is slow",
		"replicas": []coord.ReplicaView{{MemberRecord: coord.MemberRecord{Node: "a", JobSet: "aaaa", Shards: 1}, Reason: "etcd at " + ep + " is slow"}},
		"etcd": coord.EtcdStatus{Endpoint: ep, DBSize: 1 << 20, Quota: 2 << 30, Error: "dial " + ep + ": refused",
			At: time.Now(), LastGood: time.Now()}})
	out := statusOf(t, body).String()
	if !strings.Contains(out, "etcd:     http://[userinfo]@127.0.0.1:44379, look failed") ||
		strings.Contains(out, "EtcdUrlPw55") || strings.Contains(out, "etcduser") {
		t.Fatalf("status shows etcd's credentials:\n%s", out)
	}
	if strings.Count(out, "etcd at http://[userinfo]@127.0.0.1:44379 is slow") != 2 {
		t.Fatalf("status lacks the masked reasons:\n%s", out)
	}
}
