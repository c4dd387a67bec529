// Package coord coordinates runner replicas through etcd: leader election,
// fencing tokens and slot claims.
//
// # Design
//
// Every replica runs Coordinator.Run, which loops through these states:
//
//	           grant lease (bounded by RequestTimeout)
//	follower ───────────────────────────────► campaigning
//	   ▲                                          │ Campaign returns
//	   │ session lost / key gone / etcd error     │ and our key still has
//	   │ (term context cancelled)                 │ CreateRevision == Rev()
//	   └──────────────────────────────────── leading (term = token)
//	                                              │ ctx done (SIGTERM)
//	                                              ▼
//	                                 resign, revoke lease, stop
//
// The fencing token of a term is the create revision of the replica's key
// under the election prefix. It only ever increases across terms, because
// etcd revisions do.
//
// A slot is (job ID, scheduled time). Claiming one is a single transaction:
//
//	If(CreateRevision(leader key) == token && CreateRevision(slot key) == 0)
//	Then(Put(slot key, claim),
//	     [Delete(this job's claims older than retention), Put(job's horizon)])
//
// so two replicas can never both claim a slot, whatever either believes about
// its own leadership: a replica whose lease expired no longer has its key, and
// its transaction fails. Results are written back under the same guard. A
// pruned slot's key is gone, so the job's horizon (where its claims were cut)
// is kept, and slots before it are refused, not claimed: a clock far behind
// cannot run them again (batch.go).
//
// Lease and self-fencing: the lease is granted by us with a timeout
// (NewSession alone can hang on Grant). While leading, guard (fence.go) sends
// its own keepalives every TTL/3, each bounded by TTL/3 and WithRequireLeader,
// and tracks the local lease deadline: the send time of the last acknowledged
// keepalive + TTL - margin, on the monotonic clock. The server cannot expire
// the lease before then. When the deadline passes, the term ends (runs are
// cancelled) before another replica can be elected. Session.Done() is not
// relied on: it fires only after the client's own deadline, which can be
// after the server has already expired the lease. The fenced transactions
// above remain the safety net for writes.
//
// Manual trigger requests are not slots: each is its own key, and the
// leader decides it (run or skip) in one fenced transaction that compares
// the request's revision and removes or replaces it (triggers.go).
// Mutating API requests store idempotency receipts with their effect
// (idempotency.go).
package coord
