// Package schedule computes when a job is due. It is pure: no I/O, no clocks of
// its own, no goroutines. Every replica that parses the same spec computes the
// same fire times, which is what lets the coordinator treat (job, fire time) as
// the identity of a slot.
//
// Supported specs:
//
//	"*/5 * * * * *"         6-field cron, seconds first
//	"30 2 * * *"            5-field cron (seconds = 0)
//	"@hourly", "@DAILY" …   cron descriptors, in any case
//	"@every 5s"             fixed interval, aligned to the Unix epoch
//	"at: 2026-12-01T09:00:00Z"  one-off at an RFC 3339 instant, a whole second
//
// Cron fields take values, ranges ("1-5"), steps ("*/15", "1-30/5", and
// "5/15" for 5 to the field's end), lists ("1,15,30"), JAN–DEC and SUN–SAT in
// any case, "*" and "?". Day-of-week 0 and 7 are both Sunday. Day-of-month
// also takes L (the month's last day), L-n (n days before it), LW (the last
// weekday, Monday to Friday) and nW (the weekday nearest the nth, within the
// month); day-of-week also takes nL (the last weekday n of the month: 5L,
// FRIL) and n#k (the kth weekday n: MON#1). Day-of-month and day-of-week
// are OR-ed when both are restricted, AND-ed when either is "*" or "?" (as
// in Vixie cron and robfig/cron). cron.go lists what is refused and why;
// docs/operations.md has the whole syntax for operators.
//
// The syntax is robfig/cron v3's with those additions, so a spec that
// parser accepted means the same here, except for what it misread and is
// now refused ("*-5", which it read as "*"). The fire times are computed by
// this package, which differs from robfig's SpecSchedule.Next in two ways:
// the daylight-saving rules below, and a search horizon of a whole 400-year
// calendar cycle, so rare dates ("0 0 29 2 *" across 2100, "0 0 * 2 MON#5"
// forty years apart) are found (robfig gives up after five years). A spec no
// date can match ("0 0 30 2 *") is known as such when parsed: NeverFires.
//
// All results are in UTC. Every fire time is a whole second: cron's, @every's
// (whose interval is whole seconds) and at:'s (a fraction is refused). So
// Next(t) is the first matching whole second strictly after t, whatever t's
// sub-second part (as in robfig/cron).
//
// # Time zones and daylight saving
//
// Cron specs are evaluated in the job's time zone, by its local wall clock.
// When the clock jumps, the rule depends on whether the spec fires every hour:
//
// Specs whose hour field covers all 24 hours ("*", "*/1", "0-23"; also
// @hourly) follow the clock instant by instant. They fire at every instant
// whose local wall time matches, so in a fall-back's repeated hour they fire
// twice ("0 * * * *" in Berlin on 2026-10-25 fires at 02:00 CEST and again at
// 02:00 CET, an hour apart) and in a spring-forward's missing hour not at all
// (it fires at 01:00 CET and then 03:00 CEST, an hour apart). The interval
// between fires stays the interval the spec describes.
//
// Every other spec (a fixed hour, a list, a range or a step over hours, and
// the @daily, @weekly, @monthly, @yearly descriptors) fires once for each
// matching local wall-clock time:
//
//   - A wall time that does not exist because the clock jumped over it fires
//     once, at the instant the clock jumped: "30 2 * * *" in Berlin on
//     2026-03-29 (02:00 CET → 03:00 CEST) fires at 03:00 CEST (01:00 UTC).
//     Several matching wall times inside the same gap ("*/15 2 * * *")
//     collapse into that one fire.
//   - A wall time that occurs twice because the clock went back fires once,
//     at its first occurrence: "30 2 * * *" in Berlin on 2026-10-25
//     (03:00 CEST → 02:00 CET) fires at 02:30 CEST (00:30 UTC) only.
//
// So a daily job is neither skipped nor doubled on the days the clocks change.
// robfig/cron/v3 itself skips the first case (the job does not run that day)
// and doubles the second. A day a zone skips altogether (Samoa's 2011-12-30)
// is one long gap: its wall times fire once, at the midnight that ends it.
// A gap's fire can coincide with a regular fire at the same instant
// ("0 2,3 * * *": 02:00 does not exist, 03:00 does); that is one fire.
//
// "@every" and "at:" name instants, not wall times, so time zones and
// daylight saving do not affect them.
//
// # Helpers
//
// NextN lists upcoming fire times (for `pacer validate`). Jitter spreads the
// start of a slot by a deterministic delay that every replica computes alike;
// the slot keeps its scheduled time as its identity.
package schedule

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"
	"time"
)

// Schedule yields a job's fire times.
type Schedule interface {
	// Next returns the first fire time strictly after t, or the zero time if
	// the schedule will never fire again.
	Next(t time.Time) time.Time
}

// ErrEmpty is returned for an empty spec.
var ErrEmpty = errors.New("schedule is empty")

// Parse parses spec. loc is the time zone cron fields are read in; nil means UTC.
func Parse(spec string, loc *time.Location) (Schedule, error) {
	spec = strings.TrimSpace(spec)
	if loc == nil {
		loc = time.UTC
	}
	switch {
	case spec == "":
		return nil, ErrEmpty
	case len(spec) >= len("@every") && strings.EqualFold(spec[:len("@every")], "@every"):
		arg := strings.TrimSpace(spec[len("@every"):])
		d, err := ParseDuration(arg)
		switch {
		case errors.Is(err, ErrDurationTooLarge):
			return nil, fmt.Errorf("@every %s: interval is too large: at most %s (about 292 years)", arg, MaxDuration.Truncate(time.Second))
		case err != nil:
			return nil, fmt.Errorf("@every needs a duration such as \"@every 5s\": %w", err)
		}
		if d < time.Second || d%time.Second != 0 {
			return nil, fmt.Errorf("@every %s: interval must be a whole number of seconds, at least 1s", d)
		}
		return Every(d), nil
	case strings.HasPrefix(spec, "at:"):
		arg := strings.TrimSpace(strings.TrimPrefix(spec, "at:"))
		t, err := time.Parse(time.RFC3339, arg)
		if err != nil {
			return nil, fmt.Errorf("at: needs an RFC 3339 time such as \"at: 2026-12-01T09:00:00Z\": %w", err)
		}
		if t.Nanosecond() != 0 {
			// Shown without its fraction (as `next` and `pacer jobs`
			// show fire times), it would read up to a second earlier
			// than it fires.
			whole := t.Truncate(time.Second)
			return nil, fmt.Errorf("at: %s has a fraction of a second; fire times are whole seconds, as cron's and @every's: write %q or %q",
				arg, "at: "+whole.Format(time.RFC3339), "at: "+whole.Add(time.Second).Format(time.RFC3339))
		}
		return At(t), nil
	case strings.HasPrefix(spec, "TZ=") || strings.HasPrefix(spec, "CRON_TZ="):
		return nil, errors.New("set the time zone with the job's timezone key, not a TZ= prefix")
	}
	m, err := parseCron(spec)
	if err != nil {
		return nil, fmt.Errorf("invalid cron expression %q: %w", spec, err)
	}
	return newCronSchedule(m, loc), nil
}

// NeverFires reports whether s can never fire, whatever the time: a cron
// spec that no date matches, such as "0 0 30 2 *" (30 February) or
// "0 0 L-29 2 *". A one-off time that has passed is not "never" by this
// test; Next tells that.
func NeverFires(s Schedule) bool {
	switch s := s.(type) {
	case cronSchedule:
		return s.never
	case Every:
		return s <= 0
	}
	return false
}

// NextN returns the next n fire times of s after after, fewer if s stops
// firing. It returns nil for a nil s or n <= 0.
func NextN(s Schedule, after time.Time, n int) []time.Time {
	if s == nil || n <= 0 {
		return nil
	}
	out := make([]time.Time, 0, n)
	for t := after; len(out) < n; {
		next := s.Next(t)
		if next.IsZero() || !next.After(t) {
			break
		}
		out = append(out, next)
		t = next
	}
	return out
}

// Every fires every d, at instants that are whole multiples of d since the Unix
// epoch, so every replica agrees on the slots without talking to the others.
// A d <= 0 never fires.
type Every time.Duration

// Next implements Schedule.
func (e Every) Next(t time.Time) time.Time {
	d := time.Duration(e)
	if d <= 0 {
		return time.Time{}
	}
	// r = (t - epoch) mod d, computed without overflow for any t: t - epoch
	// in nanoseconds is sec*1e9 + nsec, which does not fit an int64 outside
	// 1678–2262. (time.Time.Truncate is no help: it aligns to year 1, not
	// to the epoch, which differs for intervals such as 7s.)
	ud := uint64(d)
	sec := t.Unix()
	a := uint64(sec % int64(d))
	if sec%int64(d) < 0 {
		a = uint64(sec%int64(d) + int64(d))
	}
	hi, lo := bits.Mul64(a, uint64(time.Second)%ud)
	r := (bits.Rem64(hi, lo, ud) + uint64(t.Nanosecond())) % ud
	return t.Add(-time.Duration(r)).Add(d).UTC()
}

// At fires once.
type At time.Time

// Next implements Schedule.
func (a At) Next(t time.Time) time.Time {
	at := time.Time(a)
	if t.Before(at) {
		return at.UTC()
	}
	return time.Time{}
}

// cronSchedule is a cron spec evaluated in a time zone.
type cronSchedule struct {
	m   matcher
	loc *time.Location
	// byInstant selects the daylight-saving rule (see the package doc):
	// specs that fire every hour match instants, all others match wall
	// times once each.
	byInstant bool
	never     bool
}

func newCronSchedule(m matcher, loc *time.Location) cronSchedule {
	return cronSchedule{
		m:         m,
		loc:       loc,
		byInstant: m.hour&allHours == allHours,
		never:     m.never(),
	}
}

// maxPeriods bounds how many time-zone periods (stretches of constant UTC
// offset) Next walks through before giving up: a zone with daylight saving
// has two a year, and the matcher's search horizon is 401 years.
const maxPeriods = 4 * searchYears

// Next implements Schedule.
func (c cronSchedule) Next(t time.Time) time.Time {
	if c.never {
		return time.Time{}
	}
	// Work in whole Unix seconds. Instants are seconds since the epoch;
	// "civil" values are local wall-clock times written as seconds since
	// 1970-01-01T00:00:00 on the same wall clock (instant + UTC offset).
	start := t.Unix() + 1 // first whole second strictly after t
	var next int64
	var ok bool
	if c.byInstant {
		next, ok = c.nextByInstant(start)
	} else {
		next, ok = c.nextByWallTime(start)
	}
	if !ok {
		return time.Time{}
	}
	return time.Unix(next, 0).UTC()
}

// nextByInstant returns the first instant >= start whose wall clock matches.
func (c cronSchedule) nextByInstant(start int64) (int64, bool) {
	s := start
	for range maxPeriods {
		z := zoneAt(c.loc, s)
		cv, ok := c.m.next(s + z.off)
		if !ok {
			return 0, false
		}
		if at := cv - z.off; !z.hasEnd || at < z.end {
			return at, true
		}
		// The match lies beyond this period: look again from the next, or,
		// when it is far, from two days before it. No instant in
		// [s+2d, cv-1d) can match (UTC offsets are within a day): its wall
		// clock reads more than s+z.off, where cv is the first match, and
		// less than cv.
		next := z.end
		if z.end >= s+2*day && cv-2*day > z.end {
			next = cv - 2*day
		}
		s = next
	}
	return 0, false
}

const day = 86400 // seconds

// nextByWallTime returns the earliest f(cv) >= start over matching civil times
// cv, where f maps a civil time to its first occurrence, or to the end of the
// gap it falls in. f is non-decreasing, so the search starts from the least
// civil time whose f can be >= start.
func (c cronSchedule) nextByWallTime(start int64) (int64, bool) {
	z := zoneAt(c.loc, start)
	low := start + z.off
	if z.hasStart {
		prev := offsetAt(c.loc, z.start-1)
		switch {
		case prev > z.off && low < z.start+prev:
			// start is in the second run of a repeated hour: those wall
			// times fired at their first occurrence, before start.
			low = z.start + prev
		case prev < z.off && start == z.start:
			// start is the instant a gap ends, which is when the wall
			// times inside the gap fire.
			low = z.start + prev
		}
	}
	for range maxPeriods {
		cv, ok := c.m.next(low)
		if !ok {
			return 0, false
		}
		// Fast path: cv exists in start's period, so it is its own first
		// occurrence (an earlier one would lie before this period, and low
		// excludes those).
		if at := cv - z.off; at >= start && (!z.hasEnd || at < z.end) {
			return at, true
		}
		if at := firstInstant(c.loc, cv); at >= start {
			return at, true
		}
		low = cv + 1
	}
	return 0, false
}

// zone is the stretch of constant UTC offset containing an instant.
type zone struct {
	off              int64 // seconds east of UTC
	start, end       int64 // [start, end); valid only when hasStart / hasEnd
	hasStart, hasEnd bool
}

// maxBoundSteps bounds how far zoneStart and zoneEnd step past a bound that
// is on the wrong side of the instant (see zoneAt): a day in hour steps.
const maxBoundSteps = 48

// zoneAt returns the zone of sec in loc.
//
// It never trusts a bound of time.Time.ZoneBounds that is not on the right
// side of sec: beyond the last transition listed in a zone file, Go computes
// bounds from the zone's TZ rule and reports, in the last day of a leap year,
// an end of year that is not after the instant (it counts the year as 365
// days: golang/go#81583). Go's embedded zone data (time/tzdata) lists
// transitions only up to the present, so this happens on 31 December of
// every leap year from 2024 on; the system's zone files (Debian's, up to
// 2037) meet it from 2040 on. The offset Go reports for an instant is right
// even there, so such a bound is replaced by one found from offsets.
//
// Beyond the listed transitions Go also reports a bound at the start of
// every year, where the offset does not change. Those are harmless: every
// caller treats a bound with the same offset on both sides as no change.
func zoneAt(loc *time.Location, sec int64) zone {
	if loc == time.UTC {
		return zone{}
	}
	t := time.Unix(sec, 0).In(loc)
	_, off := t.Zone()
	s, e := t.ZoneBounds()
	z := zone{off: int64(off), start: s.Unix(), end: e.Unix(), hasStart: !s.IsZero(), hasEnd: !e.IsZero()}
	if z.hasEnd && z.end <= sec {
		z.end, z.hasEnd = zoneEnd(loc, sec, z.off)
	}
	if z.hasStart && z.start > sec {
		z.start, z.hasStart = zoneStart(loc, sec, z.off)
	}
	return z
}

// zoneEnd finds the end of the zone of sec, whose offset is off, when Go's
// bound cannot be used: it steps an hour at a time (the offset is off at
// every instant in [sec, p]) until the offset changes, or Go gives a bound
// after the step.
func zoneEnd(loc *time.Location, sec, off int64) (int64, bool) {
	p := sec
	for range maxBoundSteps {
		q := p + 3600
		if offsetAt(loc, q) != off {
			return firstChange(loc, p, q, off), true
		}
		p = q
		if _, e := time.Unix(p, 0).In(loc).ZoneBounds(); e.IsZero() {
			return 0, false
		} else if e.Unix() > p {
			return e.Unix(), true
		}
	}
	return p + 1, true // a bound at which the offset does not change
}

// zoneStart is the mirror image of zoneEnd, for a start after sec.
func zoneStart(loc *time.Location, sec, off int64) (int64, bool) {
	p := sec // the offset is off at every instant in [p, sec]
	for range maxBoundSteps {
		q := p - 3600
		if o := offsetAt(loc, q); o != off {
			return firstChange(loc, q, p, o), true
		}
		p = q
		if s, _ := time.Unix(p, 0).In(loc).ZoneBounds(); s.IsZero() {
			return 0, false
		} else if s.Unix() <= p {
			return s.Unix(), true
		}
	}
	return p, true
}

// firstChange returns the first instant in (lo, hi] whose offset is not off,
// given that the offset at lo is off and at hi is not.
func firstChange(loc *time.Location, lo, hi, off int64) int64 {
	for hi-lo > 1 {
		mid := lo + (hi-lo)/2
		if offsetAt(loc, mid) == off {
			lo = mid
		} else {
			hi = mid
		}
	}
	return hi
}

func offsetAt(loc *time.Location, sec int64) int64 {
	_, off := time.Unix(sec, 0).In(loc).Zone()
	return int64(off)
}

// firstInstant returns the first instant whose wall clock in loc reads cv, or,
// if the clock skips cv, the instant at which it skips it (the end of the gap).
func firstInstant(loc *time.Location, cv int64) int64 {
	guess := cv - offsetAt(loc, cv) // within hours of the answer
	z := zoneAt(loc, guess)
	offs, n := [3]int64{z.off}, 1
	if z.hasStart {
		offs[n], n = offsetAt(loc, z.start-1), n+1
	}
	if z.hasEnd {
		offs[n], n = offsetAt(loc, z.end), n+1
	}
	best, found := int64(0), false
	for _, o := range offs[:n] {
		if at := cv - o; offsetAt(loc, at) == o && (!found || at < best) {
			best, found = at, true
		}
	}
	if found {
		return best
	}
	// A gap: find the transition whose jump spans cv.
	for _, tr := range []struct {
		at int64
		ok bool
	}{{z.start, z.hasStart}, {z.end, z.hasEnd}} {
		if tr.ok && cv >= tr.at+offsetAt(loc, tr.at-1) && cv < tr.at+offsetAt(loc, tr.at) {
			return tr.at
		}
	}
	return guess // unreachable for real zone data
}
