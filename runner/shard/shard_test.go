package shard_test

import (
	"fmt"
	"math"
	"slices"
	"testing"

	"go.uber.org/goleak"
	"pgregory.net/rapid"

	"github.com/pacerun/pacer/runner/shard"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

// The reference values were computed independently, by a Python
// transcription of the documented algorithm (docs/scaling.md), so a change
// of the hash, of the key derivation or of the float arithmetic fails here:
// a job's shard must never depend on the version or platform.
func TestOfReferenceValues(t *testing.T) {
	for _, c := range []struct {
		id                 string
		s1, s16, s17, s256 int
	}{
		{"nightly-report", 0, 11, 11, 167},
		{"a", 0, 1, 16, 233},
		{"job-00001", 0, 7, 16, 108},
		{"report-eu-00042", 0, 6, 6, 6},
		{"", 0, 5, 5, 22},
	} {
		got := []int{shard.Of(c.id, 1), shard.Of(c.id, 16), shard.Of(c.id, 17), shard.Of(c.id, 256)}
		if want := []int{c.s1, c.s16, c.s17, c.s256}; !slices.Equal(got, want) {
			t.Errorf("Of(%q, 1|16|17|256) = %v, want %v", c.id, got, want)
		}
	}
	if got := shard.Score(0, "web-1"); got != 6967245804874226055 {
		t.Errorf("Score(0, web-1) = %d, want 6967245804874226055", got)
	}
	if shard.Of("x", 0) != 0 || shard.Of("x", -3) != 0 {
		t.Error("a shard count below 1 must count as 1")
	}
}

func TestOfInRangeAndStableOnGrowth(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		id := rapid.String().Draw(t, "id")
		n := rapid.IntRange(1, shard.Max).Draw(t, "shards")
		s := shard.Of(id, n)
		if s < 0 || s >= n {
			t.Fatalf("Of(%q, %d) = %d, out of range", id, n, s)
		}
		if shard.Of(id, n) != s {
			t.Fatal("Of is not deterministic")
		}
		// Growing by one shard, a job stays or moves to the new shard:
		// never between old ones (the jump hash's consistency).
		if g := shard.Of(id, n+1); g != s && g != n {
			t.Fatalf("Of(%q): %d shards -> %d, %d shards -> %d: moved between old shards", id, n, s, n+1, g)
		}
	})
}

// Job IDs spread evenly: with 100,000 IDs in 16 shards, each shard's count
// is within 5 % of the mean (a deterministic set of IDs, so this cannot
// flake; the standard deviation is about 1 %).
func TestOfSpreadsEvenly(t *testing.T) {
	const jobs, shards = 100000, 16
	count := make([]int, shards)
	for i := range jobs {
		count[shard.Of(fmt.Sprintf("job-%05d", i), shards)]++
	}
	mean := float64(jobs) / shards
	for s, n := range count {
		if math.Abs(float64(n)-mean) > 0.05*mean {
			t.Errorf("shard %d holds %d of %d jobs; mean %.0f", s, n, jobs, mean)
		}
	}
}

func members(t *rapid.T, label string) []string {
	return rapid.SliceOfNDistinct(rapid.StringMatching(`[a-z][a-z0-9-]{0,12}`), 1, 12, rapid.ID[string]).Draw(t, label)
}

func TestAssignIsFairAndComplete(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, shard.Max).Draw(t, "shards")
		ms := members(t, "members")
		a := shard.Assign(n, ms)
		if len(a) != n {
			t.Fatalf("%d entries for %d shards", len(a), n)
		}
		count := map[string]int{}
		for s, m := range a {
			if !slices.Contains(ms, m) {
				t.Fatalf("shard %d assigned to %q, not a member", s, m)
			}
			count[m]++
		}
		lo, hi := n/len(ms), (n+len(ms)-1)/len(ms)
		for _, m := range ms {
			if c := count[m]; c < lo || c > hi {
				t.Fatalf("%s leads %d of %d shards among %d members; want %d..%d", m, c, n, len(ms), lo, hi)
			}
		}
	})
}

func TestAssignIgnoresOrderAndDuplicates(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, 64).Draw(t, "shards")
		ms := members(t, "members")
		shuffled := rapid.Permutation(ms).Draw(t, "shuffled")
		doubled := append(slices.Clone(shuffled), ms...)
		a := shard.Assign(n, ms)
		if b := shard.Assign(n, doubled); !slices.Equal(a, b) {
			t.Fatalf("Assign(%d, %v) = %v, but with the members %v: %v", n, ms, a, doubled, b)
		}
	})
}

func TestAssignWithoutMembers(t *testing.T) {
	for _, ms := range [][]string{nil, {}, {""}} {
		a := shard.Assign(4, ms)
		if !slices.Equal(a, []string{"", "", "", ""}) {
			t.Errorf("Assign(4, %q) = %q, want no owners", ms, a)
		}
	}
	if a := shard.Assign(0, []string{"a"}); len(a) != 0 {
		t.Errorf("Assign(0, a) = %q", a)
	}
	if a := shard.Assign(3, []string{"", "b"}); !slices.Equal(a, []string{"b", "b", "b"}) {
		t.Errorf(`Assign(3, ["", b]) = %q: an empty name is no member`, a)
	}
}

// One member joining or leaving moves few shards besides the ones that
// must move (the newcomer's, or the leaver's): at most twice as many plus
// three, for clusters of up to 8 members. Each move is a hand-over (drain,
// resign), so this is the cost of a membership change.
func TestAssignMovesFew(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		n := rapid.IntRange(1, shard.Max).Draw(t, "shards")
		ms := rapid.SliceOfNDistinct(rapid.StringMatching(`[a-z][a-z0-9-]{0,12}`), 1, 8, rapid.ID[string]).Draw(t, "members")
		before := shard.Assign(n, ms)
		var after []string
		var must int
		if leave := len(ms) > 1 && rapid.Bool().Draw(t, "leave"); leave {
			after = shard.Assign(n, ms[1:])
			must = len(shard.Owned(before, ms[0]))
		} else {
			after = shard.Assign(n, append(slices.Clone(ms), "newcomer-with-a-long-name"))
			must = len(shard.Owned(after, "newcomer-with-a-long-name"))
		}
		moved := 0
		for s := range before {
			if before[s] != after[s] {
				moved++
			}
		}
		if moved > 2*must+3 {
			t.Fatalf("%d shards, members %v: %d moved, %d had to", n, ms, moved, must)
		}
	})
}

// On average over many clusters, a join moves at most 35 % more shards
// than the newcomer receives (measured: about 25 %).
func TestAssignMovesFewOnAverage(t *testing.T) {
	moved, must := 0, 0
	for n := 1; n <= 64; n++ {
		for r := 1; r <= 8; r++ {
			var ms []string
			for i := range r {
				ms = append(ms, fmt.Sprintf("pacer-%d-%d", n, i))
			}
			before := shard.Assign(n, ms)
			after := shard.Assign(n, append(ms, "new"))
			must += len(shard.Owned(after, "new"))
			for s := range before {
				if before[s] != after[s] {
					moved++
				}
			}
		}
	}
	if float64(moved) > 1.35*float64(must) {
		t.Fatalf("joins moved %d shards; %d had to move (%.0f %% more)", moved, must, 100*(float64(moved)/float64(must)-1))
	}
	t.Logf("joins moved %d shards; %d had to move (%.0f %% more)", moved, must, 100*(float64(moved)/float64(must)-1))
}

func BenchmarkAssign(b *testing.B) {
	for _, c := range []struct{ shards, members int }{{16, 3}, {256, 10}} {
		ms := make([]string, c.members)
		for i := range ms {
			ms[i] = fmt.Sprintf("pacer-%d", i)
		}
		b.Run(fmt.Sprintf("shards=%d/members=%d", c.shards, c.members), func(b *testing.B) {
			for b.Loop() {
				shard.Assign(c.shards, ms)
			}
		})
	}
}

func BenchmarkOf(b *testing.B) {
	for b.Loop() {
		shard.Of("report-eu-00042", shard.Default)
	}
}
