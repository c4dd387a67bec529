// Package duration adds and multiplies time.Durations without wrapping
// around: a result past the largest (or smallest) Duration is that
// Duration, about 292 years.
//
// Timeouts built from configured values (a drain timeout plus a cancel
// grace, a request timeout times two) use it, so that a value at the edge
// of what a config accepts makes a very long wait, never a negative one:
// context.WithTimeout with a negative duration has expired already.
package duration

import (
	"math"
	"time"
)

// Sum returns the sum of ds, saturated at the largest and smallest
// Duration.
func Sum(ds ...time.Duration) time.Duration {
	var s time.Duration
	for _, d := range ds {
		switch {
		case d > 0 && s > math.MaxInt64-d:
			s = math.MaxInt64
		case d < 0 && s < math.MinInt64-d:
			s = math.MinInt64
		default:
			s += d
		}
	}
	return s
}

// Times returns d × n, saturated at the largest and smallest Duration.
func Times(d time.Duration, n int64) time.Duration {
	if d == 0 || n == 0 {
		return 0
	}
	p := d * time.Duration(n)
	if p/time.Duration(n) != d || (n == -1 && d == math.MinInt64) {
		if (d > 0) == (n > 0) {
			return math.MaxInt64
		}
		return math.MinInt64
	}
	return p
}
