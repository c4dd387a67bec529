package runner

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	"github.com/pacerun/pacer/runner/coord"
)

// Page sizes of a job's history.
const (
	DefaultRunsLimit = 20
	MaxRunsLimit     = 1000
)

// RunsQuery selects a page of a job's history: the records after the
// cursor (older ones), at most Limit.
type RunsQuery struct {
	Job    string
	Limit  int
	Cursor string
}

// RunsPage is one page of a job's history, newest first. NextCursor, when
// not empty, asks for the next (older) page.
type RunsPage struct {
	Runs       []json.RawMessage
	NextCursor string
}

// runsCursor is what a runs cursor holds: the job, and where its page
// ended: at the trigger request Trigger (its ID: the next page goes on
// with the older requests, then the records), or at the record Before
// (its run ID: the next page goes on with the older records). Trigger and
// run IDs are UUIDv7, so ID order is time order, and a page is keyed by
// ID, not position: a record written or pruned between two pages does not
// shift the next one.
type runsCursor struct {
	Job     string `json:"job"`
	Trigger string `json:"trigger,omitempty"`
	Before  string `json:"before,omitempty"`
}

// RunsPage returns a page of a job's records, newest first: first its
// manual trigger requests not yet recorded (state pending, or the run's
// claim while it runs), then its stored run and skip records. A job not in
// this replica's config gets the records that are stored for it (a removed
// job's until the sweep removes its keys, a trigger request's expired
// record of a job the leader does not have), and ErrUnknownJob only when
// there are none. Every stored record is reachable by following
// NextCursor; a trigger request that runs between two pages may show on
// both, as pending and as its record.
func (c *Control) RunsPage(ctx context.Context, q RunsQuery) (RunsPage, error) {
	switch {
	case q.Limit == 0:
		q.Limit = DefaultRunsLimit
	case q.Limit < 0 || q.Limit > MaxRunsLimit:
		return RunsPage{}, fmt.Errorf("%w: limit %d: want 1 to %d", ErrBadQuery, q.Limit, MaxRunsLimit)
	}
	var cur runsCursor
	if q.Cursor != "" {
		if !decodeCursor(runsCursorDomain, q.Cursor, &cur) || (cur.Trigger == "") == (cur.Before == "") {
			return RunsPage{}, fmt.Errorf("%w: cursor %q is not one this API gave out; start again without it", ErrBadQuery, q.Cursor)
		}
		if cur.Job != q.Job {
			return RunsPage{}, fmt.Errorf("%w: the cursor is for job %q, not %q; keep the job while paging", ErrBadQuery, cur.Job, q.Job)
		}
	}
	_, configured := c.Runner.Job(q.Job)
	page := RunsPage{Runs: make([]json.RawMessage, 0, min(q.Limit, 64))}
	// The trigger requests come first, on the pages before the records',
	// newest first by ID (their order in etcd but for clocks apart, and
	// the cursor's: each shows once).
	var trs []coord.Trigger
	if cur.Before == "" {
		all, err := c.Store.Triggers(ctx, q.Job)
		if err != nil {
			return RunsPage{}, err
		}
		for _, tr := range all {
			if cur.Trigger == "" || tr.ID < cur.Trigger {
				trs = append(trs, tr)
			}
		}
		slices.SortFunc(trs, func(a, b coord.Trigger) int { return strings.Compare(b.ID, a.ID) })
	}
	for i, tr := range trs {
		if len(page.Runs) == q.Limit {
			page.NextCursor = encodeCursor(runsCursorDomain, runsCursor{Job: q.Job, Trigger: trs[i-1].ID})
			return page, nil
		}
		var req TriggerRequest
		_ = json.Unmarshal(tr.Body, &req)
		rec := Record{Job: q.Job, ScheduledTime: req.RequestedAt, CorrelationID: req.CorrelationID, Manual: true,
			TriggerID: tr.ID, State: StatePending, Start: req.RequestedAt}
		if req.Claim != nil {
			rec = *req.Claim
		}
		b, err := json.Marshal(rec)
		if err != nil {
			return RunsPage{}, err
		}
		page.Runs = append(page.Runs, b)
	}
	// One more than fits: whether there is a next page.
	raw, err := c.Store.RunsBefore(ctx, q.Job, cur.Before, q.Limit-len(page.Runs)+1)
	if err != nil {
		return RunsPage{}, err
	}
	if !configured && q.Cursor == "" && len(trs) == 0 && len(raw) == 0 {
		return RunsPage{}, fmt.Errorf("%w %q", ErrUnknownJob, q.Job)
	}
	for i, r := range raw {
		if len(page.Runs) == q.Limit {
			var next runsCursor
			if i > 0 {
				next = runsCursor{Job: q.Job, Before: raw[i-1].ID}
			} else { // the page ended with the trigger requests (there are some: Limit > 0)
				next = runsCursor{Job: q.Job, Trigger: trs[len(trs)-1].ID}
			}
			page.NextCursor = encodeCursor(runsCursorDomain, next)
			break
		}
		page.Runs = append(page.Runs, r.Value)
	}
	return page, nil
}
