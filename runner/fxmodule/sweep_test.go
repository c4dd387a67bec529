package fxmodule

import (
	"testing"

	"github.com/pacerun/pacer/runner/coord"
)

// The sweep may remove a removed job's keys only while every live replica
// runs this replica's job set: this one is the cluster's, and no replica
// differs (a replica of another set under cluster.job_set_mismatch: warn
// still counts).
func TestJobSetsAgree(t *testing.T) {
	same, other := coord.ReplicaView{Agrees: true}, coord.ReplicaView{Agrees: false}
	for _, c := range []struct {
		name string
		view coord.JobSetView
		want bool
	}{
		{"alone", coord.JobSetView{JobSetAgreed: true, Replicas: []coord.ReplicaView{same}}, true},
		{"all the same", coord.JobSetView{JobSetAgreed: true, Replicas: []coord.ReplicaView{same, same, same}}, true},
		{"one replica differs", coord.JobSetView{JobSetAgreed: true, Replicas: []coord.ReplicaView{same, same, other}}, false},
		{"this replica is not the cluster's", coord.JobSetView{JobSetAgreed: false, Replicas: []coord.ReplicaView{other, same, same}}, false},
		{"no member record seen yet", coord.JobSetView{}, false},
	} {
		if got := jobSetsAgree(c.view); got != c.want {
			t.Errorf("%s: jobSetsAgree = %v, want %v", c.name, got, c.want)
		}
	}
}
