package schedule

import (
	"fmt"
	"strconv"
	"strings"
)

// This file parses cron expressions into a matcher. The syntax is
// robfig/cron v3's, so that a spec means here what it meant to the parser
// Pacer used before, with these differences:
//
//   - Accepted besides: day-of-week 7 as Sunday (Vixie cron); descriptors in
//     any case (@DAILY); in day-of-month L, L-n, nW and LW, and in
//     day-of-week nL and n#k (Quartz, croniter).
//   - Refused where robfig reads something else than what is written: a
//     range that starts with "*" or "?" ("*-5", which robfig reads as "*"),
//     and empty list items ("1,,2" and "5,", which robfig reads as "1,2"
//     and "5"). Also refused: signs on numbers ("+5"), and "L" alone in
//     day-of-week (Quartz reads it as Saturday, others as "last").
//
// The day-of-month/day-of-week rule is robfig's and Vixie cron's: when both
// fields are restricted a day matches if either matches; when either is "*"
// or "?" (also "*/1"), both must. The terms with L, W and # restrict their
// field like any other term.

// cronField describes one field of a cron expression.
type cronField struct {
	name     string
	min, max int
	// starMax is the top of "*" and of "N/step": 6 in day-of-week, where
	// max is 7 (Sunday again) but "*" and "1/2" stop at Saturday, as in
	// robfig.
	starMax int
	names   map[string]int
}

var (
	secondField = cronField{name: "second", min: 0, max: 59, starMax: 59}
	minuteField = cronField{name: "minute", min: 0, max: 59, starMax: 59}
	hourField   = cronField{name: "hour", min: 0, max: 23, starMax: 23}
	domField    = cronField{name: "day-of-month", min: 1, max: 31, starMax: 31}
	monthField  = cronField{name: "month", min: 1, max: 12, starMax: 12, names: map[string]int{
		"jan": 1, "feb": 2, "mar": 3, "apr": 4, "may": 5, "jun": 6,
		"jul": 7, "aug": 8, "sep": 9, "oct": 10, "nov": 11, "dec": 12,
	}}
	dowField = cronField{name: "day-of-week", min: 0, max: 7, starMax: 6, names: map[string]int{
		"sun": 0, "mon": 1, "tue": 2, "wed": 3, "thu": 4, "fri": 5, "sat": 6,
	}}
)

// descriptors maps each descriptor (lower case) to its 6-field equivalent.
var descriptors = map[string]string{
	"@yearly":   "0 0 0 1 1 *",
	"@annually": "0 0 0 1 1 *",
	"@monthly":  "0 0 0 1 * *",
	"@weekly":   "0 0 0 * * 0",
	"@daily":    "0 0 0 * * *",
	"@midnight": "0 0 0 * * *",
	"@hourly":   "0 0 * * * *",
}

// parseCron parses a 5- or 6-field cron expression or a descriptor.
func parseCron(spec string) (matcher, error) {
	fields := strings.Fields(spec)
	if strings.HasPrefix(spec, "@") {
		d, ok := descriptors[strings.ToLower(spec)]
		if !ok {
			return matcher{}, fmt.Errorf("unknown descriptor %q: use @yearly, @annually, @monthly, @weekly, @daily, @midnight, @hourly or @every <duration>", spec)
		}
		fields = strings.Fields(d)
	}
	switch len(fields) {
	case 5:
		fields = append([]string{"0"}, fields...)
	case 6:
	case 7:
		return matcher{}, fmt.Errorf("7 fields: a year field (Quartz) is not supported; write 5 fields (minute hour day-of-month month day-of-week) or 6 with seconds first")
	default:
		return matcher{}, fmt.Errorf("%d fields: want 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)", len(fields))
	}
	var m matcher
	for _, f := range []struct {
		field cronField
		text  string
		bits  *uint64
	}{
		{secondField, fields[0], &m.sec}, {minuteField, fields[1], &m.min},
		{hourField, fields[2], &m.hour}, {monthField, fields[4], &m.month},
	} {
		var err error
		if *f.bits, _, err = parseField(f.field, f.text, nil); err != nil {
			return matcher{}, err
		}
	}
	var err error
	if m.dom, m.domStar, err = parseField(domField, fields[3], m.domTerm); err != nil {
		return matcher{}, err
	}
	if m.dow, m.dowStar, err = parseField(dowField, fields[5], m.dowTerm); err != nil {
		return matcher{}, err
	}
	if m.dow&(1<<7) != 0 { // 7 is Sunday
		m.dow = m.dow&^(1<<7) | 1
	}
	m.special = m.domFromEnd != 0 || m.domNearest != 0 || m.domLastWeekday || m.dowLast != 0 || m.dowNth != [7]uint8{}
	return m, nil
}

// parseField parses a comma-separated field into a bit set (bit v set: v
// matches) and whether the field counts as "*" for the day rule. special, if
// not nil, is offered each term first and reports whether it took it.
func parseField(f cronField, text string, special func(term string) (bool, error)) (uint64, bool, error) {
	var bits uint64
	star := false
	for term := range strings.SplitSeq(text, ",") {
		if term == "" {
			return 0, false, fmt.Errorf("%s: empty item in the list %q", f.name, text)
		}
		if special != nil {
			took, err := special(term)
			if err != nil {
				return 0, false, fmt.Errorf("%s: %q: %w", f.name, term, err)
			}
			if took {
				continue
			}
		}
		b, s, err := parseTerm(f, term)
		if err != nil {
			return 0, false, fmt.Errorf("%s: %q: %w", f.name, term, err)
		}
		bits |= b
		star = star || s
	}
	return bits, star, nil
}

// parseTerm parses "*", "?", "N", "N-M", each optionally followed by
// "/step"; "N/step" means N-max/step.
func parseTerm(f cronField, term string) (uint64, bool, error) {
	base, stepText, hasStep := strings.Cut(term, "/")
	step := 1
	if hasStep {
		n, err := number(stepText)
		if err != nil || n < 1 {
			return 0, false, fmt.Errorf("step %q: want a whole number of at least 1", stepText)
		}
		step = n
	}
	var lo, hi int
	star := false
	switch {
	case base == "*" || base == "?":
		lo, hi, star = f.min, f.starMax, step == 1
	case strings.HasPrefix(base, "*") || strings.HasPrefix(base, "?"):
		return 0, false, fmt.Errorf("%q cannot start a range (robfig/cron reads %q as %q); write %q alone or a range such as \"1-5\"",
			base[:1], term, base[:1], base[:1])
	default:
		from, to, isRange := strings.Cut(base, "-")
		var err error
		if lo, err = f.value(from); err != nil {
			return 0, false, err
		}
		switch {
		case isRange:
			if hi, err = f.value(to); err != nil {
				return 0, false, err
			}
			if lo > hi {
				return 0, false, fmt.Errorf("range %d-%d runs backwards", lo, hi)
			}
		case hasStep:
			hi = max(lo, f.starMax)
		default:
			hi = lo
		}
	}
	var bits uint64
	for v := lo; v <= hi; v += step {
		bits |= 1 << v
	}
	return bits, star, nil
}

// value parses a number or a name of f and checks it is within f's range.
func (f cronField) value(s string) (int, error) {
	if v, ok := f.names[strings.ToLower(s)]; ok {
		return v, nil
	}
	n, err := number(s)
	if err != nil {
		if strings.Contains(s, "-") {
			return 0, fmt.Errorf("%q: a range has one \"-\"", s)
		}
		if f.names != nil {
			return 0, fmt.Errorf("%q is not a number from %d to %d or a name such as %s", s, f.min, f.max, f.example())
		}
		return 0, fmt.Errorf("%q is not a number from %d to %d", s, f.min, f.max)
	}
	if n < f.min || n > f.max {
		return 0, fmt.Errorf("%d is out of range: want %d to %d", n, f.min, f.max)
	}
	return n, nil
}

func (f cronField) example() string {
	if f.name == "month" {
		return "JAN"
	}
	return "MON"
}

// number parses a non-empty string of ASCII digits (no sign).
func number(s string) (int, error) {
	if s == "" || len(s) > 4 || strings.Trim(s, "0123456789") != "" {
		return 0, fmt.Errorf("not a number: %q", s)
	}
	return strconv.Atoi(s)
}

// domTerm takes the day-of-month terms L, L-n, LW and nW.
func (m *matcher) domTerm(term string) (bool, error) {
	t := strings.ToUpper(term)
	switch {
	case t == "L":
		m.domFromEnd |= 1
	case t == "LW":
		m.domLastWeekday = true
	case strings.HasPrefix(t, "L-"):
		n, err := number(t[2:])
		if err != nil || n > 30 {
			//lint:ignore ST1005 the message starts with the cron term it is about, L-n
			return false, fmt.Errorf("L-n wants n from 0 to 30 (days before the month's last day)")
		}
		m.domFromEnd |= 1 << n
	case strings.HasSuffix(t, "W"):
		n, err := number(t[:len(t)-1])
		if err != nil || n < 1 || n > 31 {
			return false, fmt.Errorf("nW wants a day n from 1 to 31 (the weekday nearest the nth); ranges and lists of W are not supported")
		}
		m.domNearest |= 1 << n
	case strings.ContainsAny(t, "LW#"):
		return false, fmt.Errorf("not supported in day-of-month: use L, L-n, LW or nW (# belongs in day-of-week)")
	default:
		return false, nil
	}
	return true, nil
}

// dowTerm takes the day-of-week terms nL and n#k.
func (m *matcher) dowTerm(term string) (bool, error) {
	t := strings.ToUpper(term)
	switch {
	case t == "L":
		return false, fmt.Errorf(`"L" alone in day-of-week is ambiguous (Quartz reads it as Saturday): write SAT, or nL for the last weekday n of the month (5L: the last Friday)`)
	case strings.Contains(t, "#"):
		day, nth, _ := strings.Cut(t, "#")
		w, err := dowField.value(day)
		if err != nil {
			return false, fmt.Errorf("n#k wants a weekday n (0-7 or SUN-SAT): %w", err)
		}
		k, err := number(nth)
		if err != nil || k < 1 || k > 5 {
			return false, fmt.Errorf("n#k wants k from 1 to 5 (the kth weekday n of the month)")
		}
		m.dowNth[w%7] |= 1 << k
	case len(t) > 1 && strings.HasSuffix(t, "L"): // no weekday's name ends in L
		w, err := dowField.value(t[:len(t)-1])
		if err != nil {
			return false, fmt.Errorf("nL wants a weekday n (0-7 or SUN-SAT): %w", err)
		}
		m.dowLast |= 1 << (w % 7)
	case strings.HasSuffix(t, "W"): // no weekday's name ends in W
		//lint:ignore ST1005 the message starts with the cron term it is about, W
		return false, fmt.Errorf("W is not supported in day-of-week (nW belongs in day-of-month)")
	default:
		return false, nil
	}
	return true, nil
}
