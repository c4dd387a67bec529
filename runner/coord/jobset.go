package coord

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
	"strconv"
	"strings"
)

// JobSet is what a replica schedules, summed up so that replicas can
// compare theirs without shipping their configs: each job's ID with a hash
// of its definition, and a fingerprint of the whole set. The runner builds
// it (runner.JobSetOf); this package stores, publishes and compares it.
type JobSet struct {
	// Fingerprint is the hex SHA-256 of the manifest: equal for equal sets
	// whatever order the jobs were configured in.
	Fingerprint string
	// Jobs maps each job ID to the hash of its definition (hex).
	Jobs map[string]string
	// Shards is the number of shards the jobs are partitioned into
	// (cluster.shards): two replicas that partition them differently
	// would each leave jobs to shards the other does not lead, so it is
	// part of the set.
	Shards int
}

// shardFunc names the function that maps a job to its shard
// (runner/shard.Of), in the manifest: a new one would be a new version.
const shardFunc = "v1"

// NewJobSet builds an unsharded JobSet (one shard) from each job's
// definition hash.
func NewJobSet(jobs map[string]string) JobSet { return NewShardedJobSet(jobs, 1) }

// NewShardedJobSet builds a JobSet of jobs partitioned into shards.
func NewShardedJobSet(jobs map[string]string, shards int) JobSet {
	s := JobSet{Jobs: jobs, Shards: max(shards, 1)}
	if s.Jobs == nil {
		s.Jobs = map[string]string{}
	}
	sum := sha256.Sum256(s.Manifest())
	s.Fingerprint = hex.EncodeToString(sum[:])
	return s
}

// Manifest is the set as text: with more than one shard, a first line
// "#shards\t<count>/v1\n" (no job ID starts with #), then one
// "<job ID>\t<definition hash>\n" line per job, sorted by ID. Job IDs
// cannot hold tabs or newlines. An unsharded set has no shard line, so it
// keeps the fingerprint it had before shards.
func (s JobSet) Manifest() []byte {
	var b bytes.Buffer
	if s.Shards > 1 {
		fmt.Fprintf(&b, "#shards\t%d/%s\n", s.Shards, shardFunc)
	}
	for _, id := range slices.Sorted(maps.Keys(s.Jobs)) {
		b.WriteString(id)
		b.WriteByte('\t')
		b.WriteString(s.Jobs[id])
		b.WriteByte('\n')
	}
	return b.Bytes()
}

// ParseManifest reads a manifest back into a JobSet, checking it against
// the fingerprint it was stored under.
func ParseManifest(fingerprint string, m []byte) (JobSet, error) {
	jobs := map[string]string{}
	shards := 1
	for line := range strings.Lines(string(m)) {
		if rest, ok := strings.CutPrefix(line, "#shards\t"); ok {
			n, err := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(rest), "/"+shardFunc))
			if err != nil || n < 2 {
				return JobSet{}, fmt.Errorf("job set %s: bad shard line %q", Short(fingerprint), line)
			}
			shards = n
			continue
		}
		id, hash, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "\t")
		if !ok || id == "" || hash == "" {
			return JobSet{}, fmt.Errorf("job set %s: bad manifest line %q", Short(fingerprint), line)
		}
		jobs[id] = hash
	}
	s := NewShardedJobSet(jobs, shards)
	if s.Fingerprint != fingerprint {
		return JobSet{}, fmt.Errorf("job set %s: manifest has fingerprint %s", Short(fingerprint), Short(s.Fingerprint))
	}
	return s, nil
}

// Short is the first 12 hex digits of a fingerprint, as logs and the CLI
// show it.
func Short(fingerprint string) string {
	if len(fingerprint) > 12 {
		return fingerprint[:12]
	}
	return fingerprint
}

// JobSetDiff is how a replica's job set differs from another (the
// cluster's), by job ID, each list sorted.
type JobSetDiff struct {
	OnlyHere    []string `json:"only_here,omitempty"`    // jobs the other set lacks
	MissingHere []string `json:"missing_here,omitempty"` // jobs of the other set this one lacks
	Different   []string `json:"different,omitempty"`    // jobs in both, defined differently
	// ShardsHere and ShardsThere are the shard counts, when they differ.
	ShardsHere  int `json:"shards_here,omitempty"`
	ShardsThere int `json:"shards_there,omitempty"`
}

// Diff returns how s differs from other.
func (s JobSet) Diff(other JobSet) JobSetDiff {
	var d JobSetDiff
	if max(s.Shards, 1) != max(other.Shards, 1) {
		d.ShardsHere, d.ShardsThere = max(s.Shards, 1), max(other.Shards, 1)
	}
	for id, h := range s.Jobs {
		switch oh, ok := other.Jobs[id]; {
		case !ok:
			d.OnlyHere = append(d.OnlyHere, id)
		case oh != h:
			d.Different = append(d.Different, id)
		}
	}
	for id := range other.Jobs {
		if _, ok := s.Jobs[id]; !ok {
			d.MissingHere = append(d.MissingHere, id)
		}
	}
	slices.Sort(d.OnlyHere)
	slices.Sort(d.MissingHere)
	slices.Sort(d.Different)
	return d
}

// Empty reports whether the sets were equal.
func (d JobSetDiff) Empty() bool {
	return len(d.OnlyHere) == 0 && len(d.MissingHere) == 0 && len(d.Different) == 0 && d.ShardsHere == d.ShardsThere
}

// String names the differences, at most max job IDs per kind.
func (d JobSetDiff) String() string {
	const max = 10
	var parts []string
	for _, k := range []struct {
		what string
		ids  []string
	}{
		{"only here", d.OnlyHere}, {"missing here", d.MissingHere}, {"defined differently", d.Different},
	} {
		if len(k.ids) == 0 {
			continue
		}
		names := strings.Join(k.ids[:min(len(k.ids), max)], ", ")
		if len(k.ids) > max {
			names += fmt.Sprintf(" and %d more", len(k.ids)-max)
		}
		parts = append(parts, fmt.Sprintf("%d %s (%s)", len(k.ids), k.what, names))
	}
	if d.ShardsHere != d.ShardsThere {
		parts = append(parts, fmt.Sprintf("cluster.shards %d here, %d there", d.ShardsHere, d.ShardsThere))
	}
	if len(parts) == 0 {
		return "no differences"
	}
	return strings.Join(parts, "; ")
}
