package coord_test

import (
	"fmt"
	"slices"
	"testing"

	"pgregory.net/rapid"

	"github.com/pacerun/pacer/runner/coord"
)

func member(node, set string, rev int64) coord.Member {
	return coord.Member{MemberRecord: coord.MemberRecord{Node: node, JobSet: set}, Revision: rev}
}

func TestAgree(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members []coord.Member
		want    string
		holders []string
		sets    int
		running map[string]int // shards by the set of their newest epoch
	}{
		{"nobody", nil, "", nil, 0, nil},
		{"alone", []coord.Member{member("a", "A", 5)}, "A", []string{"a"}, 1, nil},
		{"all agree", []coord.Member{member("a", "A", 5), member("b", "A", 3), member("c", "A", 9)}, "A", []string{"b", "a", "c"}, 1, nil},
		{"majority", []coord.Member{member("a", "A", 1), member("b", "B", 2), member("c", "B", 3)}, "B", []string{"b", "c"}, 2, nil},
		{"tie: the longest-standing member's", []coord.Member{member("a", "A", 7), member("b", "B", 2)}, "B", []string{"b"}, 2, nil},
		{"three-way tie", []coord.Member{member("c", "C", 4), member("a", "A", 3), member("b", "B", 9)}, "A", []string{"a"}, 3, nil},
		{"most, without a majority", []coord.Member{member("a", "A", 1), member("b", "B", 2), member("c", "B", 3), member("d", "C", 4), member("e", "D", 5)}, "B", []string{"b", "c"}, 4, nil},
		{"tie between pairs", []coord.Member{member("a", "A", 10), member("b", "A", 2), member("c", "B", 3), member("d", "B", 4)}, "A", []string{"b", "a"}, 2, nil},
		// The replica holding the set the cluster runs restarted: it is the
		// newest member now, and its set stays the cluster's.
		{"tie: the set the cluster runs", []coord.Member{member("a", "A", 7), member("b", "B", 2)}, "A", []string{"a"}, 2, map[string]int{"A": 16}},
		{"tie: the set most shards run", []coord.Member{member("a", "A", 7), member("b", "B", 2)}, "A", []string{"a"}, 2, map[string]int{"A": 9, "B": 7}},
		{"tie: running ties too", []coord.Member{member("a", "A", 7), member("b", "B", 2)}, "B", []string{"b"}, 2, map[string]int{"A": 8, "B": 8}},
		{"running does not beat more holders", []coord.Member{member("a", "A", 1), member("b", "B", 2), member("c", "B", 3)}, "B", []string{"b", "c"}, 2, map[string]int{"A": 16}},
		{"running a set nobody holds", []coord.Member{member("a", "A", 7), member("b", "B", 2)}, "B", []string{"b"}, 2, map[string]int{"C": 16}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := coord.Agree(tc.members, tc.running)
			if a.JobSet != tc.want || !slices.Equal(a.Holders, tc.holders) || a.Sets != tc.sets {
				t.Fatalf("Agree = %+v, want job set %q held by %v, %d sets", a, tc.want, tc.holders, tc.sets)
			}
		})
	}
}

// Every replica decides alike whatever order it lists the members in, and
// the decision is a set held by at least as many members as any other.
func TestAgreeIsOrderIndependentAndPicksTheMost(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 9).Draw(t, "members")
		revs := rapid.Permutation([]int64{1, 2, 3, 4, 5, 6, 7, 8, 9}).Draw(t, "revisions")
		var ms []coord.Member
		count := map[string]int{}
		for i := range n {
			set := rapid.SampledFrom([]string{"A", "B", "C"}).Draw(t, "set")
			ms = append(ms, member(fmt.Sprintf("n%d", i), set, revs[i]))
			count[set]++
		}
		want := coord.Agree(ms, nil)
		shuffled := rapid.Permutation(ms).Draw(t, "order")
		if got := coord.Agree(shuffled, nil); got.JobSet != want.JobSet || !slices.Equal(got.Holders, want.Holders) {
			t.Fatalf("order changed the decision: %+v vs %+v", got, want)
		}
		for set, c := range count {
			if c > count[want.JobSet] {
				t.Fatalf("decided %s (%d members) over %s (%d)", want.JobSet, count[want.JobSet], set, c)
			}
		}
		if want.Sets != len(count) {
			t.Fatalf("Sets = %d, want %d", want.Sets, len(count))
		}
	})
}

func TestJobSetManifestAndDiff(t *testing.T) {
	a := coord.NewJobSet(map[string]string{"x": "1111", "y": "2222", "only-a": "3333"})
	b := coord.NewJobSet(map[string]string{"y": "2222", "x": "9999", "only-b": "4444"})
	if again := coord.NewJobSet(map[string]string{"only-a": "3333", "y": "2222", "x": "1111"}); again.Fingerprint != a.Fingerprint {
		t.Fatal("fingerprint depends on insertion order")
	}
	if a.Fingerprint == b.Fingerprint {
		t.Fatal("different sets, same fingerprint")
	}
	back, err := coord.ParseManifest(a.Fingerprint, a.Manifest())
	if err != nil || back.Fingerprint != a.Fingerprint || len(back.Jobs) != 3 {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	if _, err := coord.ParseManifest(b.Fingerprint, a.Manifest()); err == nil {
		t.Fatal("a manifest stored under the wrong fingerprint was accepted")
	}
	if _, err := coord.ParseManifest(a.Fingerprint, []byte("no tab here\n")); err == nil {
		t.Fatal("a malformed manifest was accepted")
	}
	d := a.Diff(b)
	if !slices.Equal(d.OnlyHere, []string{"only-a"}) || !slices.Equal(d.MissingHere, []string{"only-b"}) || !slices.Equal(d.Different, []string{"x"}) {
		t.Fatalf("diff %+v", d)
	}
	if got, want := d.String(), "1 only here (only-a); 1 missing here (only-b); 1 defined differently (x)"; got != want {
		t.Fatalf("diff text %q, want %q", got, want)
	}
	if !a.Diff(a).Empty() {
		t.Fatal("a set differs from itself")
	}
	many := map[string]string{}
	for i := range 25 {
		many[fmt.Sprintf("j%02d", i)] = "h"
	}
	if got := coord.NewJobSet(many).Diff(coord.NewJobSet(nil)).String(); got != "25 only here (j00, j01, j02, j03, j04, j05, j06, j07, j08, j09 and 15 more)" {
		t.Fatalf("long diff text %q", got)
	}
}

// The shard count is part of a set: two replicas that partition the same
// jobs differently disagree, say so, and the count survives the manifest.
// One shard keeps the fingerprint of a set from before shards.
func TestJobSetShardCount(t *testing.T) {
	jobs := map[string]string{"x": "1111", "y": "2222"}
	one, sixteen, eight := coord.NewJobSet(jobs), coord.NewShardedJobSet(jobs, 16), coord.NewShardedJobSet(jobs, 8)
	if coord.NewShardedJobSet(jobs, 1).Fingerprint != one.Fingerprint || coord.NewShardedJobSet(jobs, 0).Fingerprint != one.Fingerprint {
		t.Fatal("one shard changed the fingerprint of an unsharded set")
	}
	if sixteen.Fingerprint == one.Fingerprint || sixteen.Fingerprint == eight.Fingerprint {
		t.Fatal("sets with different shard counts have one fingerprint")
	}
	if want := "#shards\t16/v1\nx\t1111\ny\t2222\n"; string(sixteen.Manifest()) != want {
		t.Fatalf("manifest %q, want %q", sixteen.Manifest(), want)
	}
	back, err := coord.ParseManifest(sixteen.Fingerprint, sixteen.Manifest())
	if err != nil || back.Shards != 16 || back.Fingerprint != sixteen.Fingerprint || len(back.Jobs) != 2 {
		t.Fatalf("round trip: %+v, %v", back, err)
	}
	for _, bad := range []string{"#shards\tmany/v1\nx\t1\n", "#shards\t1/v1\nx\t1\n", "#shards\t16/v9\nx\t1\n"} {
		if _, err := coord.ParseManifest(sixteen.Fingerprint, []byte(bad)); err == nil {
			t.Errorf("manifest %q accepted", bad)
		}
	}
	d := sixteen.Diff(eight)
	if d.Empty() || d.String() != "cluster.shards 16 here, 8 there" {
		t.Fatalf("diff of the shard counts: %+v %q", d, d.String())
	}
}
