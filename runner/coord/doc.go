// Package coord coordinates runner replicas through etcd: leader election,
// fencing tokens and slot claims.
//
// # Design
//
// Every replica runs Coordinator.Run, which loops through these states:
//
//	                  gate opens
//	gate closed ────────────────────────► follower ◄─────────────────────┐
//	  ▲   ▲                                  │ grant lease (bounded by   │
//	  │   │ gate closes: stop                │ RequestTimeout)           │
//	  │   │ campaigning                      ▼                           │
//	  │   └─────────────────────────── campaigning                       │
//	  │                                      │ Campaign returns and our  │
//	  │                                      │ key still has             │
//	  │                                      │ CreateRevision == Rev()   │
//	  │ gate closes: end the term,           ▼                           │
//	  └───────────────────────────── leading (term = token) ─────────────┘
//	    Drain, resign                        │        session lost / key gone /
//	                                         │        etcd error (term context
//	                                         │        cancelled)
//	                                         │ ctx done (SIGTERM)
//	                                         ▼
//	                            resign, revoke lease, stop
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
// The gate (Options.Gate) says whether this replica may lead at all. The
// Membership (members.go) is the runner's gate: every replica publishes its
// job set's fingerprint on a member lease of its own, and a replica whose
// set is not the one most live members hold (on a tie, the longest-standing
// member's; Agree) neither campaigns nor keeps leading, with
// cluster.job_set_mismatch: refuse. A leader whose gate closes ends its term
// (cancelling its runs), lets the runner record them (Options.Drain) and
// resigns, so that a replica with the cluster's set leads at once. Each
// leader records which job set it runs from when (epochs.go), so that a
// later leader can tell a slot missed for want of a leader from one the
// leader of the time did not have.
//
// Manual trigger requests are not slots: each is its own key, and the
// leader decides it (run or skip) in one fenced transaction that compares
// the request's revision and removes or replaces it (triggers.go).
// Mutating API requests store idempotency receipts with their effect
// (idempotency.go).
package coord
