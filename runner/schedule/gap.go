package schedule

import "time"

// Gap is the interval between two consecutive fire times.
type Gap struct {
	From, To time.Time
	// Change is the instant the zone's clock changed (daylight saving) if
	// that falls in [From, To]; zero otherwise.
	Change time.Time
}

// Len is the gap's length.
func (g Gap) Len() time.Duration { return g.To.Sub(g.From) }

// gapSample bounds how many intervals ShortestGap looks at from its start,
// and around each change of the clock.
const gapSample = 64

// maxChanges bounds the zone periods ShortestGap walks through in its
// horizon (two real changes a year in most zones with daylight saving, and
// a bound Go reports at every new year where nothing changes).
const maxChanges = 64

// ShortestGap returns the shortest interval between consecutive fire times
// of s that it finds, and whether it found one (s fires twice at least). It
// looks at the first 64 intervals after from and, for a cron spec in a zone
// whose UTC offset changes within horizon after from, at the intervals
// around each change that could be no longer than within: the clock's jump
// shortens the interval across it ("0 2 * * *" in Berlin fires 23 h apart
// after the spring change; "0 0,12 * * *" in Lord Howe, whose clock moves
// 30 minutes, 11.5 h apart), which a sample from one date misses.
//
// Around a change at T only the interval that contains T (or ends or starts
// at it) differs from the spec's: before T and after it the offset is fixed,
// so those intervals are the wall clock's (a wall time the jump skips fires
// at T; one it repeats fires at its first occurrence, before T, or, for a
// spec that fires every hour, at both, on either side of T). So the walk
// starts at the first fire time at or after T-within, when an interval of
// at most within across T could start, and stops after T.
func ShortestGap(s Schedule, from time.Time, within, horizon time.Duration) (Gap, bool) {
	var best Gap
	found := false
	// walk looks at up to gapSample intervals from the fire time prev on,
	// none starting after until (unless until is zero).
	walk := func(prev, until time.Time) {
		for range gapSample {
			if prev.IsZero() || !until.IsZero() && prev.After(until) {
				return
			}
			next := s.Next(prev)
			if next.IsZero() {
				return
			}
			if g := next.Sub(prev); !found || g < best.Len() {
				best, found = Gap{From: prev, To: next}, true
			}
			prev = next
		}
	}
	walk(s.Next(from), time.Time{})
	c, ok := s.(cronSchedule)
	if !ok || c.never || c.loc == time.UTC {
		return best, found
	}
	changes := offsetChanges(c.loc, from.Unix(), from.Add(horizon).Unix())
	for _, at := range changes {
		t := time.Unix(at, 0)
		walk(s.Next(t.Add(-within-time.Second)), t)
	}
	if found {
		for _, at := range changes {
			if t := time.Unix(at, 0); !t.Before(best.From) && !t.After(best.To) {
				best.Change = t.UTC()
				break
			}
		}
	}
	return best, found
}

// offsetChanges lists the instants in (from, to] at which loc's UTC offset
// changes, in order.
func offsetChanges(loc *time.Location, from, to int64) []int64 {
	var out []int64
	sec := from
	for range maxChanges {
		z := zoneAt(loc, sec)
		if !z.hasEnd || z.end > to || z.end <= sec {
			break
		}
		if offsetAt(loc, z.end) != z.off {
			out = append(out, z.end)
		}
		sec = z.end
	}
	return out
}
