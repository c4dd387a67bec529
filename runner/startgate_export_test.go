package runner

import "time"

// HoldClaims counts a slot fired whose claim is not in yet, until the func
// it returns is called (startGate).
func HoldClaims(r *Runner) func() { return r.claiming.add() }

// SetClaimGateWait sets how long a finishing record waits for claims; call
// it before any slot fires.
func SetClaimGateWait(r *Runner, d time.Duration) { r.claiming.max = d }

// SetRecordPatience sets how long a record write is retried, until the
// test ends; no runner may write meanwhile in another test.
func SetRecordPatience(t interface{ Cleanup(func()) }, d time.Duration) {
	old := recordPatience
	recordPatience = d
	t.Cleanup(func() { recordPatience = old })
}

// Stopping says whether Stop has begun.
func Stopping(r *Runner) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.stopped
}
