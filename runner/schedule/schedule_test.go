package schedule

import (
	"fmt"
	"testing"
	"time"
)

func TestParseAndNext(t *testing.T) {
	t.Parallel()
	berlin, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	base := time.Date(2026, 11, 28, 12, 0, 0, 500_000_000, time.UTC)
	tests := []struct {
		spec string
		loc  *time.Location
		want []time.Time
	}{
		{"@every 5s", nil, []time.Time{
			time.Date(2026, 11, 28, 12, 0, 5, 0, time.UTC),
			time.Date(2026, 11, 28, 12, 0, 10, 0, time.UTC),
		}},
		{"*/2 * * * * *", nil, []time.Time{
			time.Date(2026, 11, 28, 12, 0, 2, 0, time.UTC),
			time.Date(2026, 11, 28, 12, 0, 4, 0, time.UTC),
		}},
		{"30 2 * * *", berlin, []time.Time{ // 02:30 Berlin = 01:30 UTC in winter
			time.Date(2026, 11, 29, 1, 30, 0, 0, time.UTC),
			time.Date(2026, 11, 30, 1, 30, 0, 0, time.UTC),
		}},
		{"@hourly", nil, []time.Time{
			time.Date(2026, 11, 28, 13, 0, 0, 0, time.UTC),
			time.Date(2026, 11, 28, 14, 0, 0, 0, time.UTC),
		}},
		{"at: 2026-12-01T09:00:00Z", nil, []time.Time{
			time.Date(2026, 12, 1, 9, 0, 0, 0, time.UTC),
			{},
		}},
	}
	for _, tc := range tests {
		t.Run(tc.spec, func(t *testing.T) {
			t.Parallel()
			s, err := Parse(tc.spec, tc.loc)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			at := base
			for i, want := range tc.want {
				got := s.Next(at)
				if !got.Equal(want) {
					t.Fatalf("fire %d: got %v, want %v", i, got, want)
				}
				at = got
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	t.Parallel()
	for _, spec := range []string{"", "@every", "@every 0s", "@every 1500ms", "@every soon", "61 * * * * *", "* * *", "at: tomorrow", "CRON_TZ=UTC * * * * *", "@fortnightly",
		"at: 2027-01-01T00:00:00.5Z", "at: 2027-01-01T01:00:00.000000001+01:00"} {
		if _, err := Parse(spec, nil); err == nil {
			t.Errorf("Parse(%q): expected an error", spec)
		}
	}
}

func TestEveryIsAlignedToTheUnixEpoch(t *testing.T) {
	t.Parallel()
	epoch := time.Unix(0, 0).UTC()
	tests := []struct {
		d          time.Duration
		from, want time.Time
	}{
		// 7s does not divide the seconds between year 1 and 1970, so
		// time.Truncate (which aligns to year 1) would be 4s off.
		{7 * time.Second, epoch, epoch.Add(7 * time.Second)},
		{7 * time.Second, time.Unix(1_000_000_000, 0), time.Unix(1_000_000_001, 0)}, // 1e9 = 7·142857142 + 6
		{7 * time.Second, time.Unix(-1, 0), epoch},
		{7 * time.Second, time.Unix(-8, 0), time.Unix(-7, 0)},
		{time.Hour, time.Date(2026, 3, 29, 1, 59, 59, 999_999_999, time.UTC), time.Date(2026, 3, 29, 2, 0, 0, 0, time.UTC)},
		{500 * time.Millisecond, time.Unix(10, 499_999_999), time.Unix(10, 500_000_000)},
		{1500 * time.Millisecond, time.Unix(2, 0), time.Unix(3, 0)},
		{1500 * time.Millisecond, time.Unix(-1, 0), time.Unix(0, 0)},
		{24 * time.Hour, time.Date(1600, 5, 5, 5, 5, 5, 5, time.UTC), time.Date(1600, 5, 6, 0, 0, 0, 0, time.UTC)},
		{7 * time.Second, time.Date(9000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(9000, 1, 1, 0, 0, 6, 0, time.UTC)}, // beyond UnixNano's range
	}
	for _, tc := range tests {
		if got := Every(tc.d).Next(tc.from); !got.Equal(tc.want) || got.Location() != time.UTC {
			t.Errorf("Every(%v).Next(%v) = %v, want %v (UTC)", tc.d, tc.from, got, tc.want)
		}
	}
	for _, d := range []time.Duration{0, -time.Second} {
		if got := Every(d).Next(epoch); !got.IsZero() {
			t.Errorf("Every(%v).Next = %v, want never", d, got)
		}
	}
}

func TestNextN(t *testing.T) {
	t.Parallel()
	t0 := time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)
	if got, want := NextN(Every(5*time.Second), t0, 3), []time.Time{t0.Add(5 * time.Second), t0.Add(10 * time.Second), t0.Add(15 * time.Second)}; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("Every: got %v, want %v", got, want)
	}
	if got := NextN(At(t0.Add(time.Hour)), t0, 5); len(got) != 1 || !got[0].Equal(t0.Add(time.Hour)) {
		t.Errorf("At: got %v, want one fire", got)
	}
	if got := NextN(mustParse(t, "0 0 30 2 *", nil), t0, 5); len(got) != 0 {
		t.Errorf("30 February: got %v, want none", got)
	}
	if got := NextN(nil, t0, 5); got != nil {
		t.Errorf("nil schedule: got %v", got)
	}
	if got := NextN(Every(time.Second), t0, 0); got != nil {
		t.Errorf("n = 0: got %v", got)
	}
}

func TestNeverAndRareSpecs(t *testing.T) {
	t.Parallel()
	for _, spec := range []string{"0 0 30 2 *", "0 0 31 4,6,9,11 *", "0 0 31 2 ?", "0 0 30-31 FEB *"} {
		if got := mustParse(t, spec, nil).Next(time.Unix(0, 0)); !got.IsZero() {
			t.Errorf("%q: got %v, want never", spec, got)
		}
	}
	// Day-of-month OR day-of-week: 30 February never comes, Mondays in
	// February do.
	if got := mustParse(t, "0 0 30 2 MON", nil).Next(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)); !got.Equal(time.Date(2026, 2, 2, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("30 Feb or Monday: got %v", got)
	}
	// 29 February from 2096 is eight years away (2100 is not a leap year);
	// robfig/cron gives up after five and returns zero.
	leap := mustParse(t, "0 0 29 2 *", nil)
	if got := leap.Next(time.Date(2096, 3, 1, 0, 0, 0, 0, time.UTC)); !got.Equal(time.Date(2104, 2, 29, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("29 February after 2096: got %v", got)
	}
	// 29 February that is also a Monday (both fields restricted: OR), and
	// Friday the 13th style AND via a starred field.
	if got := mustParse(t, "0 0 13 * FRI", nil).Next(time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)); !got.Equal(time.Date(2026, 1, 2, 0, 0, 0, 0, time.UTC)) {
		t.Errorf("13th or Friday: got %v", got)
	}
	if got := mustParse(t, "0 0 ? 2 *", nil).Next(time.Date(2026, 2, 28, 0, 0, 0, 0, time.UTC)); !got.Equal(time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC).AddDate(1, -1, 0)) {
		t.Errorf("every day of February: got %v", got)
	}
}

func TestResultsAreUTC(t *testing.T) {
	t.Parallel()
	berlin := mustLoc(t, "Europe/Berlin")
	from := time.Date(2026, 6, 1, 0, 0, 0, 0, berlin)
	for _, s := range []Schedule{mustParse(t, "0 9 * * *", berlin), Every(time.Minute), At(from.Add(time.Hour))} {
		if got := s.Next(from); got.Location() != time.UTC {
			t.Errorf("%T: Next returned %v in %v", s, got, got.Location())
		}
	}
}
