package schedule

import (
	"errors"
	"testing"
	"time"
)

// ParseDuration says "too large" only for a duration written right whose
// value does not fit; anything else fails as time.ParseDuration does.
func TestParseDurationTooLarge(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    time.Duration
		tooBig  bool
		invalid bool
	}{
		{in: "10s", want: 10 * time.Second},
		{in: "1.5h", want: 90 * time.Minute},
		{in: "2562047h", want: 2562047 * time.Hour},
		{in: "3000000h", tooBig: true},
		{in: "-3000000h", tooBig: true},
		{in: "1000000000h1s", tooBig: true},
		{in: "99999999999999999999ns", tooBig: true},
		{in: "ten seconds", invalid: true},
		{in: ".s", invalid: true},
		{in: "10", invalid: true},
		{in: "10x", invalid: true},
	} {
		d, err := ParseDuration(tc.in)
		switch {
		case tc.tooBig:
			if !errors.Is(err, ErrDurationTooLarge) {
				t.Errorf("%q: %v, want too large", tc.in, err)
			}
		case tc.invalid:
			if err == nil || errors.Is(err, ErrDurationTooLarge) {
				t.Errorf("%q: %v, want invalid (not too large)", tc.in, err)
			}
		case err != nil || d != tc.want:
			t.Errorf("%q: %s, %v, want %s", tc.in, d, err, tc.want)
		}
	}
}
