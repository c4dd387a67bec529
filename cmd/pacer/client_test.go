package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
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

// A mutating call whose outcome is unknown is repeated with the same
// Idempotency-Key after the CLI's own doubling pause, or after the
// Retry-After a runner over its rate limit asks for (which does not count
// as a step of the doubling).
func TestMutateRepeatsWithBackoffAndTheSameKey(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var keys []string
	answers := []func(http.ResponseWriter){
		func(w http.ResponseWriter) {
			http.Error(w, `{"error":"etcd unavailable"}`, http.StatusServiceUnavailable)
		},
		func(w http.ResponseWriter) {
			http.Error(w, `{"error":"etcd unavailable"}`, http.StatusServiceUnavailable)
		},
		func(w http.ResponseWriter) {
			w.Header().Set("Retry-After", "1")
			http.Error(w, `{"error":"rate limited"}`, http.StatusTooManyRequests)
		},
		func(w http.ResponseWriter) { http.Error(w, `{"error":"etcd unavailable"}`, http.StatusGatewayTimeout) },
		func(w http.ResponseWriter) { w.Write([]byte(`{"state":"accepted"}`)) },
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		n := len(keys)
		keys = append(keys, r.Header.Get("Idempotency-Key"))
		mu.Unlock()
		answers[min(n, len(answers)-1)](w)
	}))
	defer srv.Close()
	defer srv.Client().CloseIdleConnections()

	c := &clientFlags{addr: srv.URL, output: "json"}
	var stdout, stderr bytes.Buffer
	if _, err := c.mutate("/api/v1/jobs/j/trigger", nil, nil, &stdout, &stderr); err != nil {
		t.Fatalf("mutate: %v\n%s", err, stderr.String())
	}
	if stdout.String() != `{"state":"accepted"}` {
		t.Errorf("stdout %q, want the last answer", stdout.String())
	}
	if len(keys) != 5 || keys[0] == "" || slices.IndexFunc(keys, func(k string) bool { return k != keys[0] }) >= 0 {
		t.Errorf("Idempotency-Keys of the tries: %q, want 5 of one key", keys)
	}
	var pauses []string
	for _, m := range regexp.MustCompile(`trying again in (\S+) with the same Idempotency-Key`).FindAllStringSubmatch(stderr.String(), -1) {
		pauses = append(pauses, m[1])
	}
	if want := []string{"1s", "2s", "1s", "4s"}; !slices.Equal(pauses, want) {
		t.Errorf("pauses %q, want %q (doubling; the Retry-After in between)\n%s", pauses, want, stderr.String())
	}
}

// A 401 is printed readably: the API's message says what to send and where
// the runner reads the token, and the sanitizer every printed error passes
// through finds no credential shape in it to mask (attack 7, B6).
func TestUnauthorizedErrorIsReadable(t *testing.T) {
	r := runner.New(runner.Options{})
	r.SetJobs([]*runner.Job{{ID: "j", Plugin: "shell", Task: "exec", Spec: "@every 1h", Schedule: schedule.Every(time.Hour)}})
	srv := httptest.NewServer(api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Token: "right-token", Control: &runner.Control{Runner: r}}).Handler())
	defer srv.Close()

	for _, token := range []string{"", "wrong-token"} {
		var out, errOut bytes.Buffer
		err := pauseCmd("pause")([]string{"--addr", srv.URL, "--token", token, "j"}, &out, &errOut)
		if err == nil {
			t.Fatalf("pause with token %q: no error", token)
		}
		printed := errorText(err)
		if want := "401 Unauthorized: " + api.UnauthorizedMessage; printed != want {
			t.Errorf("pause with token %q prints\n%s\nwant\n%s", token, printed, want)
		}
		for _, hint := range []string{`"Authorization"`, `"Bearer"`, "http.token_env"} {
			if !strings.Contains(printed, hint) {
				t.Errorf("printed 401 %q lacks %s", printed, hint)
			}
		}
	}
}
