package coord

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"maps"
	"slices"
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
}

// NewJobSet builds a JobSet from each job's definition hash.
func NewJobSet(jobs map[string]string) JobSet {
	s := JobSet{Jobs: jobs}
	if s.Jobs == nil {
		s.Jobs = map[string]string{}
	}
	sum := sha256.Sum256(s.Manifest())
	s.Fingerprint = hex.EncodeToString(sum[:])
	return s
}

// Manifest is the set as text: one "<job ID>\t<definition hash>\n" line
// per job, sorted by ID. Job IDs cannot hold tabs or newlines.
func (s JobSet) Manifest() []byte {
	var b bytes.Buffer
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
	for line := range strings.Lines(string(m)) {
		id, hash, ok := strings.Cut(strings.TrimSuffix(line, "\n"), "\t")
		if !ok || id == "" || hash == "" {
			return JobSet{}, fmt.Errorf("job set %s: bad manifest line %q", Short(fingerprint), line)
		}
		jobs[id] = hash
	}
	s := NewJobSet(jobs)
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
}

// Diff returns how s differs from other.
func (s JobSet) Diff(other JobSet) JobSetDiff {
	var d JobSetDiff
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
	return len(d.OnlyHere) == 0 && len(d.MissingHere) == 0 && len(d.Different) == 0
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
	if len(parts) == 0 {
		return "no differences"
	}
	return strings.Join(parts, "; ")
}
