package schedule

import (
	"fmt"
	"testing"
	"time"
)

func utc(y int, mo time.Month, d, h, mi, s int) time.Time {
	return time.Date(y, mo, d, h, mi, s, 0, time.UTC)
}

// Transitions used below:
//
//	Europe/Berlin     2026-03-29 01:00Z  02:00 CET  → 03:00 CEST (gap 02:00–03:00)
//	                  2026-10-25 01:00Z  03:00 CEST → 02:00 CET  (02:00–03:00 twice)
//	America/New_York  2026-03-08 07:00Z  02:00 EST  → 03:00 EDT  (gap 02:00–03:00)
//	                  2026-11-01 06:00Z  02:00 EDT  → 01:00 EST  (01:00–02:00 twice)
func TestDaylightSaving(t *testing.T) {
	t.Parallel()
	berlin := mustLoc(t, "Europe/Berlin")
	ny := mustLoc(t, "America/New_York")
	tests := []struct {
		name string
		spec string
		loc  *time.Location
		from time.Time
		want []time.Time
	}{
		{"Berlin daily, missing time fires at the jump", "30 2 * * *", berlin, utc(2026, 3, 28, 0, 0, 0), []time.Time{
			utc(2026, 3, 28, 1, 30, 0), // 02:30 CET
			utc(2026, 3, 29, 1, 0, 0),  // 02:30 does not exist: 03:00 CEST
			utc(2026, 3, 30, 0, 30, 0), // 02:30 CEST
		}},
		{"Berlin daily, repeated time fires once", "30 2 * * *", berlin, utc(2026, 10, 24, 0, 0, 0), []time.Time{
			utc(2026, 10, 24, 0, 30, 0), // 02:30 CEST
			utc(2026, 10, 25, 0, 30, 0), // 02:30 CEST, first of two
			utc(2026, 10, 26, 1, 30, 0), // 02:30 CET
		}},
		{"Berlin daily with seconds, missing", "15 30 2 * * *", berlin, utc(2026, 3, 28, 12, 0, 0), []time.Time{
			utc(2026, 3, 29, 1, 0, 0), utc(2026, 3, 30, 0, 30, 15),
		}},
		{"Berlin daily from just before the jump", "30 2 * * *", berlin, utc(2026, 3, 29, 0, 59, 59), []time.Time{
			utc(2026, 3, 29, 1, 0, 0), utc(2026, 3, 30, 0, 30, 0),
		}},
		{"Berlin daily from the jump itself", "30 2 * * *", berlin, utc(2026, 3, 29, 1, 0, 0), []time.Time{
			utc(2026, 3, 30, 0, 30, 0),
		}},
		{"Berlin daily from inside the first run", "30 2 * * *", berlin, utc(2026, 10, 25, 0, 10, 0), []time.Time{
			utc(2026, 10, 25, 0, 30, 0), utc(2026, 10, 26, 1, 30, 0),
		}},
		{"Berlin daily from inside the second run", "30 2 * * *", berlin, utc(2026, 10, 25, 1, 10, 0), []time.Time{
			utc(2026, 10, 26, 1, 30, 0),
		}},
		{"Berlin hourly, spring", "0 * * * *", berlin, utc(2026, 3, 28, 23, 30, 0), []time.Time{
			utc(2026, 3, 29, 0, 0, 0), // 01:00 CET
			utc(2026, 3, 29, 1, 0, 0), // 03:00 CEST, an hour later
			utc(2026, 3, 29, 2, 0, 0),
		}},
		{"Berlin hourly, autumn fires in both runs", "0 * * * *", berlin, utc(2026, 10, 24, 23, 30, 0), []time.Time{
			utc(2026, 10, 25, 0, 0, 0), // 02:00 CEST
			utc(2026, 10, 25, 1, 0, 0), // 02:00 CET
			utc(2026, 10, 25, 2, 0, 0), // 03:00 CET
		}},
		{"Berlin @hourly, autumn", "@hourly", berlin, utc(2026, 10, 24, 23, 30, 0), []time.Time{
			utc(2026, 10, 25, 0, 0, 0), utc(2026, 10, 25, 1, 0, 0), utc(2026, 10, 25, 2, 0, 0),
		}},
		{"Berlin several times in the gap collapse into one", "*/15 2 * * *", berlin, utc(2026, 3, 29, 0, 0, 0), []time.Time{
			utc(2026, 3, 29, 1, 0, 0), utc(2026, 3, 30, 0, 0, 0), utc(2026, 3, 30, 0, 15, 0),
		}},
		{"Berlin several times in the repeated hour fire in the first run", "*/15 2 * * *", berlin, utc(2026, 10, 24, 23, 0, 0), []time.Time{
			utc(2026, 10, 25, 0, 0, 0), utc(2026, 10, 25, 0, 15, 0), utc(2026, 10, 25, 0, 30, 0), utc(2026, 10, 25, 0, 45, 0),
			utc(2026, 10, 26, 1, 0, 0),
		}},
		{"Berlin gap fire coincides with the 03:00 fire", "0 2,3 * * *", berlin, utc(2026, 3, 29, 0, 0, 0), []time.Time{
			utc(2026, 3, 29, 1, 0, 0), utc(2026, 3, 30, 0, 0, 0), utc(2026, 3, 30, 1, 0, 0),
		}},
		{"Berlin 02:00 and 03:00 on the autumn day", "0 2,3 * * *", berlin, utc(2026, 10, 24, 23, 0, 0), []time.Time{
			utc(2026, 10, 25, 0, 0, 0), // 02:00 CEST
			utc(2026, 10, 25, 2, 0, 0), // 03:00 CET
			utc(2026, 10, 26, 1, 0, 0),
		}},
		// From months away the search crosses other transitions first.
		{"Berlin yearly on the spring day, from January", "30 2 29 3 *", berlin, utc(2026, 1, 1, 0, 0, 0), []time.Time{
			utc(2026, 3, 29, 1, 0, 0), utc(2027, 3, 29, 0, 30, 0),
		}},
		{"Berlin yearly on the autumn day, from January", "30 2 25 10 *", berlin, utc(2026, 1, 1, 0, 0, 0), []time.Time{
			utc(2026, 10, 25, 0, 30, 0), utc(2027, 10, 25, 0, 30, 0), // 2027 changes on the 31st
		}},
		{"Berlin autumn day, from the spring before", "*/30 2 25 10 *", berlin, utc(2026, 3, 1, 0, 0, 0), []time.Time{
			utc(2026, 10, 25, 0, 0, 0), utc(2026, 10, 25, 0, 30, 0), utc(2027, 10, 25, 0, 0, 0),
		}},
		{"New York daily, missing", "30 2 * * *", ny, utc(2026, 3, 7, 12, 0, 0), []time.Time{
			utc(2026, 3, 8, 7, 0, 0),  // 03:00 EDT
			utc(2026, 3, 9, 6, 30, 0), // 02:30 EDT
		}},
		{"New York daily, repeated", "30 1 * * *", ny, utc(2026, 10, 31, 12, 0, 0), []time.Time{
			utc(2026, 11, 1, 5, 30, 0), // 01:30 EDT
			utc(2026, 11, 2, 6, 30, 0), // 01:30 EST
		}},
		{"New York hourly, spring", "0 * * * *", ny, utc(2026, 3, 8, 5, 30, 0), []time.Time{
			utc(2026, 3, 8, 6, 0, 0), utc(2026, 3, 8, 7, 0, 0), utc(2026, 3, 8, 8, 0, 0),
		}},
		{"New York half past every hour, spring", "30 * * * *", ny, utc(2026, 3, 8, 5, 45, 0), []time.Time{
			utc(2026, 3, 8, 6, 30, 0), // 01:30 EST
			utc(2026, 3, 8, 7, 30, 0), // 03:30 EDT; 02:30 never happened
		}},
		{"New York hourly, autumn", "0 * * * *", ny, utc(2026, 11, 1, 4, 30, 0), []time.Time{
			utc(2026, 11, 1, 5, 0, 0), // 01:00 EDT
			utc(2026, 11, 1, 6, 0, 0), // 01:00 EST
			utc(2026, 11, 1, 7, 0, 0), // 02:00 EST
		}},
		{"New York @daily unaffected", "@daily", ny, utc(2026, 3, 7, 12, 0, 0), []time.Time{
			utc(2026, 3, 8, 5, 0, 0), utc(2026, 3, 9, 4, 0, 0),
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := NextN(mustParse(t, tc.spec, tc.loc), tc.from, len(tc.want))
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("%q in %v from %v:\n got %v\nwant %v", tc.spec, tc.loc, tc.from, got, tc.want)
			}
		})
	}
}

// firesPerLocalDay counts the fires of s from the start of year y to the end
// of it, per local calendar date.
func firesPerLocalDay(s Schedule, loc *time.Location, y int) map[string]int {
	counts := map[string]int{}
	end := time.Date(y+1, 1, 1, 0, 0, 0, 0, loc)
	for at := s.Next(time.Date(y, 1, 1, 0, 0, 0, 0, loc).Add(-time.Second)); at.Before(end); at = s.Next(at) {
		counts[at.In(loc).Format(time.DateOnly)]++
	}
	return counts
}

// Daily specs fire exactly once on every local day of the year, at every
// hour and minute, including the days the clocks change; in Lord Howe the
// clocks move by half an hour, in São Paulo (2018) midnight was skipped.
func TestDailySpecsFireOncePerLocalDay(t *testing.T) {
	t.Parallel()
	for _, zone := range []struct {
		name string
		year int
	}{{"Europe/Berlin", 2026}, {"America/New_York", 2026}, {"Australia/Lord_Howe", 2026}, {"America/Sao_Paulo", 2018}} {
		t.Run(zone.name, func(t *testing.T) {
			t.Parallel()
			loc := mustLoc(t, zone.name)
			days := time.Date(zone.year+1, 1, 1, 12, 0, 0, 0, time.UTC).Sub(time.Date(zone.year, 1, 1, 12, 0, 0, 0, time.UTC)) / (24 * time.Hour)
			for h := range 24 {
				for _, m := range []int{0, 15, 30, 59} {
					spec := fmt.Sprintf("%d %d * * *", m, h)
					counts := firesPerLocalDay(mustParse(t, spec, loc), loc, zone.year)
					if len(counts) != int(days) {
						t.Errorf("%q fired on %d days of %d, want %d", spec, len(counts), zone.year, days)
					}
					for day, n := range counts {
						if n != 1 {
							t.Errorf("%q fired %d times on %s", spec, n, day)
						}
					}
				}
			}
		})
	}
}

func TestHourlyAndMinutelySpecsFollowTheClock(t *testing.T) {
	t.Parallel()
	berlin := mustLoc(t, "Europe/Berlin")
	tests := []struct {
		spec                   string
		normal, spring, autumn int // fires per local day
	}{
		{"0 * * * *", 24, 23, 25},    // every hour: by instant
		{"*/30 * * * *", 48, 46, 50}, // every half hour: by instant
		{"* 2 * * *", 60, 1, 60},     // every minute of 02:xx: by wall time
		{"0 0-3 * * *", 4, 3, 4},     // 02:00 merges with 03:00 in spring
		{"0 */2 * * *", 12, 12, 12},  // a step over hours: by wall time
		{"0 0 * * * *", 24, 23, 25},  // 6-field, every hour
		{"@daily", 1, 1, 1},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			t.Parallel()
			c := firesPerLocalDay(mustParse(t, tc.spec, berlin), berlin, 2026)
			if c["2026-06-01"] != tc.normal || c["2026-03-29"] != tc.spring || c["2026-10-25"] != tc.autumn {
				t.Fatalf("fires per day: normal %d spring %d autumn %d, want %d %d %d",
					c["2026-06-01"], c["2026-03-29"], c["2026-10-25"], tc.normal, tc.spring, tc.autumn)
			}
		})
	}
}

// The wall-clock rule in a zone whose clocks moved at midnight: the day's
// midnight fire happens at 01:00, when the clock jumped there.
func TestMidnightGap(t *testing.T) {
	t.Parallel()
	sp := mustLoc(t, "America/Sao_Paulo") // 2018-11-04 00:00 -03 → 01:00 -02
	got := NextN(mustParse(t, "@daily", sp), time.Date(2018, 11, 3, 12, 0, 0, 0, sp), 2)
	want := []time.Time{utc(2018, 11, 4, 3, 0, 0), utc(2018, 11, 5, 2, 0, 0)}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
}

// Samoa skipped 2011-12-30 altogether: a one-day gap. Daily specs fire for it
// once, when the clock jumped (midnight starting the 31st); hourly specs
// just carry on.
func TestSkippedDay(t *testing.T) {
	t.Parallel()
	apia := mustLoc(t, "Pacific/Apia") // 2011-12-29 24:00 -10 → 2011-12-31 00:00 +14
	from := time.Date(2011, 12, 29, 8, 0, 0, 0, apia)
	for _, tc := range []struct {
		spec string
		want []time.Time
	}{
		{"0 9 * * *", []time.Time{
			time.Date(2011, 12, 29, 9, 0, 0, 0, apia), time.Date(2011, 12, 31, 0, 0, 0, 0, apia), time.Date(2011, 12, 31, 9, 0, 0, 0, apia),
		}},
		{"0 9,18 * * *", []time.Time{
			time.Date(2011, 12, 29, 9, 0, 0, 0, apia), time.Date(2011, 12, 29, 18, 0, 0, 0, apia),
			time.Date(2011, 12, 31, 0, 0, 0, 0, apia), time.Date(2011, 12, 31, 9, 0, 0, 0, apia),
		}},
	} {
		got := NextN(mustParse(t, tc.spec, apia), from, len(tc.want))
		for i := range tc.want {
			if i >= len(got) || !got[i].Equal(tc.want[i]) {
				t.Fatalf("%q: got %v, want %v", tc.spec, got, tc.want)
			}
		}
	}
	hourly := NextN(mustParse(t, "0 * * * *", apia), time.Date(2011, 12, 29, 22, 30, 0, 0, apia), 3)
	if want := time.Date(2011, 12, 31, 0, 0, 0, 0, apia); !hourly[1].Equal(want) || hourly[2].Sub(hourly[1]) != time.Hour {
		t.Fatalf("hourly across the skipped day: %v", hourly)
	}
}

// Specs that fire every hour but on few days, asked from months before:
// Next skips the periods in between, and must still land on the first fire
// of the day, in a repeated or a skipped hour too. Checked minute by minute
// against the oracle over the days that fire.
func TestHourlyOnRareDaysFromFarAway(t *testing.T) {
	t.Parallel()
	for _, zone := range []string{"Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Pacific/Chatham"} {
		loc := mustLoc(t, zone)
		for _, spec := range []string{"30 * 25 10 *", "0,30 * 29 3 *", "15 * L 3,10 *", "0 * * 10,11 SUN#1", "* * 5 4 *"} {
			o, s := oracleOf(t, spec), mustParse(t, spec, loc)
			from := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
			fires := NextN(s, from, 200)
			if len(fires) != 200 {
				t.Fatalf("%q in %s: %d fires", spec, zone, len(fires))
			}
			// Every minute between two fires (from a day before a fire
			// when they are further apart) is no fire by the oracle; each
			// fire is one.
			prev := from.Unix()
			for _, f := range fires {
				lo := max(prev, f.Unix()-86400)
				for m := lo - lo%60 + 60; m < f.Unix(); m += 60 {
					if m > prev && oracleFires(o, loc, m) {
						t.Fatalf("%q in %s: Next(%v) = %v skips %v", spec, zone, time.Unix(prev, 0).In(loc), f.In(loc), time.Unix(m, 0).In(loc))
					}
				}
				if !oracleFires(o, loc, f.Unix()) {
					t.Fatalf("%q in %s: %v is no fire by the oracle", spec, zone, f.In(loc))
				}
				prev = f.Unix()
			}
		}
	}
}
