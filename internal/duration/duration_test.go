package duration_test

import (
	"math"
	"testing"
	"time"

	"github.com/pacerun/pacer/internal/duration"
)

const (
	maxD = time.Duration(math.MaxInt64)
	minD = time.Duration(math.MinInt64)
)

func TestSumSaturates(t *testing.T) {
	// The largest plugins.cancel_grace Go parses, as in a stop timeout:
	// drain_timeout + cancel_grace + 15 s wrapped around to a negative
	// (already expired) deadline before Sum.
	grace, err := time.ParseDuration("2562047h47m16s")
	if err != nil {
		t.Fatal(err)
	}
	if wrapped := 10*time.Second + grace + 15*time.Second; wrapped >= 0 {
		t.Fatalf("the plain sum %s does not wrap around: the test shows nothing", wrapped)
	}
	for _, tc := range []struct {
		name string
		in   []time.Duration
		want time.Duration
	}{
		{"none", nil, 0},
		{"small", []time.Duration{10 * time.Second, 5 * time.Second, 15 * time.Second}, 30 * time.Second},
		{"stop timeout at the largest grace", []time.Duration{10 * time.Second, grace, 15 * time.Second}, maxD},
		{"largest twice", []time.Duration{maxD, maxD}, maxD},
		{"exactly the largest", []time.Duration{maxD - 1, 1}, maxD},
		{"smallest", []time.Duration{minD, -1}, minD},
		{"back from the top", []time.Duration{maxD, time.Second, -time.Second}, maxD - time.Second},
		{"mixed signs", []time.Duration{maxD, minD}, -1},
	} {
		if got := duration.Sum(tc.in...); got != tc.want {
			t.Errorf("%s: Sum(%v) = %s, want %s", tc.name, tc.in, got, tc.want)
		}
	}
}

func TestTimesSaturates(t *testing.T) {
	for _, tc := range []struct {
		d    time.Duration
		n    int64
		want time.Duration
	}{
		{5 * time.Second, 2, 10 * time.Second},
		{5 * time.Second, 0, 0},
		{0, math.MaxInt64, 0},
		{maxD / 2, 2, maxD - 1},
		{maxD/2 + 1, 2, maxD},
		{maxD, 10, maxD},
		{maxD, -10, minD},
		{minD, 2, minD},
		{minD, -1, maxD},
		{-time.Second, math.MaxInt64, minD},
	} {
		if got := duration.Times(tc.d, tc.n); got != tc.want {
			t.Errorf("Times(%d, %d) = %d, want %d", tc.d, tc.n, got, tc.want)
		}
	}
}
