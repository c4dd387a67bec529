// Package runner is Pacer's domain: jobs, slots and runs.
//
// A Scheduler computes when each job is next due and hands every due slot to
// the Runner. The Runner fires a slot only while this replica leads: it claims
// the slot in etcd under the current term's fencing token, runs one attempt
// through a plugin, and records the result under the same token. Everything a
// run does is logged, counted and traced under one correlation ID.
//
// The package consumes small interfaces (Coordinator, TaskRunner) so that each
// part can be tested alone; runner/fxmodule wires the real ones together.
package runner
