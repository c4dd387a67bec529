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
//	Then(Put(slot key, claim), Delete(this job's claims older than retention))
//
// so two replicas can never both claim a slot, whatever either believes about
// its own leadership: a replica whose lease expired no longer has its key, and
// its transaction fails. Results are written back under the same guard.
//
// Lease: the lease is granted by us with a timeout (NewSession alone can hang
// on Grant) and kept alive by the etcd session every TTL/3. Leadership ends
// when the session reports its lease gone. Tracking the lease deadline locally
// to self-fence before the server expires the lease is described in
// docs/guarantees.md as work still to do; until then the fenced transactions
// above are what keeps slots exclusive.
package coord
