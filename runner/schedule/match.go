package schedule

import "math/bits"

const allHours = 1<<24 - 1

// searchYears is how far ahead matcher.next looks. The Gregorian calendar
// repeats every 400 years (146,097 days, a whole number of weeks), so a spec
// that matches some date matches one within any 400 years; one that matches
// none is caught by never before any search.
const searchYears = 401

// matcher finds matching wall-clock times of a parsed cron spec. It works on
// civil time only (no zones), so it is exact; the daylight-saving rules are
// applied by cronSchedule on top.
type matcher struct {
	sec, min, hour, dom, month, dow uint64 // bit i set: value i matches
	domStar, dowStar                bool   // field was "*" or "?"

	// Day terms that depend on the month (cron.go), in their own fields:
	// they restrict day-of-month or day-of-week like the bit sets above.
	domFromEnd     uint32   // bit n: "L-n" ("L" is n = 0), n days before the month's last day
	domNearest     uint32   // bit n: "nW", the weekday (Monday to Friday) nearest the nth, within the month
	domLastWeekday bool     // "LW", the month's last weekday
	dowLast        uint8    // bit w: "wL", the last weekday w of the month
	dowNth         [7]uint8 // bit k of dowNth[w]: "w#k", the kth weekday w of the month
	special        bool     // any of the above
}

// never reports whether no date can ever match, such as "0 0 30 2 *" or
// "0 0 L-29 2 *". Which days of a month match depends only on the month's
// length and the weekday of its 1st, and every month takes each of the seven
// weekdays for its 1st (February both in leap and in common years) within
// any 400-year cycle, so it looks at each of those cases once.
func (m *matcher) never() bool {
	for mo := nextBit(m.month, 1, 12); mo > 0; mo = nextBit(m.month, mo+1, 12) {
		lengths := []int{daysIn(2001, mo)}
		if mo == 2 {
			lengths = append(lengths, 29)
		}
		for _, dim := range lengths {
			for first := range 7 {
				for d := 1; d <= dim; d++ {
					if m.dayMatchesIn(d, (first+d-1)%7, dim) {
						return false
					}
				}
			}
		}
	}
	return true
}

// dayMatches applies cron's day rule: day-of-month and day-of-week are OR-ed,
// unless either is "*", in which case both must match (as in robfig/cron).
func (m *matcher) dayMatches(y int64, mo, d int) bool {
	return m.dayMatchesIn(d, weekday(daysFromCivil(y, mo, d)), daysIn(y, mo))
}

// dayMatchesIn is dayMatches for day d, a weekday wd, of a month of dim days.
func (m *matcher) dayMatchesIn(d, wd, dim int) bool {
	domMatch := m.dom>>d&1 != 0
	dowMatch := m.dow>>wd&1 != 0
	if m.special {
		domMatch = domMatch || m.domSpecial(d, wd, dim)
		dowMatch = dowMatch || m.dowSpecial(d, wd, dim)
	}
	if m.domStar || m.dowStar {
		return domMatch && dowMatch
	}
	return domMatch || dowMatch
}

// domSpecial reports whether day d (weekday wd) of a month of dim days
// matches L-n, LW or nW.
func (m *matcher) domSpecial(d, wd, dim int) bool {
	if m.domFromEnd>>(dim-d)&1 != 0 {
		return true
	}
	if wd == 0 || wd == 6 {
		return false // LW and nW only ever give a weekday
	}
	wdOf := func(n int) int { return ((wd+n-d)%7 + 7) % 7 }
	if m.domLastWeekday && d == nearestWeekday(dim, wdOf(dim), dim) {
		return true
	}
	for n := max(1, d-2); n <= min(dim, d+2) && m.domNearest != 0; n++ {
		if m.domNearest>>n&1 != 0 && nearestWeekday(n, wdOf(n), dim) == d {
			return true
		}
	}
	return false
}

// nearestWeekday returns the weekday nearest day n (weekday wn) within its
// month of dim days: a Saturday moves to the Friday before, a Sunday to the
// Monday after, unless that leaves the month (Saturday the 1st: Monday the
// 3rd; Sunday the last: the Friday before).
func nearestWeekday(n, wn, dim int) int {
	switch {
	case wn == 6 && n == 1:
		return 3
	case wn == 6:
		return n - 1
	case wn == 0 && n == dim:
		return n - 2
	case wn == 0:
		return n + 1
	}
	return n
}

// dowSpecial reports whether day d (weekday wd) of a month of dim days
// matches nL or n#k.
func (m *matcher) dowSpecial(d, wd, dim int) bool {
	return m.dowLast>>wd&1 != 0 && d+7 > dim || m.dowNth[wd]>>((d-1)/7+1)&1 != 0
}

// next returns the least matching civil time >= cv (seconds since
// 1970-01-01T00:00:00 on the wall clock), or false if there is none within
// searchYears.
func (m *matcher) next(cv int64) (int64, bool) {
	days := floorDiv(cv, 86400)
	y, mo, d := civilFromDays(days)
	tod := int(cv - days*86400)
	h, mi, s := tod/3600, tod/60%60, tod%60
	limit := y + searchYears
	for y <= limit {
		if m.month>>mo&1 == 0 {
			if nm := nextBit(m.month, mo+1, 12); nm > 0 {
				mo = nm
			} else {
				y, mo = y+1, 1
			}
			d, h, mi, s = 1, 0, 0, 0
			continue
		}
		if d > daysIn(y, mo) {
			if mo++; mo > 12 {
				y, mo = y+1, 1
			}
			d, h, mi, s = 1, 0, 0, 0
			continue
		}
		if !m.dayMatches(y, mo, d) {
			d, h, mi, s = d+1, 0, 0, 0
			continue
		}
		if m.hour>>h&1 == 0 {
			nh := nextBit(m.hour, h+1, 23)
			if nh < 0 {
				d, h, mi, s = d+1, 0, 0, 0
				continue
			}
			h, mi, s = nh, 0, 0
		}
		if m.min>>mi&1 == 0 {
			nm := nextBit(m.min, mi+1, 59)
			if nm < 0 {
				h, mi, s = h+1, 0, 0 // h may become 24: the hour step moves on a day
				continue
			}
			mi, s = nm, 0
		}
		if m.sec>>s&1 == 0 {
			ns := nextBit(m.sec, s+1, 59)
			if ns < 0 {
				mi, s = mi+1, 0
				continue
			}
			s = ns
		}
		return daysFromCivil(y, mo, d)*86400 + int64(h*3600+mi*60+s), true
	}
	return 0, false
}

// nextBit returns the least set bit of mask in [from, max], or -1.
func nextBit(mask uint64, from, max int) int {
	if from > max {
		return -1
	}
	x := mask >> from
	if x == 0 {
		return -1
	}
	if n := from + bits.TrailingZeros64(x); n <= max {
		return n
	}
	return -1
}

func daysIn(y int64, mo int) int {
	switch mo {
	case 4, 6, 9, 11:
		return 30
	case 2:
		if y%4 == 0 && (y%100 != 0 || y%400 == 0) {
			return 29
		}
		return 28
	}
	return 31
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// daysFromCivil returns the number of days from 1970-01-01 to y-mo-d in the
// proleptic Gregorian calendar (Howard Hinnant's algorithm).
func daysFromCivil(y int64, mo, d int) int64 {
	if mo <= 2 {
		y--
	}
	era := floorDiv(y, 400)
	yoe := y - era*400
	doy := int64((153*((mo+9)%12)+2)/5 + d - 1)
	doe := yoe*365 + yoe/4 - yoe/100 + doy
	return era*146097 + doe - 719468
}

// civilFromDays is the inverse of daysFromCivil.
func civilFromDays(z int64) (y int64, mo, d int) {
	z += 719468
	era := floorDiv(z, 146097)
	doe := z - era*146097
	yoe := (doe - doe/1460 + doe/36524 - doe/146096) / 365
	doy := doe - (365*yoe + yoe/4 - yoe/100)
	mp := (5*doy + 2) / 153
	d = int(doy - (153*mp+2)/5 + 1)
	mo = int(mp + 3)
	if mo > 12 {
		mo -= 12
	}
	y = yoe + era*400
	if mo <= 2 {
		y++
	}
	return y, mo, d
}

// weekday returns the day of the week (0 = Sunday, as time.Weekday) of a day number from
// daysFromCivil; 1970-01-01 was a Thursday.
func weekday(days int64) int {
	w := (days + 4) % 7
	if w < 0 {
		w += 7
	}
	return int(w)
}
