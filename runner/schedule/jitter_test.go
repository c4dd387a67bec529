package schedule

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math/bits"
	"testing"
	"time"
)

func TestJitterIsAPureFunctionOfJobAndSlot(t *testing.T) {
	t.Parallel()
	berlin := mustLoc(t, "Europe/Berlin")
	slot := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	// Pinned values: replicas running different builds must agree, so a
	// change here changes every deployed job's fire times.
	golden := []struct {
		job  string
		slot time.Time
		max  time.Duration
		want time.Duration
	}{
		{"backup", slot, 30 * time.Second, jitterGolden[0]},
		{"backup", slot.Add(time.Minute), 30 * time.Second, jitterGolden[1]},
		{"report", slot, 30 * time.Second, jitterGolden[2]},
		{"report", slot, time.Hour, jitterGolden[3]},
		{"", time.Unix(0, 0), time.Second, jitterGolden[4]},
	}
	for _, g := range golden {
		if got := Jitter(g.job, g.slot, g.max); got != g.want {
			t.Errorf("Jitter(%q, %v, %v) = %v, want %v", g.job, g.slot, g.max, got, g.want)
		}
	}
	if a, b := Jitter("backup", slot, time.Minute), Jitter("backup", slot.In(berlin), time.Minute); a != b {
		t.Errorf("jitter depends on the slot's location: %v vs %v", a, b)
	}
	for _, max := range []time.Duration{0, -time.Second} {
		if got := Jitter("backup", slot, max); got != 0 {
			t.Errorf("Jitter(max=%v) = %v, want 0", max, got)
		}
	}
}

var jitterGolden = [...]time.Duration{
	24_539_912_077, 17_522_093_300, 7_415_018_438, 889_802_212_633, 71_190_749,
}

func TestJitterRange(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, max := range []time.Duration{1, 2, 3, 7 * time.Millisecond, time.Second, 30 * time.Second, 24 * time.Hour, 1<<63 - 1} {
		for i := range 2000 {
			if j := Jitter("job", base.Add(time.Duration(i)*time.Second), max); j < 0 || j >= max {
				t.Fatalf("Jitter(max=%v) = %v, out of [0, max)", max, j)
			}
		}
	}
}

// Over 10,000 consecutive one-minute slots, the delays fill 20 equal buckets
// evenly: a chi-square statistic with 19 degrees of freedom above 43.8
// would happen by chance with probability 0.001. The inputs are fixed, so
// the test is deterministic; the bound documents how much slack it has.
func TestJitterIsRoughlyUniform(t *testing.T) {
	t.Parallel()
	const slots, buckets = 10_000, 20
	max := 30 * time.Second
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, job := range []string{"backup", "report", "a", "b"} {
		var counts [buckets]int
		for i := range slots {
			counts[Jitter(job, base.Add(time.Duration(i)*time.Minute), max)*buckets/max]++
		}
		expected := float64(slots) / buckets
		chi2 := 0.0
		for _, c := range counts {
			chi2 += (float64(c) - expected) * (float64(c) - expected) / expected
		}
		if chi2 > 43.8 {
			t.Errorf("job %q: chi-square %.1f over %d buckets %v", job, chi2, buckets, counts)
		}
	}
}

func TestJitterDiffersBetweenJobs(t *testing.T) {
	t.Parallel()
	base := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	same := 0
	for i := range 1000 {
		slot := base.Add(time.Duration(i) * time.Hour)
		if Jitter("job-a", slot, time.Minute) == Jitter("job-b", slot, time.Minute) {
			same++
		}
	}
	// At nanosecond resolution a coincidence is a 1-in-6e10 event.
	if same > 0 {
		t.Fatalf("jobs job-a and job-b got the same delay for %d of 1000 slots", same)
	}
	// Nor are the delays of two jobs shifted copies of each other.
	d0 := Jitter("job-a", base, time.Minute) - Jitter("job-b", base, time.Minute)
	d1 := Jitter("job-a", base.Add(time.Hour), time.Minute) - Jitter("job-b", base.Add(time.Hour), time.Minute)
	if d0 == d1 {
		t.Fatalf("delays of job-a and job-b differ by a constant %v", d0)
	}
}

// The package doc spells out the hash; this rebuilds it from that text with
// the standard library, so doc and code cannot drift apart.
func TestJitterMatchesDocumentedAlgorithm(t *testing.T) {
	t.Parallel()
	reference := func(job string, slot time.Time, max time.Duration) time.Duration {
		h := fnv.New64a()
		h.Write([]byte(job))
		h.Write(binary.BigEndian.AppendUint64(nil, uint64(slot.Unix())))
		h.Write(binary.BigEndian.AppendUint32(nil, uint32(slot.Nanosecond())))
		x := h.Sum64()
		x ^= x >> 33
		x *= 0xff51afd7ed558ccd
		x ^= x >> 33
		x *= 0xc4ceb9fe1a85ec53
		x ^= x >> 33
		hi, _ := bits.Mul64(x, uint64(max))
		return time.Duration(hi)
	}
	base := time.Date(1969, 12, 31, 23, 59, 59, 123_456_789, time.UTC)
	for i := range 500 {
		job := fmt.Sprintf("job-%d", i%7)
		slot := base.Add(time.Duration(i) * 1_234_567_891)
		max := time.Duration(i+1) * 997 * time.Millisecond
		if got, want := Jitter(job, slot, max), reference(job, slot, max); got != want {
			t.Fatalf("Jitter(%q, %v, %v) = %v, reference %v", job, slot, max, got, want)
		}
	}
}
