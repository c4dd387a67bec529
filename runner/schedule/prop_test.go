package schedule

import (
	"fmt"
	"math/big"
	"testing"
	"time"

	"pgregory.net/rapid"
)

var propZones = []string{"UTC", "Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "America/Sao_Paulo"}

// 2026 transitions of the zones above (São Paulo: 2018, its last years of DST).
var transitions = []time.Time{
	utc(2026, 3, 29, 1, 0, 0), utc(2026, 10, 25, 1, 0, 0), // Berlin
	utc(2026, 3, 8, 7, 0, 0), utc(2026, 11, 1, 6, 0, 0), // New York
	utc(2026, 4, 4, 15, 0, 0), utc(2026, 10, 3, 15, 30, 0), // Lord Howe
	utc(2018, 11, 4, 3, 0, 0), utc(2019, 2, 17, 2, 0, 0), // São Paulo
}

// drawStart draws a start time, half of the time within three hours of a
// daylight-saving transition.
func drawStart(t *rapid.T) time.Time {
	if rapid.Bool().Draw(t, "near-transition") {
		tr := rapid.SampledFrom(transitions).Draw(t, "transition")
		return tr.Add(time.Duration(rapid.Int64Range(-3*3600, 3*3600).Draw(t, "offset")) * time.Second).
			Add(time.Duration(rapid.Int64Range(0, 999_999_999).Draw(t, "nanos")))
	}
	return time.Unix(rapid.Int64Range(1_500_000_000, 2_000_000_000).Draw(t, "start"), 0).UTC()
}

// Next(t) > t, and a chain of fires strictly increases.
func TestPropertyNextStrictlyIncreases(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		spec := genSpec(t, true, fullSyntax)
		loc := mustLoc(t, rapid.SampledFrom(propZones).Draw(t, "zone"))
		s := mustParse(t, spec, loc)
		at := drawStart(t)
		for i := range 40 {
			next := s.Next(at)
			if next.IsZero() {
				return
			}
			if !next.After(at) {
				t.Fatalf("%q in %v: fire %d: Next(%v) = %v, not after", spec, loc, i, at, next)
			}
			if next.Nanosecond() != 0 {
				t.Fatalf("%q: Next(%v) = %v, not a whole second", spec, at, next)
			}
			at = next
		}
	})
}

// No slot is skipped: every whole second in (t, Next(t)) is, by a brute-force
// oracle that follows the package doc's DST rules, not a fire time, and
// Next(t) is one. The scan covers at most three hours past t.
func TestPropertyNoSlotSkipped(t *testing.T) {
	t.Parallel()
	const window = 3 * 3600
	rapid.Check(t, func(t *rapid.T) {
		spec := genSpec(t, true, fullSyntax)
		zone := rapid.SampledFrom(propZones).Draw(t, "zone")
		loc := mustLoc(t, zone)
		sp := oracleOf(t, spec)
		at := drawStart(t)
		next := mustParse(t, spec, loc).Next(at)
		end := at.Unix() + window
		if !next.IsZero() && next.Unix() <= end {
			end = next.Unix() - 1
			if !oracleFires(sp, loc, next.Unix()) {
				t.Fatalf("%q in %s: Next(%v) = %v, which the oracle says is not a fire time", spec, zone, at, next)
			}
		}
		for sec := at.Unix() + 1; sec <= end; sec++ {
			if oracleFires(sp, loc, sec) {
				t.Fatalf("%q in %s: Next(%v) = %v skips %v", spec, zone, at, next, time.Unix(sec, 0).In(loc))
			}
		}
	})
}

// Next of any instant between two consecutive fires is the later fire.
func TestPropertyNextFromBetweenFires(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		spec := genSpec(t, true, fullSyntax)
		loc := mustLoc(t, rapid.SampledFrom(propZones).Draw(t, "zone"))
		s := mustParse(t, spec, loc)
		a := s.Next(drawStart(t))
		b := s.Next(a)
		if b.IsZero() {
			return
		}
		mid := a.Add(time.Duration(rapid.Int64Range(0, int64(b.Sub(a))-1).Draw(t, "between")))
		if got := s.Next(mid); !got.Equal(b) {
			t.Fatalf("%q in %v: fires %v, %v; Next(%v) = %v", spec, loc, a, b, mid, got)
		}
	})
}

// @every D fires at multiples of D since the Unix epoch, within D of t.
func TestPropertyEveryIsEpochAligned(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		var d time.Duration
		if rapid.Bool().Draw(t, "whole-seconds") {
			d = time.Duration(rapid.Int64Range(1, 30*86400).Draw(t, "seconds")) * time.Second
		} else {
			d = time.Duration(rapid.Int64Range(1, 1<<50).Draw(t, "nanoseconds"))
		}
		at := time.Unix(rapid.Int64Range(-60_000_000_000, 200_000_000_000).Draw(t, "sec"), rapid.Int64Range(0, 999_999_999).Draw(t, "nsec"))
		next := Every(d).Next(at)
		if !next.After(at) || next.Sub(at) > d {
			t.Fatalf("Every(%v).Next(%v) = %v: not in (t, t+d]", d, at, next)
		}
		ns := new(big.Int).Mul(big.NewInt(next.Unix()), big.NewInt(1e9))
		ns.Add(ns, big.NewInt(int64(next.Nanosecond())))
		if r := new(big.Int).Mod(ns, big.NewInt(int64(d))); r.Sign() != 0 {
			t.Fatalf("Every(%v).Next(%v) = %v: %v past a multiple of d", d, at, next, r)
		}
	})
}

// The parsed form agrees: "@every 90s" is Every(90s).
func TestPropertyParsedEveryIsEvery(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		d := time.Duration(rapid.Int64Range(1, 100_000).Draw(t, "seconds")) * time.Second
		s := mustParse(t, "@every "+d.String(), nil)
		at := time.Unix(rapid.Int64Range(0, 4_000_000_000).Draw(t, "sec"), 0)
		if got, want := s.Next(at), Every(d).Next(at); !got.Equal(want) {
			t.Fatalf("@every %v: %v, Every: %v", d, got, want)
		}
	})
}

// TestOracleAroundTransitions checks, exhaustively rather than by sampling,
// the specs most exposed to daylight saving: for every transition above, the
// oracle lists the fire times in the six hours around it, second by second,
// and Next from every minute (and a second before and after it) must give
// the next one on that list.
func TestOracleAroundTransitions(t *testing.T) {
	t.Parallel()
	specs := []string{
		"30 2 * * *", "30 1 * * *", "0 0 * * *", "0 * * * *", "30 * * * *", "*/15 2 * * *", "0 2,3 * * *",
		"* 1 * * *", "* 2 * * *", "1 * 2 * * *", "0 1-3 * * *", "0 */2 * * *", "*/20 * * * * *",
		"0 30 * * * *", "45 1,2 * * SUN", "0 0 0,1,2,3 * * *", "@daily",
	}
	zoneOf := []string{"Europe/Berlin", "Europe/Berlin", "America/New_York", "America/New_York",
		"Australia/Lord_Howe", "Australia/Lord_Howe", "America/Sao_Paulo", "America/Sao_Paulo"}
	const half = 3 * 3600
	for i, tr := range transitions {
		t.Run(zoneOf[i]+"/"+tr.Format(time.DateOnly), func(t *testing.T) {
			t.Parallel()
			loc := mustLoc(t, zoneOf[i])
			lo, hi := tr.Unix()-half, tr.Unix()+half
			for _, spec := range specs {
				sp, s := oracleOf(t, spec), mustParse(t, spec, loc)
				var fires []int64 // oracle fire times in (lo, hi]
				for sec := lo + 1; sec <= hi; sec++ {
					if oracleFires(sp, loc, sec) {
						fires = append(fires, sec)
					}
				}
				k := 0
				for start := lo + 1; start < hi; start += 60 {
					for _, at := range []int64{start - 1, start, start + 1} {
						for k > 0 && fires[k-1] > at {
							k--
						}
						for k < len(fires) && fires[k] <= at {
							k++
						}
						got := s.Next(time.Unix(at, 0))
						if k < len(fires) {
							if got.Unix() != fires[k] {
								t.Fatalf("%q: Next(%v) = %v, oracle %v", spec, time.Unix(at, 0).In(loc), got.In(loc), time.Unix(fires[k], 0).In(loc))
							}
						} else if !got.IsZero() && got.Unix() <= hi {
							t.Fatalf("%q: Next(%v) = %v, oracle: nothing before %v", spec, time.Unix(at, 0).In(loc), got.In(loc), time.Unix(hi, 0).In(loc))
						}
					}
				}
			}
		})
	}
}

// The day rule, new syntax included, agrees with the oracle on every day of
// 14 months from a random month in 1900–2500, and a spec the matcher calls
// "never" matches no day of a whole 400-year cycle by the oracle either.
func TestPropertyDayRuleAgreesWithOracle(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		spec := genSpec(t, false, fullSyntax)
		m, o := mustCron(t, spec), oracleOf(t, spec)
		y := rapid.IntRange(1900, 2500).Draw(t, "year")
		mo := time.Month(rapid.IntRange(1, 12).Draw(t, "month"))
		for range 14 {
			for d := 1; d <= lastDay(y, mo); d++ {
				if got, want := m.dayMatches(int64(y), int(mo), d), o.dayMatch(y, mo, d); got != want {
					t.Fatalf("%q on %04d-%02d-%02d (%v): matcher %v, oracle %v", spec, y, mo, d, date(y, mo, d).Weekday(), got, want)
				}
			}
			if mo++; mo > 12 {
				y, mo = y+1, 1
			}
		}
		if m.never() {
			for day := date(2000, 1, 1); day.Year() < 2400; day = day.AddDate(0, 0, 1) {
				if o.any(4, int(day.Month()), 1, 12) && o.dayMatch(day.Date()) {
					t.Fatalf("%q: the matcher says never, the oracle matches %v", spec, day.Format(time.DateOnly))
				}
			}
		}
	})
}

// Over 30 consecutive fires from a random start, each fire is one by the
// oracle and no local calendar day between two fires has a date that
// matches (each field has a value, so a matching date fires that day).
func TestPropertyNoDaySkipped(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		spec := genSpec(t, false, fullSyntax)
		zone := rapid.SampledFrom(propZones).Draw(t, "zone")
		loc := mustLoc(t, zone)
		o := oracleOf(t, spec)
		at := time.Unix(rapid.Int64Range(631_152_000, 3_900_000_000).Draw(t, "start"), 0).UTC()
		fires := NextN(mustParse(t, spec, loc), at, 30)
		if m := mustCron(t, spec); len(fires) == 0 && !m.never() {
			t.Fatalf("%q in %s: no fire after %v, and not a spec that never fires", spec, zone, at)
		}
		prev := at
		for _, f := range fires {
			if !oracleFires(o, loc, f.Unix()) {
				t.Fatalf("%q in %s: fire %v is not one by the oracle", spec, zone, f.In(loc))
			}
			// Days strictly between prev's local date and f's.
			for day := date(prev.In(loc).Date()).AddDate(0, 0, 1); day.Before(date(f.In(loc).Date())); day = day.AddDate(0, 0, 1) {
				if o.any(4, int(day.Month()), 1, 12) && o.dayMatch(day.Date()) {
					t.Fatalf("%q in %s: fires %v then %v, skipping %v", spec, zone, prev.In(loc), f.In(loc), day.Format(time.DateOnly))
				}
			}
			prev = f
		}
	})
}

func mustCron(tb tb, spec string) matcher {
	tb.Helper()
	m, err := parseCron(spec)
	if err != nil {
		tb.Fatalf("parseCron(%q): %v", spec, err)
	}
	return m
}

// never() against the oracle over a whole 400-year cycle, for specs drawn
// to be rare: one month, and day terms near the month's end or with L, W, #.
func TestPropertyNeverAgreesWithOracle(t *testing.T) {
	t.Parallel()
	rapid.Check(t, func(t *rapid.T) {
		mo := rapid.IntRange(1, 12).Draw(t, "month")
		dom := rapid.SampledFrom([]string{"*", "?", "29", "30", "31", "L", "L-27", "L-28", "L-29", "L-30", "29W", "30W", "31W", "LW", "1W"}).Draw(t, "dom")
		dow := rapid.SampledFrom([]string{"*", "?", "0#5", "6#5", "3#5", "1L", "MON#4"}).Draw(t, "dow")
		spec := fmt.Sprintf("0 0 %s %d %s", dom, mo, dow)
		o := oracleOf(t, spec)
		oracleNever := true
		for y := 2000; y < 2400 && oracleNever; y++ {
			for d := 1; d <= lastDay(y, time.Month(mo)); d++ {
				if o.dayMatch(y, time.Month(mo), d) {
					oracleNever = false
					break
				}
			}
		}
		m := mustCron(t, spec)
		if got := m.never(); got != oracleNever {
			t.Fatalf("%q: never() = %v, oracle %v", spec, got, oracleNever)
		}
	})
}
