package backoff

import (
	"context"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const ms = time.Millisecond

func delays(p Policy, n int) []time.Duration {
	var out []time.Duration
	for i := 1; i <= n; i++ {
		out = append(out, p.Delay(i))
	}
	return out
}

func TestDelayDoublesUpToMax(t *testing.T) {
	got := delays(Policy{Initial: 100 * ms, Max: time.Second}, 7)
	want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, time.Second, time.Second, time.Second}
	if !slices.Equal(got, want) {
		t.Fatalf("delays %v, want %v", got, want)
	}
	if d := (Policy{Initial: 100 * ms, Max: time.Second}).Delay(0); d != 100*ms {
		t.Errorf("Delay(0) = %v, want the first wait", d)
	}
	// A cap below the first wait wins.
	if d := (Policy{Initial: time.Second, Max: 300 * ms}).Delay(1); d != 300*ms {
		t.Errorf("Initial 1s, Max 300ms: Delay(1) = %v", d)
	}
	if d := (Policy{}).Delay(3); d != 0 {
		t.Errorf("zero policy: Delay(3) = %v, want 0", d)
	}
}

// Absurd failure counts and durations never wrap around to a short or
// negative wait.
func TestDelayNeverOverflows(t *testing.T) {
	for _, p := range []Policy{
		{Initial: time.Second},                   // no cap
		{Initial: time.Second, Max: maxDuration}, // a cap nothing reaches
		{Initial: maxDuration/2 + 1},             // one doubling would overflow
		{Initial: maxDuration, Jitter: 0.5},      // jitter on the largest wait
		{Initial: 100 * ms, Max: 300 * 24 * time.Hour, Jitter: 1},
	} {
		prev := time.Duration(0)
		for _, n := range []int{1, 2, 10, 62, 63, 64, 100, 1 << 30} {
			d := p.Delay(n)
			if d < prev || d <= 0 {
				t.Fatalf("%+v: Delay(%d) = %v after %v: shrank or wrapped", p, n, d, prev)
			}
			if p.Jitter == 0 {
				prev = d
			}
		}
	}
	if d := (Policy{Initial: time.Second}).Delay(1 << 30); d < maxDuration/2 {
		t.Errorf("uncapped Delay(2^30) = %v, want the largest doubling", d)
	}
}

// Jitter adds up to its fraction of the wait, at random.
func TestDelayJitter(t *testing.T) {
	p := Policy{Initial: time.Second, Max: 4 * time.Second, Jitter: 0.2}
	seen := map[time.Duration]bool{}
	for range 1000 {
		d := p.Delay(2)
		if d < 2*time.Second || d > 2*time.Second+400*ms {
			t.Fatalf("Delay(2) = %v, want 2s to 2.4s", d)
		}
		seen[d] = true
	}
	if len(seen) < 100 {
		t.Errorf("1000 draws gave %d different waits: the jitter is not random", len(seen))
	}
}

// Max is a cap on the whole wait, jitter included (a job's
// retries.max_backoff is documented as one): where the jitter would pass
// it, the wait is drawn from the same span below it, so capped waits still
// spread. Retries {initial_backoff: 1s, max_backoff: 2s} waited 2.38s.
func TestDelayJitterStaysUnderMax(t *testing.T) {
	for _, c := range []struct {
		p      Policy
		n      int
		lo, hi time.Duration
	}{
		{Policy{Initial: time.Second, Max: 2 * time.Second, Jitter: 0.2}, 1, time.Second, 1200 * ms},
		{Policy{Initial: time.Second, Max: 2 * time.Second, Jitter: 0.2}, 2, 1600 * ms, 2 * time.Second},
		{Policy{Initial: time.Second, Max: 2 * time.Second, Jitter: 0.2}, 10, 1600 * ms, 2 * time.Second},
		{Policy{Initial: time.Second, Max: 4 * time.Second, Jitter: 0.2}, 10, 3200 * ms, 4 * time.Second},
		{Policy{Initial: 100 * ms, Max: time.Second, Jitter: 3}, 10, 100 * ms, time.Second},
		// d is under Max but d+jitter is not: never below Initial either.
		{Policy{Initial: 1500 * ms, Max: 1600 * ms, Jitter: 0.2}, 1, 1500 * ms, 1600 * ms},
	} {
		seen := map[time.Duration]bool{}
		for range 1000 {
			d := c.p.Delay(c.n)
			if d < c.lo || d > c.hi {
				t.Fatalf("%+v: Delay(%d) = %v, want %v to %v", c.p, c.n, d, c.lo, c.hi)
			}
			seen[d] = true
		}
		if len(seen) < 100 {
			t.Errorf("%+v: 1000 draws of Delay(%d) gave %d different waits: capped waits do not spread", c.p, c.n, len(seen))
		}
	}
	// Initial = Max leaves no room: every wait is that.
	for _, p := range []Policy{
		{Initial: 4 * time.Second, Max: 4 * time.Second, Jitter: 0.2},
		{Initial: time.Second, Max: 300 * ms, Jitter: 0.2}, // a cap below the first wait wins
	} {
		for n := range 5 {
			if d := p.Delay(n + 1); d != p.Max {
				t.Fatalf("%+v: Delay(%d) = %v, want %v", p, n+1, d, p.Max)
			}
		}
	}
}

func TestBackoffNextAndReset(t *testing.T) {
	b := New(Policy{Initial: 200 * ms, Max: time.Second})
	got := []time.Duration{b.Next(), b.Next(), b.Next(), b.Next()}
	if want := []time.Duration{200 * ms, 400 * ms, 800 * ms, time.Second}; !slices.Equal(got, want) {
		t.Fatalf("Next: %v, want %v", got, want)
	}
	b.Reset()
	if d := b.Next(); d != 200*ms {
		t.Errorf("after Reset, Next = %v, want 200ms", d)
	}
}

func TestSleep(t *testing.T) {
	start := time.Now()
	if !Sleep(context.Background(), 20*ms) {
		t.Fatal("Sleep without a cancelled context reported false")
	}
	if el := time.Since(start); el < 20*ms {
		t.Errorf("Sleep(20ms) returned after %v", el)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if Sleep(ctx, time.Hour) {
		t.Error("Sleep with an ended context reported the whole wait")
	}

	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan bool)
	go func() { done <- Sleep(ctx, time.Hour) }()
	cancel()
	select {
	case full := <-done:
		if full {
			t.Error("Sleep cancelled midway reported the whole wait")
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Sleep did not return within 10s of its context's end")
	}
}
