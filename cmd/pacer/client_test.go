package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/api"
	"github.com/pacerun/pacer/runner/schedule"
)

// `pacer jobs` follows every page of the API, in table and JSON output.
func TestJobsCommandFollowsPages(t *testing.T) {
	r := runner.New(runner.Options{})
	var jobs []*runner.Job
	for i := range 7 {
		jobs = append(jobs, &runner.Job{ID: fmt.Sprintf("j%d", i), Plugin: "shell", Task: "exec", Spec: "@every 1h", Schedule: schedule.Every(time.Hour)})
	}
	r.SetJobs(jobs)
	r.SetPaused(map[string]bool{"j1": true, "j4": true})
	srv := httptest.NewServer(api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Control: &runner.Control{Runner: r}}).Handler()) // listing jobs needs no store
	defer srv.Close()

	var out, errOut bytes.Buffer
	if err := jobsCmd([]string{"--addr", srv.URL, "--limit", "2"}, &out, &errOut); err != nil {
		t.Fatalf("jobs: %v (%s)", err, errOut.String())
	}
	for i := range 7 {
		if !strings.Contains(out.String(), fmt.Sprintf("j%d ", i)) {
			t.Fatalf("table lacks j%d:\n%s", i, out.String())
		}
	}
	if n := strings.Count(out.String(), "\n"); n != 8 {
		t.Fatalf("%d lines, want a header and 7 jobs:\n%s", n, out.String())
	}
	out.Reset()
	if err := jobsCmd([]string{"--addr", srv.URL, "--limit", "1", "--state", "paused", "-o", "json"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var listing struct {
		Jobs []struct {
			ID string `json:"id"`
		} `json:"jobs"`
		Total int `json:"total"`
	}
	if err := json.Unmarshal(out.Bytes(), &listing); err != nil || len(listing.Jobs) != 2 || listing.Total != 2 ||
		listing.Jobs[0].ID != "j1" || listing.Jobs[1].ID != "j4" {
		t.Fatalf("json listing %s (%v)", out.String(), err)
	}
	if err := jobsCmd([]string{"--addr", srv.URL, "--state", "asleep"}, &out, &errOut); err == nil || !strings.Contains(err.Error(), `state "asleep"`) {
		t.Fatalf("bad state: %v", err)
	}
}
