package coord

import "time"

// MaxBatch is maxBatch, for tests.
const MaxBatch = maxBatch

// PassFenceDeadline moves the deadline of t's session into the past, as a
// replica finds it when it wakes from a freeze before its guard's timer has
// fired. It reports a func that tells whether the deadline is still the one
// it set (the guard moves it on at its next acknowledged keepalive).
func (t *Term) PassFenceDeadline() (unchanged func() bool) {
	d := time.Now().Add(-time.Millisecond)
	t.session.deadline.Store(&d)
	return func() bool { return t.session.deadline.Load() == &d }
}
