package runner

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Job states a listing can be filtered by. A job is active or paused (on
// every replica: pause flags are in etcd), or unknown on a replica that has
// not read the pause flags from etcd yet; and running while one of its
// slots runs on the replica answering (the leader: a follower runs none).
const (
	JobActive  = "active"
	JobPaused  = "paused"
	JobUnknown = "unknown"
	JobRunning = "running"
)

// JobStates are the states a listing can be filtered by.
var JobStates = []string{JobActive, JobPaused, JobUnknown, JobRunning}

// Page sizes of a job listing.
const (
	DefaultJobsLimit = 500
	MaxJobsLimit     = 1000
)

// ErrBadQuery means a listing's limit, cursor or state filter is not valid.
var ErrBadQuery = errors.New("bad query")

// JobsQuery selects a page of jobs: those after the cursor, in ID order,
// in any of States (all jobs when empty), at most Limit.
type JobsQuery struct {
	Limit  int
	Cursor string
	States []string
}

// JobsPage is one page of a job listing. NextCursor, when not empty, asks
// for the next page; Total is how many jobs match the filter in all.
type JobsPage struct {
	Jobs       []JobView `json:"jobs"`
	NextCursor string    `json:"next_cursor,omitempty"`
	Total      int       `json:"total"`
}

// jobsCursor is what a cursor holds: the last job ID of the page, and the
// filter it was made for (a cursor is refused with another filter).
type jobsCursor struct {
	After  string `json:"after"`
	States string `json:"states,omitempty"`
}

// A cursor is the JSON of a jobsCursor (runsCursor) and a checksum of it,
// each in base64url, joined by '.': any replica checks one another gave
// out (no secret is needed: a cursor grants nothing), and a cursor made or
// edited by hand is refused rather than read as something it was not. The
// checksum's domain differs by listing, so a cursor of one is refused by
// the other.
const (
	jobsCursorDomain = "pacer jobs cursor v1\x00"
	runsCursorDomain = "pacer runs cursor v1\x00"
)

func cursorSum(domain string, b []byte) []byte {
	sum := sha256.Sum256(append([]byte(domain), b...))
	return sum[:9]
}

func encodeCursor(domain string, v any) string {
	b, _ := json.Marshal(v)
	return base64.RawURLEncoding.EncodeToString(b) + "." + base64.RawURLEncoding.EncodeToString(cursorSum(domain, b))
}

// decodeCursor reads into v the cursor s holds if this API gave it out
// for the listing of domain.
func decodeCursor(domain, s string, v any) bool {
	body, sum, ok := strings.Cut(s, ".")
	if !ok {
		return false
	}
	b, err1 := base64.RawURLEncoding.DecodeString(body)
	got, err2 := base64.RawURLEncoding.DecodeString(sum)
	if err1 != nil || err2 != nil || subtle.ConstantTimeCompare(got, cursorSum(domain, b)) != 1 {
		return false
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	return dec.Decode(v) == nil
}

func encodeJobsCursor(c jobsCursor) string { return encodeCursor(jobsCursorDomain, c) }

// decodeJobsCursor returns the cursor s holds if this API gave it out.
func decodeJobsCursor(s string) (jobsCursor, bool) {
	var c jobsCursor
	if !decodeCursor(jobsCursorDomain, s, &c) || c.After == "" {
		return c, false
	}
	return c, true
}

// ParseJobStates reads a comma-separated state filter.
func ParseJobStates(s string) ([]string, error) {
	if s == "" {
		return nil, nil
	}
	var out []string
	for st := range strings.SplitSeq(s, ",") {
		st = strings.TrimSpace(st)
		if !slices.Contains(JobStates, st) {
			return nil, fmt.Errorf("%w: state %q: want one or more of %s, comma-separated", ErrBadQuery, st, strings.Join(JobStates, ", "))
		}
		if !slices.Contains(out, st) {
			out = append(out, st)
		}
	}
	slices.Sort(out)
	return out, nil
}

// JobsPage lists a page of jobs, in ID order. Pages are keyed by job ID,
// not position, so a config reload between two pages neither repeats nor
// skips a job that stays.
func (c *Control) JobsPage(q JobsQuery) (JobsPage, error) {
	switch {
	case q.Limit == 0:
		q.Limit = DefaultJobsLimit
	case q.Limit < 0 || q.Limit > MaxJobsLimit:
		return JobsPage{}, fmt.Errorf("%w: limit %d: want 1 to %d", ErrBadQuery, q.Limit, MaxJobsLimit)
	}
	states := strings.Join(q.States, ",")
	var after string
	if q.Cursor != "" {
		cur, ok := decodeJobsCursor(q.Cursor)
		if !ok {
			return JobsPage{}, fmt.Errorf("%w: cursor %q is not one this API gave out; start again without it", ErrBadQuery, q.Cursor)
		}
		if cur.States != states {
			return JobsPage{}, fmt.Errorf("%w: the cursor is for state=%q, not %q; keep the filter while paging", ErrBadQuery, cur.States, states)
		}
		after = cur.After
	}
	jobs := c.Runner.Jobs()
	page := JobsPage{Jobs: []JobView{}}
	cs := c.clusterShards()
	start, _ := slices.BinarySearchFunc(jobs, after, func(j *Job, id string) int { return strings.Compare(j.ID, id) })
	for i, j := range jobs {
		if !c.matches(j, q.States) {
			continue
		}
		page.Total++
		switch {
		case i < start || q.Cursor != "" && j.ID == after: // up to the cursor
		case len(page.Jobs) < q.Limit:
			page.Jobs = append(page.Jobs, c.view(j, cs))
		case page.NextCursor == "": // a match beyond the page: there is a next one
			page.NextCursor = encodeJobsCursor(jobsCursor{After: page.Jobs[len(page.Jobs)-1].ID, States: states})
		}
	}
	return page, nil
}

func (c *Control) matches(j *Job, states []string) bool {
	if len(states) == 0 {
		return true
	}
	paused, running := c.Runner.JobState(j.ID)
	known := c.Runner.PausesRead()
	for _, s := range states {
		switch {
		case s == JobPaused && paused && known, s == JobActive && !paused && known, s == JobUnknown && !known, s == JobRunning && running > 0:
			return true
		}
	}
	return false
}
