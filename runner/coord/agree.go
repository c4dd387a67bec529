package coord

import (
	"cmp"
	"slices"
	"time"
)

// MemberRecord is what a replica publishes about itself under
// /pacer/<cluster>/members/<node>, on a lease of its own: it is there while
// the replica runs, whether or not it leads or campaigns.
type MemberRecord struct {
	Node string `json:"node"`
	// JobSet is the fingerprint of the jobs this replica schedules (see
	// JobSet), and Jobs how many there are.
	JobSet string `json:"job_set"`
	Jobs   int    `json:"jobs"`
	// Config, ConfigSHA256 and ConfigModTime say which config file the
	// jobs came from, for an operator tracking down a difference.
	Config        string    `json:"config,omitempty"`
	ConfigSHA256  string    `json:"config_sha256,omitempty"`
	ConfigModTime time.Time `json:"config_mtime,omitzero"`
	Version       string    `json:"version,omitempty"`
	// Started is when this replica's process started.
	Started time.Time `json:"started,omitzero"`
	// Mismatch is the replica's cluster.job_set_mismatch setting.
	Mismatch string `json:"job_set_mismatch,omitempty"`
	// Shards is the replica's cluster.shards (0: a record of a version
	// that did not publish it), for an operator following a change of the
	// count from any replica.
	Shards int `json:"shards,omitempty"`
}

// Member is a live replica: its record and the record's create revision,
// which orders members by how long they have been members (lower: longer).
type Member struct {
	MemberRecord
	Revision int64 `json:"-"`
}

// Agreement is the cluster's job set as the live members decide it.
type Agreement struct {
	// JobSet is the cluster's job set: the fingerprint most live members
	// hold; on a tie, the one the cluster runs (led by the most shards, as
	// their newest epochs say), and only when that ties too, the one held
	// by the longest-standing member. "" when there are no members.
	JobSet string
	// Holders are the members that hold it, longest-standing first.
	Holders []string
	// Sets is how many distinct job sets the members hold.
	Sets int
}

// Agree decides the cluster's job set from the live members and running,
// how many shards each set is run on (by fingerprint: the set of each
// shard's newest epoch; nil when unknown). Every replica that sees the
// same members and epochs decides the same.
//
// running breaks a tie before the members' age does, so that the restart
// (or crash) of a replica holding the set the cluster runs does not hand
// the cluster to a differing replica that has become the longest member
// meanwhile: the set that was refused stays refused.
func Agree(members []Member, running map[string]int) Agreement {
	type tally struct {
		set     string
		holders []Member
	}
	by := map[string]*tally{}
	for _, m := range members {
		t := by[m.JobSet]
		if t == nil {
			t = &tally{set: m.JobSet}
			by[m.JobSet] = t
		}
		t.holders = append(t.holders, m)
	}
	if len(by) == 0 {
		return Agreement{}
	}
	var sets []*tally
	for _, t := range by {
		slices.SortFunc(t.holders, func(a, b Member) int {
			return cmp.Or(cmp.Compare(a.Revision, b.Revision), cmp.Compare(a.Node, b.Node))
		})
		sets = append(sets, t)
	}
	slices.SortFunc(sets, func(a, b *tally) int {
		return cmp.Or(
			cmp.Compare(len(b.holders), len(a.holders)),               // most holders first
			cmp.Compare(running[b.set], running[a.set]),               // then the set the cluster runs
			cmp.Compare(a.holders[0].Revision, b.holders[0].Revision), // then the longest-standing holder
			cmp.Compare(a.set, b.set),                                 // then any fixed order
		)
	})
	win := sets[0]
	a := Agreement{JobSet: win.set, Sets: len(sets)}
	for _, h := range win.holders {
		a.Holders = append(a.Holders, h.Node)
	}
	return a
}
