package coord_test

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner/coord"
)

// note is a pause or resume request's note, as runner.Control writes it.
func note(at time.Time) []byte {
	return fmt.Appendf(nil, `{"by":"test","at":%q}`, at.UTC().Format(time.RFC3339Nano))
}

// A resume appends the stretch it ends (from the pause's time to its own)
// to the job's pause history, with its receipt; a pause while paused keeps
// the stretch going from the first pause, and a resume of a job not paused
// adds nothing. The stretch still open is the flag's. The history keeps
// the last 32 stretches, and goes with the job's other keys (ForgetJob).
func TestPauseHistoryRecordsEachStretch(t *testing.T) {
	b := setup(t)
	c := b.store(t)
	ctx := context.Background()
	base := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	at := func(sec int) time.Time { return base.Add(time.Duration(sec) * time.Second) }
	calls := 0
	set := func(job string, paused bool, sec int) {
		t.Helper()
		calls++
		key := fmt.Sprint("k", calls)
		if _, err := c.SetPaused(ctx, job, paused, note(at(sec)), coord.Idempotency{Key: key, Receipt: []byte(key)}); err != nil {
			t.Fatal(err)
		}
	}
	set("j", false, 0) // not paused: nothing to close
	set("j", true, 10)
	set("j", true, 15) // paused already: the stretch goes on from 10
	set("j", false, 20)
	set("j", true, 30) // still paused
	hist, err := c.PauseHistory(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want := []coord.Pause{{From: at(10), Until: at(20)}, {From: at(30)}}
	if got := hist["j"]; fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("history %v, want %v", got, want)
	}
	for s, paused := range map[int]bool{9: false, 10: true, 19: true, 20: false, 29: false, 30: true, 3600: true} {
		if got := coord.PausedAt(hist["j"], at(s)); got != paused {
			t.Errorf("paused at %ds: %v, want %v", s, got, paused)
		}
	}
	// A repeated resume (same key) is a replay: it appends nothing again.
	if _, err := c.SetPaused(ctx, "j", false, note(at(40)), coord.Idempotency{Key: "once", Receipt: []byte("once")}); err != nil {
		t.Fatal(err)
	}
	if a, err := c.SetPaused(ctx, "j", false, note(at(41)), coord.Idempotency{Key: "once", Receipt: []byte("once")}); err != nil || !a.Replayed {
		t.Fatalf("repeated resume: %+v, %v; want a replay", a, err)
	}
	for i := range 40 {
		set("many", true, 100+2*i)
		set("many", false, 101+2*i)
	}
	if hist, err = c.PauseHistory(ctx); err != nil {
		t.Fatal(err)
	}
	if got := hist["j"]; len(got) != 2 || !got[1].Until.Equal(at(40)) {
		t.Errorf("history after a resume repeated: %v, want two stretches, the second until 40 s", got)
	}
	if got := hist["many"]; len(got) != 32 || !got[0].From.Equal(at(100+2*8)) || !got[31].Until.Equal(at(101+2*39)) {
		t.Errorf("kept %d stretches from %v, want the last 32", len(got), got[0])
	}

	r := b.replica(t, "a")
	waitFor(t, "leadership", 10*time.Second, func() bool { return r.c.Term() != nil })
	jobs, err := r.c.StoredJobs(ctx, false)
	if err != nil || fmt.Sprint(jobs) != "[j many]" {
		t.Fatalf("stored jobs %v, %v; want the jobs with a pause history", jobs, err)
	}
	if err := r.c.ForgetJob(ctx, r.c.Term(), "many"); err != nil {
		t.Fatal(err)
	}
	if n := countKeys(t, b.client(t), "pauses/many"); n != 0 {
		t.Errorf("a forgotten job's pause history is kept")
	}
}

// Pauses and resumes of one job racing from several replicas each take
// effect once (a request whose read of the flag or history is stale by
// its write reads again), and every resume that ended a stretch appends
// it: the history and the flag agree.
func TestPauseHistoryUnderConcurrency(t *testing.T) {
	b := setup(t)
	base := time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)
	var wg sync.WaitGroup
	var mu sync.Mutex
	applied := 0
	for w := range 4 {
		c := b.store(t)
		wg.Go(func() {
			for i := range 10 {
				key := fmt.Sprint(w, "-", i)
				_, err := c.SetPaused(context.Background(), "j", i%2 == 0, note(base.Add(time.Duration(w*100+i)*time.Second)),
					coord.Idempotency{Key: key, Receipt: []byte(key)})
				if err != nil {
					t.Error(err)
					return
				}
				mu.Lock()
				applied++
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	hist, err := b.store(t).PauseHistory(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if applied != 40 || len(hist["j"]) == 0 || len(hist["j"]) > 20 {
		t.Fatalf("%d requests applied, history %v", applied, hist["j"])
	}
	// Each request took effect once: its receipt is stored (a request
	// that lost a race and was answered without writing would have none).
	if n := countKeys(t, b.client(t), "idempotency/j/"); n != 40 {
		t.Errorf("%d receipts stored for 40 requests", n)
	}
	for _, p := range hist["j"] {
		if p.Until.IsZero() {
			t.Errorf("an open stretch %v in the history: the last request of each replica was a resume", p)
		}
	}
}
