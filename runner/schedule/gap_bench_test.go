package schedule

import (
	"testing"
	"time"
)

// BenchmarkShortestGap: the jitter check's cost per job, for a daily spec
// and a dense one (every 2 s, which fills each walk) in a zone with
// daylight saving; "sample" is the 64 intervals from now alone, what the
// check looked at before it knew of clock changes.
func BenchmarkShortestGap(b *testing.B) {
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		b.Fatal(err)
	}
	from := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	for _, bc := range []struct {
		name, spec string
		within     time.Duration
	}{{"daily", "0 0 2 * * *", time.Hour}, {"dense", "*/2 * * * * *", time.Second}} {
		s, err := Parse(bc.spec, loc)
		if err != nil {
			b.Fatal(err)
		}
		b.Run(bc.name+"/sample", func(b *testing.B) {
			for b.Loop() {
				ShortestGap(s, from, bc.within, 0)
			}
		})
		b.Run(bc.name+"/changes", func(b *testing.B) {
			for b.Loop() {
				ShortestGap(s, from, bc.within, 2*365*24*time.Hour)
			}
		})
	}
}
