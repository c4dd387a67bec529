package coord

import (
	"encoding/json"
	"errors"
	"slices"
	"testing"
	"time"

	"pgregory.net/rapid"
)

// Any sequence of claims, finishes and skips, in any order of slots: a
// claim the state allows is of a slot never claimed or skipped before
// (checked against every slot ever decided), an open claim is never lost,
// and the stored state stays bounded by keepSlots plus the open claims.
func TestClaimStateNeverAllowsASlotTwice(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		var st claimState
		decided := map[int64]bool{} // every slot ever claimed or skipped
		open := map[int64]bool{}
		slot := rapid.Int64Range(1, 400)
		for range rapid.IntRange(1, 300).Draw(t, "steps") {
			switch rapid.IntRange(0, 2).Draw(t, "op") {
			case 0, 1: // claim (or skip) a slot
				s := slot.Draw(t, "slot")
				err := st.check(s)
				if err == nil && decided[s] {
					t.Fatalf("slot %d allowed again; state %+v", s, st)
				}
				if err != nil {
					if !errors.Is(err, ErrSlotTaken) && !errors.Is(err, ErrSlotTooOld) {
						t.Fatalf("check: %v", err)
					}
					continue
				}
				decided[s] = true
				if rapid.Bool().Draw(t, "skip") {
					st = st.withClosed(s)
				} else {
					st = st.withOpen(s, json.RawMessage(`{}`))
					open[s] = true
				}
			case 2: // finish an open slot
				if len(open) == 0 {
					continue
				}
				keys := make([]int64, 0, len(open))
				for k := range open {
					keys = append(keys, k)
				}
				slices.Sort(keys)
				s := rapid.SampledFrom(keys).Draw(t, "finish")
				st = st.withClosed(s)
				delete(open, s)
			}
			if len(st.Slots) > keepSlots || len(st.Open) != len(open) {
				t.Fatalf("state %+v: %d slots kept (max %d), %d open (want %d)", st, len(st.Slots), keepSlots, len(st.Open), len(open))
			}
			for _, o := range st.Open {
				if !open[o.Slot] {
					t.Fatalf("open claim %d not open in the model", o.Slot)
				}
			}
			if !slices.IsSorted(st.Slots) || (len(st.Slots) > 0 && st.Slots[0] <= st.Floor) {
				t.Fatalf("slots %v not ascending after floor %d", st.Slots, st.Floor)
			}
		}
	})
}

func TestJobClaimsLast(t *testing.T) {
	st := claimState{Floor: 10, Slots: []int64{20, 30}, Open: []openClaim{{Slot: 40, Claim: json.RawMessage(`{}`)}}}
	j := st.public()
	ns := func(tm time.Time) int64 {
		if tm.IsZero() {
			return 0
		}
		return tm.UnixNano()
	}
	if got := ns(j.Last(time.Time{})); got != 40 {
		t.Errorf("Last(any) = %d, want 40", got)
	}
	for _, tc := range []struct{ before, want int64 }{{41, 40}, {40, 30}, {25, 20}, {20, 10}, {11, 10}, {10, 0}} {
		if got := ns(j.Last(nsTime(tc.before))); got != tc.want {
			t.Errorf("Last(%d) = %d, want %d", tc.before, got, tc.want)
		}
	}
}

// A claim key with the last success still reads, and the same, in a runner
// that predates the field (its claimState had only floor, slots and open).
func TestClaimKeyWithSuccessReadsInAnOlderRunner(t *testing.T) {
	st := claimState{Floor: 10, Slots: []int64{20, 30}}.withOpen(40, []byte(`{"run":"r"}`)).withSuccess(35)
	v, err := json.Marshal(st)
	if err != nil {
		t.Fatal(err)
	}
	var old struct {
		Floor int64       `json:"floor,omitempty"`
		Slots []int64     `json:"slots,omitempty"`
		Open  []openClaim `json:"open,omitempty"`
	}
	if err := json.Unmarshal(v, &old); err != nil {
		t.Fatalf("older runner cannot read %s: %v", v, err)
	}
	if old.Floor != st.Floor || !slices.Equal(old.Slots, st.Slots) || len(old.Open) != 1 || old.Open[0].Slot != 40 {
		t.Fatalf("older runner reads %+v from %s, want %+v", old, v, st)
	}
	if got := st.withClosed(40).withFloor(30).withSuccess(20).Success; got != 35 {
		t.Fatalf("success after closing, a floor and an earlier success: %d, want 35", got)
	}
}

// Attack 21, S5: a leader that reloads records a second epoch under its
// term's token. The set the cluster runs is the term's latest epoch's,
// whatever the order the epochs are looked at in; before, it was either,
// by map order, and two replicas agreed on different job sets.
func TestRunningTakesATermsLatestEpoch(t *testing.T) {
	t0 := time.Date(2026, 12, 7, 13, 0, 0, 0, time.UTC)
	epochs := map[string]Epoch{
		"a": {Since: t0, Node: "rb", Shard: 0, Token: 7, JobSet: "old"},
		"b": {Since: t0.Add(time.Minute), Node: "rb", Shard: 0, Token: 7, JobSet: "reloaded"},
		"c": {Since: t0.Add(-time.Hour), Node: "ra", Shard: 0, Token: 5, JobSet: "older"},
		"d": {Since: t0, Node: "ra", Shard: 1, Token: 9, JobSet: "old"},
	}
	for range 200 { // map order varies from one range to the next
		if got := running(epochs); got["reloaded"] != 1 || got["old"] != 1 || len(got) != 2 {
			t.Fatalf("running %v; want shard 0 on its term's latest set, shard 1 on old", got)
		}
	}
}
