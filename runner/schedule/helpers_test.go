package schedule

import (
	"flag"
	"fmt"
	"os"
	"strings"
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

// specOf parses spec with robfig's parser, for its bit sets.
func specOf(tb tb, spec string) *cron.SpecSchedule {
	tb.Helper()
	s, err := cronParser.Parse(spec)
	if err != nil {
		tb.Fatalf("robfig Parse(%q): %v", spec, err)
	}
	return s.(*cron.SpecSchedule)
}

// bruteMatch is an oracle independent of matcher: it reads the fields of w
// (a wall-clock time) with package time and tests robfig's bit sets directly.
func bruteMatch(s *cron.SpecSchedule, w time.Time) bool {
	bit := func(set uint64, v int) bool { return set&(1<<uint(v)) != 0 }
	domOK, dowOK := bit(s.Dom, w.Day()), bit(s.Dow, int(w.Weekday()))
	day := domOK || dowOK
	if s.Dom&starBit != 0 || s.Dow&starBit != 0 {
		day = domOK && dowOK
	}
	return day && bit(s.Month, int(w.Month())) && bit(s.Hour, w.Hour()) &&
		bit(s.Minute, w.Minute()) && bit(s.Second, w.Second())
}

// oracleFires decides by brute force, following the package doc's rules,
// whether the whole-second instant sec is a fire time of s in loc.
func oracleFires(s *cron.SpecSchedule, loc *time.Location, sec int64) bool {
	w := time.Unix(sec, 0).In(loc)
	byInstant := s.Hour&allHours == allHours
	if bruteMatch(s, w) && (byInstant || firstOccurrence(loc, sec)) {
		return true
	}
	if byInstant {
		return false
	}
	// Does the clock jump forward at sec? Then sec fires for every matching
	// wall time it skipped.
	_, offNow := w.Zone()
	_, offPrev := time.Unix(sec-1, 0).In(loc).Zone()
	for c := sec + int64(offPrev); c < sec+int64(offNow); c++ {
		if bruteMatch(s, time.Unix(c, 0).UTC()) {
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
	if names != nil && rapid.IntRange(0, 2).Draw(t, label+"-named") == 0 {
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

func genField(t *rapid.T, label string, lo, hi int, names []string, question bool) string {
	n := rapid.IntRange(1, 3).Draw(t, label+"-terms")
	terms := make([]string, n)
	for i := range terms {
		terms[i] = genTerm(t, fmt.Sprintf("%s%d", label, i), lo, hi, names, question)
	}
	return strings.Join(terms, ",")
}

// genSpec draws a cron spec: seconds optional, ranges, steps, lists, names,
// descriptors. With dstHours, the hour field mostly sticks to the hours in
// which clocks change, so the DST rules get exercised.
func genSpec(t *rapid.T, dstHours bool) string {
	if rapid.IntRange(0, 19).Draw(t, "descriptor") == 0 {
		return rapid.SampledFrom([]string{"@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly"}).Draw(t, "desc")
	}
	hour := genField(t, "hour", 0, 23, nil, false)
	if dstHours && rapid.IntRange(0, 3).Draw(t, "dst-hour") > 0 {
		hour = rapid.SampledFrom([]string{"2", "1", "3", "1-3", "2,3", "*/2", "0-2", "1/1", "*"}).Draw(t, "hour-dst")
	}
	fields := []string{
		genField(t, "min", 0, 59, nil, false),
		hour,
		genField(t, "dom", 1, 31, nil, true),
		genField(t, "month", 1, 12, monthNames, false),
		genField(t, "dow", 0, 6, dowNames, true),
	}
	if rapid.Bool().Draw(t, "seconds") {
		fields = append([]string{genField(t, "sec", 0, 59, nil, false)}, fields...)
	}
	return strings.Join(fields, " ")
}
