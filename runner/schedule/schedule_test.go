package schedule

import (
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
	for _, spec := range []string{"", "@every", "@every 0s", "@every 1500ms", "@every soon", "61 * * * * *", "* * *", "at: tomorrow", "CRON_TZ=UTC * * * * *", "@fortnightly"} {
		if _, err := Parse(spec, nil); err == nil {
			t.Errorf("Parse(%q): expected an error", spec)
		}
	}
}
