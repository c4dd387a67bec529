package coalesce

import (
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Callers that ask while a call runs do not get its result (it began
// before they asked): they share the next call, one for all of them.
func TestCallersWhileACallRunsShareTheNext(t *testing.T) {
	var a After[int64]
	var calls atomic.Int64
	began, release := make(chan struct{}), make(chan struct{})
	fn := func() int64 {
		n := calls.Add(1)
		if n == 1 {
			close(began)
			<-release // the first call runs while the others ask
		}
		return n
	}
	first := make(chan int64)
	go func() { first <- a.Do(fn) }()
	<-began
	const n = 50
	got := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { got[i] = a.Do(fn) })
	}
	for waiting := 0; waiting < n; runtime.Gosched() { // every caller waits in Do
		a.mu.Lock()
		waiting = len(a.waiting)
		a.mu.Unlock()
	}
	close(release)
	if v := <-first; v != 1 {
		t.Fatalf("the first caller got call %d, want 1", v)
	}
	wg.Wait()
	for i, v := range got {
		if v != 2 {
			t.Fatalf("caller %d got call %d, want 2: the one call after the call running when it asked", i, v)
		}
	}
	if c := calls.Load(); c != 2 {
		t.Fatalf("%d calls, want 2", c)
	}
}
