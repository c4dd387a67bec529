// Package stack grows a new goroutine's stack ahead, while it is shallow.
//
// A goroutine starts with a small stack (a few KiB: the runtime's guess
// from the stacks it scanned at its last collection) and doubles it each
// time a call does not fit, copying the whole stack and walking every
// frame on it to move its pointers. A goroutine that goes deep once, as a
// run's does (a plugin call, a task decoding its params, an etcd request
// served in the process), pays two or three such copies, of a deep stack
// each, and a goroutine per run pays them every run: 5 to 8 % of the
// runner's and of the plugin's CPU at 1,000 no-op runs due together (issue
// 16, ninth pass, docs/guarantees.md). Grow makes the stack large at once,
// one copy of a stack one or two frames deep; a goroutine that goes deeper
// still grows as before, from there.
package stack

// Reserve is the stack Grow makes room for beyond its caller's frames:
// with those, the runtime rounds the stack up to 16 KiB.
const Reserve = 12 << 10

// Grow grows the calling goroutine's stack to hold Reserve more bytes. Call
// it first on a new goroutine that will go deep.
//
//go:noinline
func Grow() {
	var frame [Reserve]byte
	keep(frame[:])
}

// keep keeps Grow's array, and so its frame, from being optimised away.
//
//go:noinline
func keep([]byte) {}
