package api

import (
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"slices"
	"strconv"
	"strings"

	"github.com/pacerun/pacer/runner"
)

// jobsPage serves GET /api/v1/jobs?limit=N&cursor=C&state=S: a page of
// jobs in ID order, with the cursor of the next page (next_cursor) while
// there is one, and how many jobs match in all (total).
func (s *Server) jobsPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := onlyParams(q, "/api/v1/jobs", "limit", "cursor", "state"); err != nil {
		s.writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	limit, err := pageLimit(q, runner.MaxJobsLimit)
	if err != nil {
		s.writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	states, err := runner.ParseJobStates(q.Get("state"))
	if err != nil {
		s.writeErr(w, err)
		return
	}
	page, err := s.o.Control.JobsPage(runner.JobsQuery{Limit: limit, States: states, Cursor: q.Get("cursor")})
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}

// runsPage serves GET /api/v1/runs?job=ID&limit=N&cursor=C: a page of a
// job's records, newest first, with the cursor of the next (older) page
// (next_cursor) while there is one.
func (s *Server) runsPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if err := onlyParams(q, "/api/v1/runs", "job", "limit", "cursor"); err != nil {
		s.writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	query := runner.RunsQuery{Job: q.Get("job"), Cursor: q.Get("cursor")}
	if query.Job == "" {
		s.writeError(w, http.StatusBadRequest, "query parameter job is required: /api/v1/runs?job=ID")
		return
	}
	limit, err := pageLimit(q, runner.MaxRunsLimit)
	if err != nil {
		s.writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	query.Limit = limit
	c := s.o.Control
	page, err := c.RunsPage(r.Context(), query)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	out := map[string]any{"job": query.Job, "runs": page.Runs, "configured": true}
	if page.NextCursor != "" {
		out["next_cursor"] = page.NextCursor
	}
	if _, ok := c.Runner.Job(query.Job); !ok {
		out["configured"] = false
		out["note"] = fmt.Sprintf("job %q is not in this replica's config: these are the records stored for it (a removed job's until the leader's sweep removes its keys; a trigger request's expired record)", query.Job)
	}
	writeJSON(w, http.StatusOK, out)
}

// pageLimit reads a listing's limit parameter: 0 (the listing's default)
// when it is not given, or a number from 1 to most.
func pageLimit(q url.Values, most int) (int, error) {
	l := q.Get("limit")
	if l == "" {
		return 0, nil
	}
	n, err := strconv.Atoi(l)
	if err != nil || n < 1 || n > most {
		return 0, fmt.Errorf("limit %q: want a number from 1 to %d", l, most)
	}
	return n, nil
}

// onlyParams refuses a query with a parameter the endpoint path does not
// take, or one given twice: silently ignored, a filter or a cursor would
// answer something other than what was asked (attack 25, W3).
func onlyParams(q url.Values, path string, takes ...string) error {
	for _, name := range slices.Sorted(maps.Keys(q)) {
		if !slices.Contains(takes, name) {
			return fmt.Errorf("query parameter %q: %s takes only %s", name, path, strings.Join(takes, ", "))
		}
		if n := len(q[name]); n > 1 {
			return fmt.Errorf("query parameter %q given %d times: give it once", name, n)
		}
	}
	return nil
}
