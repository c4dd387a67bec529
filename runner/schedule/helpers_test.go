package schedule

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
	_ "time/tzdata" // the same zone rules on every machine that runs the tests

	"github.com/robfig/cron/v3"
	"pgregory.net/rapid"
)

// TestMain pins rapid's seed so that plain `go test` is deterministic. Pass
// -rapid.seed=0 (random) or another seed, and -rapid.checks=N, to explore.
func TestMain(m *testing.M) {
	flag.Parse()
	set := map[string]bool{}
	flag.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["rapid.seed"] && os.Getenv("RAPID_SEED") == "" {
		_ = flag.Set("rapid.seed", "20260329")
	}
	if !set["rapid.nofailfile"] && os.Getenv("RAPID_NOFAILFILE") == "" {
		_ = flag.Set("rapid.nofailfile", "true") // don't write testdata/ on failure
	}
	os.Exit(m.Run())
}

// tb is what the helpers need from *testing.T and *rapid.T alike.
type tb interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
}

func mustLoc(tb tb, name string) *time.Location {
	tb.Helper()
	loc, err := time.LoadLocation(name)
	if err != nil {
		tb.Fatal(err)
	}
	return loc
}

func mustParse(tb tb, spec string, loc *time.Location) Schedule {
	tb.Helper()
	s, err := Parse(spec, loc)
	if err != nil {
		tb.Fatalf("Parse(%q): %v", spec, err)
	}
	return s
}

// robfigParser is the parser robfig/cron v3 offers for optional seconds,
// which this package used before it had its own; the differential tests and
// benchmarks compare with it.
var robfigParser = cron.NewParser(
	cron.SecondOptional | cron.Minute | cron.Hour | cron.Dom | cron.Month | cron.Dow | cron.Descriptor,
)

// specOf parses spec with robfig's parser.
func specOf(tb tb, spec string) *cron.SpecSchedule {
	tb.Helper()
	s, err := robfigParser.Parse(spec)
	if err != nil {
		tb.Fatalf("robfig Parse(%q): %v", spec, err)
	}
	return s.(*cron.SpecSchedule)
}

// oracle is a cron spec as the tests' oracle reads it: the fields as text,
// evaluated term by term against a wall-clock time with package time. It
// shares no code with the parser or the matcher, and is slow and plain on
// purpose.
type oracle struct {
	spec             string
	terms            [6][]string // second, minute, hour, day-of-month, month, day-of-week
	domStar, dowStar bool
	byInstant        bool // the hour field covers all 24 hours
	// The values each time field lists, read off the terms once (the
	// tests call match millions of times), and dayMatch's answers.
	secs, mins, hours, months [60]bool
	days                      sync.Map // [3]int{y, m, d} -> bool
}

var oracleDescriptors = map[string]string{
	"@yearly": "0 0 0 1 1 *", "@annually": "0 0 0 1 1 *", "@monthly": "0 0 0 1 * *",
	"@weekly": "0 0 0 * * 0", "@daily": "0 0 0 * * *", "@midnight": "0 0 0 * * *", "@hourly": "0 0 * * * *",
}

var oracleNames = map[string]int{
	"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6, "jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
	"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6,
}

func oracleOf(tb tb, spec string) *oracle {
	tb.Helper()
	text := spec
	if d, ok := oracleDescriptors[strings.ToLower(spec)]; ok {
		text = d
	}
	f := strings.Fields(text)
	if len(f) == 5 {
		f = append([]string{"0"}, f...)
	}
	if len(f) != 6 {
		tb.Fatalf("oracle: %q has %d fields", spec, len(f))
	}
	o := &oracle{spec: spec}
	for i := range f {
		o.terms[i] = strings.Split(f[i], ",")
	}
	isStar := func(terms []string) bool {
		for _, t := range terms {
			if t == "*" || t == "?" || t == "*/1" || t == "?/1" {
				return true
			}
		}
		return false
	}
	o.domStar, o.dowStar = isStar(o.terms[3]), isStar(o.terms[5])
	for v := range 60 {
		o.secs[v], o.mins[v] = o.any(0, v, 0, 59), o.any(1, v, 0, 59)
		o.hours[v] = v < 24 && o.any(2, v, 0, 23)
		o.months[v] = v >= 1 && v <= 12 && o.any(4, v, 1, 12)
	}
	o.byInstant = true
	for h := range 24 {
		o.byInstant = o.byInstant && o.hours[h]
	}
	return o
}

func oracleValue(s string) int {
	if v, ok := oracleNames[strings.ToLower(s)]; ok {
		return v
	}
	v, err := strconv.Atoi(s)
	if err != nil {
		panic(fmt.Sprintf("oracle: bad value %q", s))
	}
	return v
}

// has reports whether the plain term (*, ?, N, N-M, each with an optional
// /step) lists v, in a field whose "*" runs from lo to hi. Day-of-week
// values are compared modulo 7 (7 is Sunday).
func has(term string, v, lo, hi int, mod7 bool) bool {
	rng, stepText, hasStep := strings.Cut(term, "/")
	step := 1
	if hasStep {
		step = oracleValue(stepText)
	}
	a, b := lo, hi
	if rng != "*" && rng != "?" {
		from, to, isRange := strings.Cut(rng, "-")
		a = oracleValue(from)
		switch {
		case isRange:
			b = oracleValue(to)
		case hasStep: // N/step: from N to the end of the field
			b = max(a, hi)
		default:
			b = a
		}
	}
	for x := a; x <= b; x += step {
		if x == v || mod7 && x%7 == v {
			return true
		}
	}
	return false
}

// any reports whether some plain term of field i lists v.
func (o *oracle) any(i, v, lo, hi int) bool {
	for _, t := range o.terms[i] {
		if has(t, v, lo, hi, false) {
			return true
		}
	}
	return false
}

// date is a calendar date, for day arithmetic free of time zones.
func date(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 12, 0, 0, 0, time.UTC) }

func lastDay(y int, m time.Month) int { return date(y, m+1, 0).Day() }

func isWeekend(t time.Time) bool { return t.Weekday() == time.Saturday || t.Weekday() == time.Sunday }

// match reports whether the wall-clock time w (read in its own location)
// matches.
func (o *oracle) match(w time.Time) bool {
	y, m, d := w.Date()
	if !o.months[m] || !o.hours[w.Hour()] || !o.mins[w.Minute()] || !o.secs[w.Second()] {
		return false
	}
	key := [3]int{y, int(m), d}
	if v, ok := o.days.Load(key); ok {
		return v.(bool)
	}
	ok := o.dayMatch(y, m, d)
	o.days.Store(key, ok)
	return ok
}

// dayMatch applies the day-of-month and day-of-week fields to a date.
func (o *oracle) dayMatch(y int, m time.Month, d int) bool {
	day := date(y, m, d)
	last := lastDay(y, m)
	domMatch := false
	for _, t := range o.terms[3] {
		u := strings.ToUpper(t)
		switch {
		case u == "L":
			domMatch = domMatch || d == last
		case strings.HasPrefix(u, "L-"):
			domMatch = domMatch || d == last-oracleValue(u[2:])
		case u == "LW":
			lw := date(y, m, last)
			for isWeekend(lw) {
				lw = lw.AddDate(0, 0, -1)
			}
			domMatch = domMatch || d == lw.Day()
		case strings.HasSuffix(u, "W"):
			n := oracleValue(u[:len(u)-1])
			if n > last {
				continue // the month has no nth
			}
			target := date(y, m, n)
			switch target.Weekday() {
			case time.Saturday:
				if target = target.AddDate(0, 0, -1); target.Month() != m {
					target = target.AddDate(0, 0, 3)
				}
			case time.Sunday:
				if target = target.AddDate(0, 0, 1); target.Month() != m {
					target = target.AddDate(0, 0, -3)
				}
			}
			domMatch = domMatch || d == target.Day()
		default:
			domMatch = domMatch || has(t, d, 1, 31, false)
		}
	}
	dowMatch := false
	wd := int(day.Weekday())
	for _, t := range o.terms[5] {
		u := strings.ToUpper(t)
		switch {
		case strings.Contains(u, "#"):
			n, k, _ := strings.Cut(u, "#")
			if oracleValue(n)%7 != wd {
				continue
			}
			count := 0 // how many of this weekday in the month up to d
			for x := d; x >= 1; x -= 7 {
				count++
			}
			dowMatch = dowMatch || count == oracleValue(k)
		case len(u) > 1 && strings.HasSuffix(u, "L"):
			dowMatch = dowMatch || oracleValue(u[:len(u)-1])%7 == wd && day.AddDate(0, 0, 7).Month() != m
		default:
			dowMatch = dowMatch || has(t, wd, 0, 6, true)
		}
	}
	if o.domStar || o.dowStar {
		return domMatch && dowMatch
	}
	return domMatch || dowMatch
}

// oracleFires decides by brute force, following the package doc's rules,
// whether the whole-second instant sec is a fire time of o in loc.
func oracleFires(o *oracle, loc *time.Location, sec int64) bool {
	w := time.Unix(sec, 0).In(loc)
	if o.match(w) && (o.byInstant || firstOccurrence(loc, sec)) {
		return true
	}
	if o.byInstant {
		return false
	}
	// Does the clock jump forward at sec? Then sec fires for every matching
	// wall time it skipped.
	_, offNow := w.Zone()
	_, offPrev := time.Unix(sec-1, 0).In(loc).Zone()
	for c := sec + int64(offPrev); c < sec+int64(offNow); c++ {
		if o.match(time.Unix(c, 0).UTC()) {
			return true
		}
	}
	return false
}

// firstOccurrence reports whether no earlier instant shows the same wall time.
func firstOccurrence(loc *time.Location, sec int64) bool {
	w := time.Unix(sec, 0).In(loc)
	_, off := w.Zone()
	civil := sec + int64(off)
	for _, probe := range []int64{sec - 86400, sec + 86400} {
		_, o := time.Unix(probe, 0).In(loc).Zone()
		if earlier := civil - int64(o); earlier < sec {
			if _, o2 := time.Unix(earlier, 0).In(loc).Zone(); o2 == o {
				return false
			}
		}
	}
	return true
}

// Generators of valid robfig cron expressions.

var monthNames = []string{"", "JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"}
var dowNames = []string{"SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"}

func genValue(t *rapid.T, label string, lo, hi int, names []string) (int, string) {
	v := rapid.IntRange(lo, hi).Draw(t, label)
	if v < len(names) && rapid.IntRange(0, 2).Draw(t, label+"-named") == 0 {
		n := names[v]
		switch rapid.IntRange(0, 2).Draw(t, label+"-case") {
		case 1:
			n = strings.ToLower(n)
		case 2:
			n = n[:1] + strings.ToLower(n[1:])
		}
		return v, n
	}
	return v, fmt.Sprint(v)
}

func genTerm(t *rapid.T, label string, lo, hi int, names []string, question bool) string {
	switch rapid.IntRange(0, 9).Draw(t, label+"-kind") {
	case 0, 1:
		if question && rapid.Bool().Draw(t, label+"-q") {
			return "?"
		}
		return "*"
	case 2, 3:
		_, s := genValue(t, label, lo, hi, names)
		return s
	case 4, 5:
		a, as := genValue(t, label+"-from", lo, hi, names)
		_, bs := genValue(t, label+"-to", a, hi, names)
		return as + "-" + bs
	case 6:
		return fmt.Sprintf("*/%d", rapid.IntRange(1, hi-lo+1).Draw(t, label+"-step"))
	case 7:
		a, as := genValue(t, label+"-from", lo, hi, nil)
		return fmt.Sprintf("%s/%d", as, rapid.IntRange(1, hi-a+1).Draw(t, label+"-step"))
	default:
		a, as := genValue(t, label+"-from", lo, hi, nil)
		_, bs := genValue(t, label+"-to", a, hi, nil)
		return fmt.Sprintf("%s-%s/%d", as, bs, rapid.IntRange(1, hi-lo+1).Draw(t, label+"-step"))
	}
}

func genField(t *rapid.T, label string, lo, hi int, names []string, question bool, special func(*rapid.T, string) string) string {
	n := rapid.IntRange(1, 3).Draw(t, label+"-terms")
	terms := make([]string, n)
	for i := range terms {
		l := fmt.Sprintf("%s%d", label, i)
		if special != nil && rapid.IntRange(0, 2).Draw(t, l+"-special") == 0 {
			terms[i] = special(t, l)
			continue
		}
		terms[i] = genTerm(t, l, lo, hi, names, question)
	}
	return strings.Join(terms, ",")
}

// syntax selects what genSpec draws.
type syntax int

const (
	// The zero syntax is what robfig/cron v3 parses and reads as written;
	// no test draws it (the differential tests respell vixieSyntax).
	_ syntax = iota
	// vixieSyntax adds day-of-week 7 (Sunday) and descriptors in any case,
	// which robfig reads once respelled (robfigSpelling).
	vixieSyntax
	// fullSyntax adds L, L-n, LW and nW in day-of-month, nL and n#k in
	// day-of-week, which robfig does not have.
	fullSyntax
)

func anyCase(t *rapid.T, label, s string) string {
	switch rapid.IntRange(0, 3).Draw(t, label+"-case") {
	case 1:
		return strings.ToUpper(s)
	case 2:
		return strings.ToUpper(s[:len(s)/2]) + s[len(s)/2:]
	case 3:
		return strings.ToLower(s)
	}
	return s
}

func genDomSpecial(t *rapid.T, label string) string {
	switch rapid.IntRange(0, 3).Draw(t, label+"-kind") {
	case 0:
		return anyCase(t, label, "l")
	case 1:
		return fmt.Sprintf("L-%d", rapid.IntRange(0, 30).Draw(t, label+"-n"))
	case 2:
		return anyCase(t, label, "lw")
	default:
		return fmt.Sprintf("%dW", rapid.IntRange(1, 31).Draw(t, label+"-n"))
	}
}

func genDowSpecial(t *rapid.T, label string) string {
	_, day := genValue(t, label+"-day", 0, 6, dowNames)
	if rapid.IntRange(0, 6).Draw(t, label+"-seven") == 0 {
		day = "7"
	}
	if rapid.Bool().Draw(t, label+"-last") {
		return day + anyCase(t, label, "L")
	}
	return fmt.Sprintf("%s#%d", day, rapid.IntRange(1, 5).Draw(t, label+"-nth"))
}

// genSpec draws a cron spec: seconds optional, ranges, steps, lists, names,
// descriptors, and what syn adds. With dstHours, the hour field mostly
// sticks to the hours in which clocks change, so the DST rules get
// exercised.
func genSpec(t *rapid.T, dstHours bool, syn syntax) string {
	if rapid.IntRange(0, 19).Draw(t, "descriptor") == 0 {
		d := rapid.SampledFrom([]string{"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}).Draw(t, "desc")
		if syn >= vixieSyntax {
			d = anyCase(t, "desc", d)
		}
		return d
	}
	hour := genField(t, "hour", 0, 23, nil, false, nil)
	if dstHours && rapid.IntRange(0, 3).Draw(t, "dst-hour") > 0 {
		hour = rapid.SampledFrom([]string{"2", "1", "3", "1-3", "2,3", "*/2", "0-2", "1/1", "*"}).Draw(t, "hour-dst")
	}
	dowHi := 6
	var domSpecial, dowSpecial func(*rapid.T, string) string
	if syn >= vixieSyntax {
		dowHi = 7
	}
	if syn == fullSyntax {
		domSpecial, dowSpecial = genDomSpecial, genDowSpecial
	}
	fields := []string{
		genField(t, "min", 0, 59, nil, false, nil),
		hour,
		genField(t, "dom", 1, 31, nil, true, domSpecial),
		genField(t, "month", 1, 12, monthNames, false, nil),
		genField(t, "dow", 0, dowHi, dowNames, true, dowSpecial),
	}
	if rapid.Bool().Draw(t, "seconds") {
		fields = append([]string{genField(t, "sec", 0, 59, nil, false, nil)}, fields...)
	}
	return strings.Join(fields, " ")
}

// robfigSpelling respells a vixieSyntax spec for robfig: descriptors in
// lower case, and day-of-week terms that mention 7 as the list of days they
// stand for (the oracle's reading, 7 being Sunday).
func robfigSpelling(spec string) string {
	if strings.HasPrefix(spec, "@") {
		return strings.ToLower(spec)
	}
	f := strings.Fields(spec)
	dow := strings.Split(f[len(f)-1], ",")
	for i, term := range dow {
		if !strings.Contains(term, "7") {
			continue
		}
		var days []string
		for d := range 7 {
			if has(term, d, 0, 6, true) {
				days = append(days, strconv.Itoa(d))
			}
		}
		dow[i] = strings.Join(days, ",")
	}
	f[len(f)-1] = strings.Join(dow, ",")
	return strings.Join(f, " ")
}
