package api

import (
	"fmt"
	"net/http"
	"strconv"

	"github.com/pacerun/pacer/runner"
)

// jobsPage serves GET /api/v1/jobs?limit=N&cursor=C&state=S: a page of
// jobs in ID order, with the cursor of the next page (next_cursor) while
// there is one, and how many jobs match in all (total).
func (s *Server) jobsPage(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	var query runner.JobsQuery
	if l := q.Get("limit"); l != "" {
		n, err := strconv.Atoi(l)
		if err != nil || n < 1 || n > runner.MaxJobsLimit {
			s.writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q: want a number from 1 to %d", l, runner.MaxJobsLimit))
			return
		}
		query.Limit = n
	}
	states, err := runner.ParseJobStates(q.Get("state"))
	if err != nil {
		s.writeErr(w, err)
		return
	}
	query.States, query.Cursor = states, q.Get("cursor")
	page, err := s.o.Control.JobsPage(query)
	if err != nil {
		s.writeErr(w, err)
		return
	}
	writeJSON(w, http.StatusOK, page)
}
