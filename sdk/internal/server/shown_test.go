package server

import (
	"testing"
	"time"
)

func TestShown(t *testing.T) {
	for _, c := range []struct{ in, want time.Duration }{
		{1999965725 * time.Nanosecond, 2 * time.Second},
		{10*time.Second - 3*time.Millisecond, 10 * time.Second},
		{1500 * time.Millisecond, 1500 * time.Millisecond},
		{299999 * time.Microsecond, 300 * time.Millisecond},
		{500 * time.Microsecond, 500 * time.Microsecond},
	} {
		if got := Shown(c.in); got != c.want {
			t.Errorf("Shown(%s) = %s, want %s", c.in, got, c.want)
		}
	}
}
