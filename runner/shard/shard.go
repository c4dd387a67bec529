// Package shard partitions jobs into a fixed number of shards and assigns
// the shards to the replicas that may lead them. It is pure computation: the
// coordinator (runner/coord) holds one election per shard and acts on the
// assignment; the runner schedules the jobs of the shards it leads.
//
// # A job's shard
//
// Of maps a job ID to a shard with Lamping and Veach's jump consistent hash
// ("A Fast, Minimal Memory, Consistent Hash Algorithm", 2014) of the first
// eight bytes of the SHA-256 of the ID, read as a big-endian integer. It
// depends on nothing but the ID and the number of shards, so every replica,
// every version and any tool computes the same shard; and when the number of
// shards grows from n to m, only the jobs that must move (about 1 - n/m of
// them) change shard. docs/scaling.md lists reference values.
//
// # Who leads which shard
//
// Assign decides, from the names of the replicas that may lead (and nothing
// else), which one should lead each shard. Every replica that sees the same
// members computes the same assignment, so they agree without talking to
// each other. It is fair (each member gets shards/members shards, or one
// more) and stable: the shards a member keeps when another joins or leaves
// are mostly the ones it had, because each (shard, member) pair has a fixed
// score (rendezvous hashing) and shards go to their best-scoring member
// with room left, best pairs first. Moves beyond the minimum are few and
// measured in the property tests (TestAssignMovesFew).
package shard

import (
	"cmp"
	"crypto/sha256"
	"encoding/binary"
	"slices"
	"strconv"
)

// Default is the number of shards when cluster.shards is not set, and Max
// the most a cluster may have (each shard is one election and one series of
// pacer_shard_leader per replica).
const (
	Default = 16
	Max     = 256
)

// Of returns the shard, in [0, shards), of the job with this ID. shards
// below 1 count as 1.
func Of(jobID string, shards int) int {
	if shards <= 1 {
		return 0
	}
	sum := sha256.Sum256([]byte(jobID))
	return jump(binary.BigEndian.Uint64(sum[:8]), shards)
}

// jump is the jump consistent hash of key into buckets buckets, as
// published (the float64 arithmetic is part of the definition: a product
// and a quotient, which no compiler fuses, so every platform agrees).
func jump(key uint64, buckets int) int {
	b, j := int64(-1), int64(0)
	for j < int64(buckets) {
		b = j
		key = key*2862933555777941757 + 1
		j = int64(float64(b+1) * (float64(int64(1)<<31) / float64((key>>33)+1)))
	}
	return int(b)
}

// Assign returns, for each shard in [0, shards), the member that should
// lead it; every entry is "" when there are no members. Duplicate names
// count once; the order of members does not matter.
//
// Each member gets shards/len(members) shards, and shards%len(members)
// of them one more. The pairs (shard, member) are taken in order of their
// score, highest first; a pair assigns its shard to its member when the
// shard is still free and the member has room: fewer than the base
// number, or exactly the base number while members with one more are still
// fewer than shards%len(members). The sum of the rooms is exactly shards,
// so every shard is assigned.
func Assign(shards int, members []string) []string {
	out := make([]string, max(shards, 0))
	ms := slices.Compact(slices.Sorted(slices.Values(members)))
	if len(ms) > 0 && ms[0] == "" {
		ms = ms[1:]
	}
	if len(ms) == 0 || shards <= 0 {
		return out
	}
	base, extra := shards/len(ms), shards%len(ms)
	type pair struct {
		shard, member int
		score         uint64
	}
	pairs := make([]pair, 0, shards*len(ms))
	for s := range shards {
		for m, name := range ms {
			pairs = append(pairs, pair{s, m, Score(s, name)})
		}
	}
	slices.SortFunc(pairs, func(a, b pair) int {
		return cmp.Or(cmp.Compare(b.score, a.score), cmp.Compare(a.shard, b.shard), cmp.Compare(a.member, b.member))
	})
	count := make([]int, len(ms))
	bigger := 0 // members holding base+1
	left := shards
	for _, p := range pairs {
		if left == 0 {
			break
		}
		if out[p.shard] != "" {
			continue
		}
		switch n := count[p.member]; {
		case n < base:
		case n == base && bigger < extra:
			bigger++
		default:
			continue
		}
		count[p.member]++
		out[p.shard] = ms[p.member]
		left--
	}
	return out
}

// Score is the rendezvous score of a (shard, member) pair: the first eight
// bytes, big-endian, of the SHA-256 of the shard number in decimal, a zero
// byte and the member's name.
func Score(shard int, member string) uint64 {
	b := make([]byte, 0, 8+len(member))
	b = strconv.AppendInt(b, int64(shard), 10)
	b = append(b, 0)
	b = append(b, member...)
	sum := sha256.Sum256(b)
	return binary.BigEndian.Uint64(sum[:8])
}

// Owned returns the shards an assignment gives to member, ascending.
func Owned(assignment []string, member string) []int {
	var out []int
	for s, m := range assignment {
		if m == member {
			out = append(out, s)
		}
	}
	return out
}
