package runner_test

import (
	"sync/atomic"
	"testing"

	"github.com/pacerun/pacer/runner"
)

// The pause flags are known only while they have been read, the watch of
// them has not broken since, and the replica still hears from etcd: a
// replica cut off from etcd says its jobs' state is unknown, not what it
// last read (docs/operations.md, the jobs API).
func TestPausesReadOnlyWhileInTouch(t *testing.T) {
	t.Parallel()
	var fresh atomic.Bool
	fresh.Store(true)
	r := runner.New(runner.Options{Node: "n1", PausesFresh: fresh.Load})
	if r.PausesRead() {
		t.Fatal("known before the flags were read")
	}
	r.SetPaused(map[string]bool{"a": true})
	if !r.PausesRead() {
		t.Fatal("unknown after the flags were read")
	}
	fresh.Store(false)
	if r.PausesRead() {
		t.Fatal("known while the replica does not hear from etcd")
	}
	fresh.Store(true)
	if !r.PausesRead() {
		t.Fatal("unknown once the replica hears from etcd again")
	}
	r.PausesLost()
	if r.PausesRead() {
		t.Fatal("known after the watch broke")
	}
	if paused, _ := r.JobState("a"); !paused {
		t.Fatal("the watch breaking dropped the flags the scheduler goes by")
	}
	r.SetPaused(map[string]bool{})
	if !r.PausesRead() {
		t.Fatal("unknown after the flags were read again")
	}
}
