// Package coalesce shares one call of a function among the callers that
// want one at the same time, each answered by a call that began after it
// asked: it sees at least what a call of its own would have seen. Runs that
// end together (a plugin's runs due at the same instant) each want a look
// at the processes they left; n of them cost one or two looks, not n.
package coalesce

import "sync"

// After coalesces the calls of one function. Its zero value is ready to
// use; every caller passes the same function.
type After[T any] struct {
	mu      sync.Mutex
	running bool
	waiting []chan T // callers waiting for the next call
}

// Do returns fn's result from a call that began after Do was called.
// Callers that come while a call runs share the next one, which one of them
// makes; the callers of a call share its result (copy it before changing
// it).
func (a *After[T]) Do(fn func() T) T {
	ch := make(chan T, 1)
	a.mu.Lock()
	a.waiting = append(a.waiting, ch)
	lead := !a.running
	a.running = true
	a.mu.Unlock()
	if lead {
		a.call(fn)
	}
	return <-ch
}

// call answers the callers waiting with one call of fn, and hands those
// that came meanwhile to a goroutine of their own, so that the caller that
// calls returns after one call.
func (a *After[T]) call(fn func() T) {
	a.mu.Lock()
	batch := a.waiting
	a.waiting = nil
	a.mu.Unlock()
	v := fn()
	for _, ch := range batch {
		ch <- v
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.waiting) == 0 {
		a.running = false
		return
	}
	go a.call(fn)
}
