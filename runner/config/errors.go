package config

import (
	"sort"
	"strconv"
	"strings"

	"github.com/pacerun/pacer/observability"
)

// Problem is one thing wrong with a configuration file.
type Problem struct {
	File string // file name as given to Parse or Load
	Line int    // 1-based line of the offending value; 0 if unknown
	Path string // key path such as "jobs[1].retries.max_backoff"; empty for the whole file
	Msg  string // what is wrong, and where possible how to fix it
}

// String formats the problem as "file:line: path: msg", leaving out the line
// or path when they are unknown or empty.
func (p Problem) String() string { return p.Where() + ": " + p.Msg }

// Where is where the problem is: "file:line: path", leaving out the line or
// path when they are unknown or empty (a log line's "where", whose message
// says what).
func (p Problem) Where() string {
	var b strings.Builder
	b.WriteString(p.File)
	if p.Line > 0 {
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(p.Line))
	}
	if p.Path != "" {
		b.WriteString(": ")
		b.WriteString(observability.MessagePath(p.Path))
	}
	return b.String()
}

// Error is every problem found in a configuration file, sorted by line.
// Parse and Load return it as a *Error; use errors.As to inspect it.
type Error struct {
	Problems []Problem
}

// Error returns one problem per line.
func (e *Error) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return strings.Join(lines, "\n")
}

// sortProblems orders problems by line, keeps the order in which they were
// found among equal lines, and drops exact duplicates (which an anchor merged
// into several places can produce).
func sortProblems(ps []Problem) []Problem {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
	out := ps[:0]
	seen := make(map[Problem]bool, len(ps))
	for _, p := range ps {
		if seen[p] {
			continue
		}
		seen[p] = true
		out = append(out, p)
	}
	return out
}
