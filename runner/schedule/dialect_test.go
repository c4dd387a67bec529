package schedule

import (
	"strings"
	"testing"
	"time"
)

// Dates checked against a calendar (2026: 1 January is a Thursday).
func TestDialectTerms(t *testing.T) {
	t.Parallel()
	day := func(y int, m time.Month, d int) time.Time { return time.Date(y, m, d, 0, 0, 0, 0, time.UTC) }
	from := day(2026, 1, 1).Add(-time.Second)
	tests := []struct {
		spec string
		want []time.Time
	}{
		{"0 0 L * *", []time.Time{day(2026, 1, 31), day(2026, 2, 28), day(2026, 3, 31), day(2026, 4, 30)}},
		{"0 0 l 2 *", []time.Time{day(2026, 2, 28), day(2027, 2, 28), day(2028, 2, 29)}},
		{"0 0 L-1 * *", []time.Time{day(2026, 1, 30), day(2026, 2, 27), day(2026, 3, 30)}},
		{"0 0 L-30 * *", []time.Time{day(2026, 1, 1), day(2026, 3, 1), day(2026, 5, 1)}},  // 31-day months only
		{"0 0 LW * *", []time.Time{day(2026, 1, 30), day(2026, 2, 27), day(2026, 3, 31)}}, // Sat 31, Sat 28, Tue 31
		{"0 0 1W * *", []time.Time{day(2026, 1, 1), day(2026, 2, 2), day(2026, 3, 2)}},    // Thu 1, Sun 1, Sun 1
		{"0 0 1W 8 *", []time.Time{day(2026, 8, 3)}},                                      // Saturday the 1st: Monday the 3rd, not July
		{"0 0 15W 2,3,8 *", []time.Time{day(2026, 2, 16), day(2026, 3, 16), day(2026, 8, 14)}},
		{"0 0 31W * *", []time.Time{day(2026, 1, 30), day(2026, 3, 31), day(2026, 5, 29)}}, // Sat 31; Tue 31; Sunday the last: Friday
		{"0 0 1,15,L 1 *", []time.Time{day(2026, 1, 1), day(2026, 1, 15), day(2026, 1, 31)}},
		{"0 0 * * 5L", []time.Time{day(2026, 1, 30), day(2026, 2, 27), day(2026, 3, 27)}},
		{"0 0 * * FRIL", []time.Time{day(2026, 1, 30), day(2026, 2, 27)}},
		{"0 0 * * MON#1", []time.Time{day(2026, 1, 5), day(2026, 2, 2), day(2026, 3, 2)}},
		{"0 0 * * fri#5", []time.Time{day(2026, 1, 30), day(2026, 5, 29)}},
		{"0 0 * * 7#1", []time.Time{day(2026, 1, 4), day(2026, 2, 1)}},
		{"0 0 * * 7", []time.Time{day(2026, 1, 4), day(2026, 1, 11)}},
		{"0 0 * * 5-7", []time.Time{day(2026, 1, 2), day(2026, 1, 3), day(2026, 1, 4), day(2026, 1, 9)}},
		// Both day fields restricted: either matches (the 13th, or the
		// second Friday: 9 January).
		{"0 0 13 * FRI#2", []time.Time{day(2026, 1, 9), day(2026, 1, 13), day(2026, 2, 13)}},
		{"@DAILY", []time.Time{day(2026, 1, 1), day(2026, 1, 2)}},
		{"@Monthly", []time.Time{day(2026, 1, 1), day(2026, 2, 1)}},
		{"@EVERY 24h", []time.Time{day(2026, 1, 1), day(2026, 1, 2)}},
	}
	for _, tc := range tests {
		got := NextN(mustParse(t, tc.spec, nil), from, len(tc.want))
		if len(got) != len(tc.want) {
			t.Errorf("%q: got %v, want %v", tc.spec, got, tc.want)
			continue
		}
		for i := range got {
			if !got[i].Equal(tc.want[i]) {
				t.Errorf("%q: got %v, want %v", tc.spec, got, tc.want)
				break
			}
		}
	}
}

// Each refused spec's error names the token and says what to write.
func TestDialectErrors(t *testing.T) {
	t.Parallel()
	tests := []struct{ spec, want string }{
		{"*-5 * * * *", `minute: "*-5": "*" cannot start a range (robfig/cron reads "*-5" as "*")`},
		{"0 ?-3 * * *", `hour: "?-3": "?" cannot start a range`},
		{"0 1,,2 * * *", `hour: empty item in the list "1,,2"`},
		{"0 5, * * *", `hour: empty item in the list "5,"`},
		{"0 0 * * L", `day-of-week: "L": "L" alone in day-of-week is ambiguous`},
		{"0 0 3#2 * *", `day-of-month: "3#2": not supported in day-of-month`},
		{"0 0 * * 5#6", `day-of-week: "5#6": n#k wants k from 1 to 5`},
		{"0 0 * * 8#1", `day-of-week: "8#1": n#k wants a weekday n`},
		{"0 0 L-31 * *", `day-of-month: "L-31": L-n wants n from 0 to 30`},
		{"0 0 32W * *", `day-of-month: "32W": nW wants a day n from 1 to 31`},
		{"0 0 1-5W * *", `day-of-month: "1-5W": nW wants a day n`},
		{"0 0 L/2 * *", `day-of-month: "L/2": not supported in day-of-month`},
		{"0 0 * * 5W", `day-of-week: "5W": W is not supported in day-of-week`},
		{"0 0 * * 8", `day-of-week: "8": 8 is out of range: want 0 to 7`},
		{"0 0 * * 1-2-3", `day-of-week: "1-2-3": "2-3": a range has one "-"`},
		{"0 0 5-1 * *", `day-of-month: "5-1": range 5-1 runs backwards`},
		{"0 */0 * * *", `hour: "*/0": step "0": want a whole number of at least 1`},
		{"+5 * * * *", `minute: "+5": "+5" is not a number from 0 to 59`},
		{"0 0 0 1 1 * 2027", "7 fields: a year field (Quartz) is not supported"},
		{"0 0 *", "3 fields: want 5"},
		{"@reboot", `unknown descriptor "@reboot"`},
		{"0 0 * JANUARY *", `month: "JANUARY": "JANUARY" is not a number from 1 to 12 or a name such as JAN`},
	}
	for _, tc := range tests {
		_, err := Parse(tc.spec, nil)
		if err == nil {
			t.Errorf("Parse(%q): accepted", tc.spec)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Parse(%q):\n got %v\nwant it to contain %s", tc.spec, err, tc.want)
		}
	}
}

// Specs that can never fire, by their dates alone.
func TestNeverFires(t *testing.T) {
	t.Parallel()
	for spec, never := range map[string]bool{
		"0 0 30 2 *":        true,
		"0 0 31 4,6,9,11 *": true,
		"0 0 L-29 2 *":      true, // 29 February is L-0
		"0 0 L-28 2 *":      false,
		"0 0 30W 2 *":       true,
		"0 0 * 2 MON#5":     false, // 29 February on a Monday: 2016, 2044, ...
		"0 0 31 2 MON#5":    false, // day fields OR-ed
	} {
		m := mustCron(t, spec)
		if got := m.never(); got != never {
			t.Errorf("%q: never() = %v, want %v", spec, got, never)
		}
		if s := mustParse(t, spec, nil); never != s.Next(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)).IsZero() {
			t.Errorf("%q: Next disagrees with never() = %v", spec, never)
		}
	}
	// A fifth Monday in February needs a 29 February that is a Monday:
	// 2072, then 2112 (2100 is not a leap year), 40 years on.
	got := mustParse(t, "0 0 * 2 MON#5", nil).Next(time.Date(2072, 3, 1, 0, 0, 0, 0, time.UTC))
	if want := time.Date(2112, 2, 29, 0, 0, 0, 0, time.UTC); !got.Equal(want) {
		t.Errorf("fifth Monday of February after 2072: %v, want %v", got, want)
	}
}

func TestNeverFiresByKind(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		s    Schedule
		want bool
	}{
		{mustParse(t, "0 0 30 2 *", nil), true},
		{mustParse(t, "0 0 29 2 *", nil), false},
		{mustParse(t, "@every 1s", nil), false},
		{Every(0), true},
		{mustParse(t, "at: 2001-01-01T00:00:00Z", nil), false}, // passed, but not "never" by its spec
	} {
		if got := NeverFires(tc.s); got != tc.want {
			t.Errorf("NeverFires(%T %v) = %v, want %v", tc.s, tc.s, got, tc.want)
		}
	}
}

// Parse never panics; what it accepts gives fire times after t, whole
// seconds, or none exactly when NeverFires says so (for cron specs).
func FuzzParse(f *testing.F) {
	for _, s := range []string{"0 0 L * *", "0 0 15W 2,3 *", "0 0 * * 5L", "0 0 * * MON#1", "*-5 * * * *", "1,,2 * * * *",
		"@DAILY", "@every 5s", "0 0 30 2 *", "*/7 1-5/2 L-3 JAN-mar 7", "0 0 L-30 2 *", "at: 2026-01-01T00:00:00Z"} {
		f.Add(s)
	}
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, spec string) {
		s, err := Parse(spec, berlin)
		if err != nil {
			return
		}
		for _, at := range []time.Time{time.Unix(0, 0), time.Date(2028, 12, 31, 23, 30, 0, 0, time.UTC), time.Date(2099, 2, 28, 0, 0, 0, 0, time.UTC)} {
			next := s.Next(at)
			if next.IsZero() {
				if _, cron := s.(cronSchedule); cron && !NeverFires(s) {
					t.Fatalf("%q: Next(%v) = never, but NeverFires is false", spec, at)
				}
				continue
			}
			if !next.After(at) {
				t.Fatalf("%q: Next(%v) = %v", spec, at, next)
			}
		}
	})
}
