package runner_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
)

// Every stored record of a job is reachable through the pages of its
// history, each once, newest first, after its trigger requests; a cursor
// of another job, or one made by hand, is refused. Before, the API read
// at most the newest 1000 records and ignored any cursor (attack 25, W3).
func TestRunsPagesReachEveryStoredRecord(t *testing.T) {
	b := setup(t)
	term := b.waitLeader(t)
	const stored = 7
	var want []string // run IDs, newest first
	for i := range stored {
		rec := runner.Record{Job: "paged", ScheduledTime: time.Unix(int64(1700000000+i), 0).UTC(),
			RunID: observability.NewRunID(), State: observability.OutcomeSuccess}
		body, err := json.Marshal(rec)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.coord.RecordRun(context.Background(), term, "paged", rec.RunID, body, 100, 0); err != nil {
			t.Fatal(err)
		}
		want = append([]string{rec.RunID}, want...)
	}
	// A replica that leads nothing answers: the trigger requests stay
	// pending.
	api := runner.New(runner.Options{Node: "api", Logger: discardLogger()})
	api.SetJobs([]*runner.Job{job("paged", "")})
	ctl := &runner.Control{Runner: api, Store: b.coord}
	var triggers []string // trigger IDs, newest first
	for range 2 {
		tr, err := ctl.Trigger(context.Background(), "paged", "", "test", "")
		if err != nil {
			t.Fatal(err)
		}
		triggers = append([]string{tr.TriggerID}, triggers...)
	}

	for _, limit := range []int{1, 2, 3, 9, 10} {
		var got []string
		cursor, pages := "", 0
		for {
			page, err := ctl.RunsPage(context.Background(), runner.RunsQuery{Job: "paged", Limit: limit, Cursor: cursor})
			if err != nil {
				t.Fatalf("limit %d, page %d: %v", limit, pages+1, err)
			}
			if len(page.Runs) > limit {
				t.Fatalf("limit %d: page of %d", limit, len(page.Runs))
			}
			pages++
			for _, raw := range page.Runs {
				var rec runner.Record
				if err := json.Unmarshal(raw, &rec); err != nil {
					t.Fatal(err)
				}
				if rec.State == runner.StatePending {
					got = append(got, rec.TriggerID)
				} else {
					got = append(got, rec.RunID)
				}
			}
			if page.NextCursor == "" {
				break
			}
			if pages > stored+len(triggers) {
				t.Fatalf("limit %d: still a next page after %d pages", limit, pages)
			}
			cursor = page.NextCursor
		}
		if all := append(slices.Clone(triggers), want...); !slices.Equal(got, all) {
			t.Errorf("limit %d: pages gave\n%v\nwant the trigger requests then every record, newest first\n%v", limit, got, all)
		}
		if wantPages := (stored + len(triggers) + limit - 1) / limit; pages != wantPages {
			t.Errorf("limit %d: %d pages, want %d", limit, pages, wantPages)
		}
	}

	first, err := ctl.RunsPage(context.Background(), runner.RunsQuery{Job: "paged", Limit: 3})
	if err != nil || first.NextCursor == "" {
		t.Fatalf("first page: %v, cursor %q", err, first.NextCursor)
	}
	for _, q := range []runner.RunsQuery{
		{Job: "other", Limit: 3, Cursor: first.NextCursor},
		{Job: "paged", Limit: 3, Cursor: "abc"},
		{Job: "paged", Limit: 3, Cursor: first.NextCursor + "x"},
	} {
		if _, err := ctl.RunsPage(context.Background(), q); !errors.Is(err, runner.ErrBadQuery) {
			t.Errorf("%s: %v, want ErrBadQuery", fmt.Sprintf("job %s cursor %q", q.Job, q.Cursor), err)
		}
	}
}
