package schedule

import (
	"math/bits"
	"time"
)

// Jitter returns how long to delay the firing of a job's slot: a duration in
// [0, max), or 0 when max <= 0. It is a pure function of (jobID, slot), so every
// replica computes the same delay and therefore the same fire time, and a job's
// slots are spread out independently of other jobs' slots at the same time.
//
// The slot's identity stays its scheduled time: jitter only delays when the
// slot is started. Records, claims and deduplication keep using slot itself,
// never slot+Jitter. Keep max below the schedule's shortest interval
// (ShortestGap, which counts daylight saving), or a delayed slot may start
// after the next slot is due.
//
// The value is part of the cluster's behaviour, so the hash is fixed: 64-bit
// FNV-1a over the bytes of jobID, then slot.Unix() (8 bytes, big-endian) and
// slot.Nanosecond() (4 bytes, big-endian), finished with the murmur3 fmix64
// mixer, then mapped onto [0, max) by multiply-high (Lemire's reduction).
// Changing any of this changes every job's fire times on upgrade.
func Jitter(jobID string, slot time.Time, max time.Duration) time.Duration {
	if max <= 0 {
		return 0
	}
	const (
		offset64 = 14695981039346656037
		prime64  = 1099511628211
	)
	h := uint64(offset64)
	for i := 0; i < len(jobID); i++ {
		h ^= uint64(jobID[i])
		h *= prime64
	}
	sec, nsec := uint64(slot.Unix()), uint64(slot.Nanosecond())
	for i := 56; i >= 0; i -= 8 {
		h ^= sec >> i & 0xff
		h *= prime64
	}
	for i := 24; i >= 0; i -= 8 {
		h ^= nsec >> i & 0xff
		h *= prime64
	}
	// fmix64: FNV-1a's high bits mix the last bytes poorly; this avalanches.
	h ^= h >> 33
	h *= 0xff51afd7ed558ccd
	h ^= h >> 33
	h *= 0xc4ceb9fe1a85ec53
	h ^= h >> 33
	hi, _ := bits.Mul64(h, uint64(max))
	return time.Duration(hi)
}
