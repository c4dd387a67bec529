package schedule

import (
	"errors"
	"fmt"
	"math"
	"regexp"
	"time"
)

// ErrDurationTooLarge is a well-formed duration beyond MaxDuration.
var ErrDurationTooLarge = errors.New("too large")

// MaxDuration is the longest duration Go (and Pacer) can hold:
// 2562047h47m16.854775807s, about 292 years.
const MaxDuration = time.Duration(math.MaxInt64)

// durationRe is time.ParseDuration's syntax: a sign, then one or more
// numbers (with a digit) each with its unit.
var durationRe = regexp.MustCompile(`^[-+]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:ns|us|µs|μs|ms|s|m|h))+$`)

// ParseDuration is time.ParseDuration, except that a duration written
// right but too large to hold (over MaxDuration, where time.ParseDuration
// says only "invalid duration") fails with an error that says so and
// matches ErrDurationTooLarge.
func ParseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(s)
	if err != nil && durationRe.MatchString(s) {
		return 0, fmt.Errorf("duration %q is %w: at most %s (about 292 years)", s, ErrDurationTooLarge, MaxDuration.Truncate(time.Second))
	}
	return d, err
}
