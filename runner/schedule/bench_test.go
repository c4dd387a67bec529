package schedule

import (
	"testing"
	"time"
)

// BenchmarkNext measures one Next call per spec kind, stepping through
// consecutive fires of 2026–2028 (so DST zones cross their transitions on the
// way) and starting over, with robfig's SpecSchedule.Next over the same
// range alongside for the cron kinds.
func BenchmarkNext(b *testing.B) {
	berlin := mustLoc(b, "Europe/Berlin")
	start := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	kinds := []struct {
		name   string
		spec   string
		loc    *time.Location
		robfig bool // also time robfig's SpecSchedule.Next
	}{
		{"every-5s", "@every 5s", nil, false},
		{"at", "at: 2030-01-01T00:00:00Z", nil, false},
		{"cron-seconds-UTC", "*/5 * * * * *", nil, true},
		{"cron-minutely-UTC", "* * * * *", nil, true},
		{"cron-weekdays-UTC", "0 30 9 * * MON-FRI", nil, true},
		{"cron-hourly-Berlin", "0 * * * *", berlin, true},
		{"cron-daily-Berlin", "30 2 * * *", berlin, true},
		{"cron-monthly-Berlin", "@monthly", berlin, true},
		{"cron-leapday-UTC", "0 0 29 2 *", nil, true},
	}
	for _, k := range kinds {
		s := mustParse(b, k.spec, k.loc)
		b.Run(k.name, func(b *testing.B) {
			at := start
			for b.Loop() {
				if at = s.Next(at); at.IsZero() || at.Year() > 2028 {
					at = start
				}
			}
		})
		if !k.robfig {
			continue
		}
		r := specOf(b, k.spec)
		r.Location = k.loc
		if r.Location == nil {
			r.Location = time.UTC
		}
		b.Run(k.name+"/robfig", func(b *testing.B) {
			at := start
			for b.Loop() {
				if at = r.Next(at); at.IsZero() || at.Year() > 2028 {
					at = start
				}
			}
		})
	}
}

func BenchmarkNextN5(b *testing.B) {
	s := mustParse(b, "0 30 9 * * MON-FRI", mustLoc(b, "America/New_York"))
	at := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for b.Loop() {
		NextN(s, at, 5)
	}
}

func BenchmarkJitter(b *testing.B) {
	slot := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for b.Loop() {
		slot = slot.Add(time.Second)
		Jitter("nightly-backup", slot, 30*time.Second)
	}
}

func BenchmarkParse(b *testing.B) {
	for b.Loop() {
		if _, err := Parse("0 30 9 * * MON-FRI", time.UTC); err != nil {
			b.Fatal(err)
		}
	}
}
