package schedule

import (
	"fmt"
	"testing"
	"time"
)

// Changes of the clock used below (tz data; see also dst_test.go):
//
//	Europe/Berlin        2026-03-29 01:00Z  02:00 CET  → 03:00 CEST
//	Australia/Lord_Howe  2026-04-04 15:00Z  02:00 +11  → 01:30 +10:30
//	                     2026-10-03 15:30Z  02:00 +10:30 → 02:30 +11
//
// TestShortestGapAcrossClockChanges: the shortest interval is found on the
// day the clocks change, though a sample of fire times from `from` does not
// reach it (attack G6: jitter 23h30m on a daily 02:00 in Berlin was
// accepted; its slots are 23 h apart after the spring change).
func TestShortestGapAcrossClockChanges(t *testing.T) {
	t.Parallel()
	from := utc(2026, 1, 1, 0, 0, 0)
	for _, tc := range []struct {
		spec, zone string
		within     time.Duration
		want       Gap
	}{
		// 02:00 does not exist on 29 March: it fires at the jump (03:00
		// CEST), then at 02:00 CEST the next day.
		{"0 0 2 * * *", "Europe/Berlin", 23*time.Hour + 30*time.Minute,
			Gap{utc(2026, 3, 29, 1, 0, 0), utc(2026, 3, 30, 0, 0, 0), utc(2026, 3, 29, 1, 0, 0)}},
		// 00:00 +10:30 to 12:00 +11 on 4 October: 11h30m.
		{"0 0 0,12 * * *", "Australia/Lord_Howe", 11*time.Hour + 45*time.Minute,
			Gap{utc(2026, 10, 3, 13, 30, 0), utc(2026, 10, 4, 1, 0, 0), utc(2026, 10, 3, 15, 30, 0)}},
		// Every hour at :45: 01:45 is repeated on 5 April and fires at
		// both, 30 minutes apart.
		{"0 45 * * * *", "Australia/Lord_Howe", 45 * time.Minute,
			Gap{utc(2026, 4, 4, 14, 45, 0), utc(2026, 4, 4, 15, 15, 0), utc(2026, 4, 4, 15, 0, 0)}},
	} {
		s, err := Parse(tc.spec, mustLoc(t, tc.zone))
		if err != nil {
			t.Fatal(err)
		}
		if g := sampleGap(s, from); g.Len() <= tc.want.Len() {
			t.Fatalf("%s in %s: the sample from %s already finds %v; the case tests nothing", tc.spec, tc.zone, from, g)
		}
		g, ok := ShortestGap(s, from, tc.within, 2*365*24*time.Hour)
		if !ok || !g.From.Equal(tc.want.From) || !g.To.Equal(tc.want.To) || !g.Change.Equal(tc.want.Change) {
			t.Errorf("%s in %s: ShortestGap = %v, %v; want %v", tc.spec, tc.zone, g, ok, tc.want)
		}
	}
}

// sampleGap is the shortest of the first 64 intervals after from: what the
// jitter check looked at before it knew of clock changes.
func sampleGap(s Schedule, from time.Time) Gap {
	ts := NextN(s, from, 65)
	best := Gap{From: ts[0], To: ts[1]}
	for i := 1; i+1 < len(ts); i++ {
		if ts[i+1].Sub(ts[i]) < best.Len() {
			best = Gap{From: ts[i], To: ts[i+1]}
		}
	}
	return best
}

// TestShortestGapOrdinary: where no clock change shortens an interval, the
// answer is the spec's own interval, and no change is named.
func TestShortestGapOrdinary(t *testing.T) {
	t.Parallel()
	from := utc(2026, 1, 1, 0, 0, 0)
	for _, tc := range []struct {
		spec, zone string
		want       time.Duration
	}{
		{"0 0 2 * * *", "UTC", 24 * time.Hour},
		{"0 0 2 * * *", "Asia/Tokyo", 24 * time.Hour},
		{"0 0 9,10 * * *", "Europe/Berlin", time.Hour},
		{"@every 90s", "Europe/Berlin", 90 * time.Second},
		{"0 */15 * * * *", "America/New_York", 15 * time.Minute},
	} {
		s, err := Parse(tc.spec, mustLoc(t, tc.zone))
		if err != nil {
			t.Fatal(err)
		}
		g, ok := ShortestGap(s, from, 24*time.Hour, 2*365*24*time.Hour)
		if !ok || g.Len() != tc.want || !g.Change.IsZero() || !g.To.Equal(s.Next(g.From)) {
			t.Errorf("%s in %s: ShortestGap = %v, %v; want %s between consecutive fire times, no change", tc.spec, tc.zone, g, ok, tc.want)
		}
	}
	for _, spec := range []string{"at: 2026-06-01T00:00:00Z", "0 0 30 2 *"} {
		s, err := Parse(spec, nil)
		if err != nil {
			t.Fatal(err)
		}
		if g, ok := ShortestGap(s, from, time.Hour, 365*24*time.Hour); ok {
			t.Errorf("%s: ShortestGap = %v, want none (it fires once at most)", spec, g)
		}
	}
}

// TestShortestGapMatchesEveryInterval compares ShortestGap with every
// interval of a year, walked one fire time after another, for specs and
// zones whose clocks change by an hour, by 30 minutes, backwards in winter
// (Dublin) or not at all any more (Tehran): whenever the year has an
// interval of at most within, ShortestGap finds one as short.
func TestShortestGapMatchesEveryInterval(t *testing.T) {
	t.Parallel()
	from := utc(2026, 1, 1, 0, 0, 0)
	end := utc(2027, 1, 1, 0, 0, 0)
	const within = 24 * time.Hour
	specs := []string{"0 0 2 * * *", "0 30 2 * * *", "0 0 0,12 * * *", "0 45 * * * *", "0 0 */6 * * *",
		"0 15 1-3 * * *", "@daily", "0 0 9 * * MON-FRI", "0 30 1,23 * * *", "0 0 3 * * SUN"}
	zones := []string{"Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "America/Santiago",
		"Europe/Dublin", "Asia/Tehran", "Pacific/Chatham"}
	for _, zone := range zones {
		for _, spec := range specs {
			t.Run(fmt.Sprintf("%s/%s", zone, spec), func(t *testing.T) {
				t.Parallel()
				s, err := Parse(spec, mustLoc(t, zone))
				if err != nil {
					t.Fatal(err)
				}
				var want Gap
				for prev := s.Next(from); prev.Before(end); {
					next := s.Next(prev)
					if want.From.IsZero() || next.Sub(prev) < want.Len() {
						want = Gap{From: prev, To: next}
					}
					prev = next
				}
				g, ok := ShortestGap(s, from, within, end.Sub(from))
				switch {
				case !ok:
					t.Fatalf("found none; a walk found %v", want)
				case !g.To.Equal(s.Next(g.From)):
					t.Fatalf("%v is not between consecutive fire times", g)
				case want.Len() <= within && g.Len() > want.Len():
					t.Fatalf("ShortestGap = %s (%v); a walk found %s (%v)", g.Len(), g, want.Len(), want)
				}
			})
		}
	}
}
