// Package coord coordinates runner replicas through etcd: leader election,
// fencing tokens and slot claims.
//
// # Design
//
// Jobs are partitioned into shards (runner/shard: a hash of the job ID),
// and each shard has its own election: every replica holds one etcd
// session (one lease) and campaigns, on it, for the shards the assignment
// gives it (shard.Assign over the Roster's candidates, the same on every
// replica). Coordinator.Run keeps the session and a goroutine per shard:
//
//	            grant lease (bounded by RequestTimeout), open session,
//	            start the guard (fence.go) — for the whole session
//	no session ────────────────────────────────────────► session
//	   ▲                                                    │ per shard assigned,
//	   │                                                    │ while the gate is open
//	   │ fence fired / lease lost: every term ends          ▼
//	   └──────────────────────────────────────────── campaigning
//	                                                        │ every older key gone,
//	  unassigned before winning: key removed ◄──────────────┤ and ours still has
//	                                                        │ CreateRevision == rev
//	                                                        ▼
//	                                                 leading (term = shard, token)
//	     unassigned, roster unchanged for Settle,           │
//	     new owner's key waiting in line; or the gate       │
//	     closed ────────────────────────────────────────────┤ ctx done (SIGTERM)
//	                                                        ▼
//	        hand-over: stop firing, drain runs, end the term, write the
//	        hand-over mark, resign (delete the key); on SIGTERM also
//	        revoke the lease
//
// The fencing token of a term is the create revision of the replica's key
// under the shard's election prefix (leader/<shard>/). It only ever
// increases across the shard's terms, because etcd revisions do; tokens of
// different shards are unrelated. Term returns shard 0's term: its leader
// is the cluster's leader (pacer_leader).
//
// # Claims
//
// A slot is (job ID, scheduled time). Each job has one claim key,
// claims/<job>, whatever the number of its slots (claims.go, claimState):
//
//	floor   every slot at or before it is decided
//	slots   the latest finished claimed slots after floor (at most 16)
//	open    claimed slots not finished yet, each with its claim (node,
//	        fencing token, correlation ID, attempt)
//	success when the job's last successful run ended (decides no claim:
//	        the shard's next leader exports it from the read its term
//	        starts with; FinishSlot and FinishTrigger write it)
//
// A slot may be claimed if it is after floor and neither finished nor open.
// Each term keeps a copy of the claim keys of its shard's jobs (read once,
// in one range read shared by the terms a replica starts together, when
// the term first needs it; a replica holds copies of the shards it leads
// only) and decides each claim from it; the claim is then written with one
// transaction:
//
//	If(CreateRevision(shard's leader key) == token && ModRevision(claim key) == copy's)
//	Then(Put(claim key, state with the slot open))
//
// so two replicas can never both claim a slot, whatever either believes about
// its own leadership: a replica whose lease expired no longer has its key,
// and its transaction fails; a key changed behind the copy (a transaction
// that timed out but landed, an operator's edit) fails the revision
// comparison, is read again from the failure branch, and the claim decided
// again. Claims due together are batched (batch.go), whatever their shard:
// a transaction carries the guard of every term it writes for, and a stale
// term fails (and ends) only its own claims, the rest being decided again.
// A claim under a term of another shard than the job's is refused. At most
// one transaction per claim key is in flight. A finished slot
// joins slots; when more than 16 are kept, the oldest leaves and floor
// moves up to it: an older slot is refused by comparison (ErrSlotTooOld)
// rather than by keeping a key per slot, and the key stays a few hundred
// bytes. Run and skip records (runs/<job>/<run id>) are written in batches
// under the same guard, at most about history.keep per job; the record of a
// slot's last attempt closes its claim in the same transaction.
//
// How each kind of run is claimed:
//
//   - A scheduled slot: Claim, by the scheduler of its shard's leader; the
//     record of its last attempt closes it (retries are attempts of the
//     same claim).
//   - overlap: allow: several slots of a job are open at once; each closes
//     alone, whatever was claimed after it.
//   - A scheduled slot that does not run (overlap "forbid", max_concurrency,
//     a slot replaced before it started, a paused job): SkipSlot, which
//     marks it decided with its skip record in one transaction, as a claim
//     would, so that no later term of the shard (after a failover or a
//     hand-over) runs it or records it again.
//   - Misfire catch-up, when a shard's term starts (runner/catchup.go): from
//     one Claims read, the slots after each of the shard's jobs' last claim
//     (a job never claimed: after the first epoch whose job set has it)
//     that came due before the term are decided: the ones that run (the
//     latest for "once", every one within the grace for "all", up to 100,
//     and every slot a hand-over held back, up to 100) are claimed
//     together, before the scheduler claims anything in the term, and then
//     run one after the other; the rest get one skip record per run of
//     consecutive slots, written with the first claim, the latest's with
//     SkipSlot, which marks the latest slot decided when it is skipped
//     (none runs, or more were missed than run). The shard's jobs join the
//     runner's scheduler only then.
//   - Delivery, when a term starts: a slot left open by an older term (its
//     leader died mid-run) is, at-least-once, taken over with Reclaim
//     (guarded by the open claim read) and run again as its next attempt,
//     with ReclaimRecording when the attempt taken over has no record yet
//     (its record goes with the takeover); at-most-once, closed by its
//     "lock_lost" skip record.
//   - A manual trigger has no slot: its request key is its claim. The
//     fenced decision to run it replaces the request by the run's claim,
//     and the run's last record removes it (triggers.go).
//
// Keys of jobs that are no longer configured (claim key, horizon, pause
// flag and history, run records, trigger requests, idempotency receipts) are removed
// by the leader of the job's shard (ForgetJob). Keys of the previous
// layout (a key per slot, kept 24 hours, and a horizon per job) are moved
// into the claim keys when the leader of the job's shard first reads the
// claims (migrate.go). The leader of shard 0 compacts etcd
// (Options.CompactionInterval).
//
// Lease and self-fencing: the lease is granted by us with a timeout
// (NewSession alone can hang on Grant). For as long as the session lives,
// guard (fence.go) sends its own keepalives every TTL/3, each bounded by
// TTL/3 and WithRequireLeader, and tracks the local lease deadline: the send
// time of the last acknowledged keepalive + TTL - margin, on the monotonic
// clock. The server cannot expire the lease before then. When the deadline
// passes, the session ends and every term on it (runs are cancelled) before
// another replica can be elected for any of its shards. Session.Done() is not
// relied on: it fires only after the client's own deadline, which can be
// after the server has already expired the lease. The fenced transactions
// above remain the safety net for writes.
//
// The gate (Options.Gate) says whether this replica may lead at all. The
// Membership (members.go) is the runner's gate: every replica publishes its
// job set's fingerprint on its session's lease, and a replica whose set is
// not the one most live members hold (on a tie, the one most shards'
// newest epochs name, then the longest-standing member's; Agree) campaigns for no shard and hands over every shard it
// leads, with cluster.job_set_mismatch: refuse. Its roster of candidates
// for the assignment is the holders of the cluster's set. Each shard's
// leader records which job set it runs from when (epochs.go), so that a
// later leader of the shard can tell a slot missed for want of a leader
// from one the leader of the time did not have.
//
// A hand-over (shards.go) leaves a mark, handovers/<shard>, written under
// the ending term's guard: from when firing stopped. The next leader takes
// it (TakeHandOver) and runs the slots due since then late, rather than
// applying the misfire policy to them: they were held back, not missed. A
// mark taken later than a lease TTL after the resignation (a lone replica
// restarted, or a crash came between) holds back the drain's slots only,
// up to the resignation.
//
// Manual trigger requests are not slots: each is its own key, and the
// leader of the job's shard decides it (run or skip) in one fenced transaction that compares
// the request's revision and removes or replaces it (triggers.go).
// Mutating API requests store idempotency receipts with their effect
// (idempotency.go).
package coord
