package api_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/goleak"

	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/api"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/schedule"
	"github.com/pacerun/pacer/runner/shard"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memStore is an in-memory ControlStore.
type memStore struct {
	mu       sync.Mutex
	paused   map[string]bool
	triggers []string
	receipts map[string][]byte   // job/idempotency key -> receipt
	full     *coord.LimitError   // refuse trigger requests with this
	err      error               // fail every write with this
	stateErr error               // fail State with this (etcd unreachable)
	state    *coord.ClusterState // State's answer, if set
	notes    []string            // the notes stored with pauses and resumes
}

// apply applies an idempotent write once per key.
func (m *memStore) apply(job string, idem coord.Idempotency, effect func()) (coord.Applied, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return coord.Applied{}, m.err
	}
	if m.receipts == nil {
		m.receipts = map[string][]byte{}
	}
	if r, ok := m.receipts[job+"/"+idem.Key]; ok {
		return coord.Applied{Receipt: r, Replayed: true}, nil
	}
	effect()
	m.receipts[job+"/"+idem.Key] = idem.Receipt
	return coord.Applied{Receipt: idem.Receipt}, nil
}

func (m *memStore) SetPaused(_ context.Context, job string, p bool, note []byte, idem coord.Idempotency) (coord.Applied, error) {
	return m.apply(job, idem, func() { m.paused[job] = p; m.notes = append(m.notes, string(note)) })
}

func (m *memStore) RequestTrigger(_ context.Context, job, _ string, body []byte, idem coord.Idempotency, _ coord.TriggerLimits) (coord.Applied, error) {
	if m.full != nil {
		return coord.Applied{}, m.full
	}
	return m.apply(job, idem, func() { m.triggers = append(m.triggers, job+" "+string(body)) })
}

func (m *memStore) Triggers(context.Context, string) ([]coord.Trigger, error) { return nil, nil }

// RunsBefore serves job a's three records (run IDs r1 to r3) and gone's
// one, a page at a time as etcd would.
func (m *memStore) RunsBefore(_ context.Context, job, before string, limit int) ([]coord.StoredRun, error) {
	var all []coord.StoredRun // newest first
	switch job {
	case "a":
		for _, id := range []string{"r3", "r2", "r1"} {
			all = append(all, coord.StoredRun{ID: id, Value: []byte(`{"job":"a","run_id":"` + id + `","state":"success"}`)})
		}
	case "gone": // not configured: a removed job whose keys are still there
		all = []coord.StoredRun{{ID: "r1", Value: []byte(`{"job":"gone","state":"skipped","reason":"expired"}`)}}
	}
	var out []coord.StoredRun
	for _, r := range all {
		if (before == "" || r.ID < before) && len(out) < limit {
			out = append(out, r)
		}
	}
	return out, nil
}

func (m *memStore) State(context.Context) (coord.ClusterState, error) {
	if m.state != nil {
		return *m.state, nil
	}
	if m.stateErr != nil { // what Coordinator.State knows without etcd
		return coord.ClusterState{Cluster: "c", Node: "n1", ShardsLed: []int{}, LastContact: time.Unix(1700000000, 0).UTC()}, m.stateErr
	}
	return coord.ClusterState{Cluster: "c", Node: "n1", Leader: "n1", FencingToken: 7, Members: []string{"n1"},
		ShardCount: 1, Shards: []coord.ShardState{{Shard: 0, Leader: "n1"}}, ShardsLed: []int{0}}, nil
}

func setup(t *testing.T, token string, authAll bool) (*httptest.Server, *memStore) {
	t.Helper()
	r := runner.New(runner.Options{})
	r.SetJobs([]*runner.Job{{ID: "a", Plugin: "shell", Task: "exec", Spec: "@every 5s", Schedule: schedule.Every(5 * time.Second)}})
	store := &memStore{paused: map[string]bool{}, receipts: map[string][]byte{}}
	s := api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Control: &runner.Control{Runner: r, Store: store}, Token: token, AuthAll: authAll})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	return srv, store
}

func call(t *testing.T, srv *httptest.Server, method, path, token, body string, hdr ...string) (int, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json") // what the CLI sends
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, body %s", method, path, ct, b)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatalf("%s %s: not JSON: %s", method, path, b)
	}
	return resp.StatusCode, out
}

func TestJobAPI(t *testing.T) {
	t.Parallel()
	srv, store := setup(t, "s3cret", false)
	tests := []struct {
		name, method, path, token, body string
		hdr                             []string
		want                            int
		wantErr                         string
	}{
		{"list jobs", "GET", "/api/v1/jobs", "", "", nil, 200, ""},
		{"one job", "GET", "/api/v1/jobs/a", "", "", nil, 200, ""},
		{"unknown job", "GET", "/api/v1/jobs/zz", "", "", nil, 404, `unknown job "zz"`},
		{"trigger without token", "POST", "/api/v1/jobs/a/trigger", "", "", nil, 401, "bearer token"},
		{"trigger with wrong token", "POST", "/api/v1/jobs/a/trigger", "nope", "", nil, 401, "bearer token"},
		{"trigger", "POST", "/api/v1/jobs/a/trigger", "s3cret", "", []string{"X-Correlation-ID", "corr-42"}, 202, ""},
		{"trigger unknown job", "POST", "/api/v1/jobs/zz/trigger", "s3cret", "", nil, 404, "unknown job"},
		{"bad correlation id", "POST", "/api/v1/jobs/a/trigger", "s3cret", "", []string{"X-Correlation-ID", "has space"}, 400, "X-Correlation-ID"},
		// Attack 3, B6: IDs the logs would mask are refused, not stored raw.
		{"correlation id with userinfo", "POST", "/api/v1/jobs/a/trigger", "s3cret", "", []string{"X-Correlation-ID", "https://u:S3KRITcid1@x.org"}, 400, "X-Correlation-ID"},
		{"correlation id token", "POST", "/api/v1/jobs/a/trigger", "s3cret", "", []string{"X-Correlation-ID", "gh" + "p_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"}, 400, "X-Correlation-ID: holds what the logs mask"},
		{"correlation id ip", "POST", "/api/v1/jobs/a/trigger", "s3cret", "", []string{"X-Correlation-ID", "10.1.2.3"}, 400, "X-Correlation-ID"},
		{"correlation id uuid and path", "POST", "/api/v1/jobs/a/trigger", "s3cret", "", []string{"X-Correlation-ID", "ci:build/7.2_a-018f6b2c-6d0a-7c3e-9a4b-1f2e3d4c5b6a"}, 202, ""},
		{"malformed body", "POST", "/api/v1/jobs/a/pause", "s3cret", "{nope", nil, 400, "JSON object"},
		{"oversized body", "POST", "/api/v1/jobs/a/pause", "s3cret", `{"x":"` + strings.Repeat("a", 70<<10) + `"}`, nil, 413, "over"},
		// Attack 25, W11: pause and resume took an ID the logs mask, and
		// their audit lines carried "[ipv4]"; and a null body, not an
		// object, was taken.
		{"pause correlation id ip", "POST", "/api/v1/jobs/a/pause", "s3cret", "", []string{"X-Correlation-ID", "10.1.2.3"}, 400, "X-Correlation-ID: holds what the logs mask"},
		{"resume correlation id card", "POST", "/api/v1/jobs/a/resume", "s3cret", "", []string{"X-Correlation-ID", "4111111111111111"}, 400, "X-Correlation-ID: holds what the logs mask"},
		{"null body", "POST", "/api/v1/jobs/a/pause", "s3cret", "null", nil, 400, "request body must be empty or a JSON object: null"},
		{"pause", "POST", "/api/v1/jobs/a/pause", "s3cret", `{}`, []string{"X-Correlation-ID", "ops-ticket-42"}, 200, ""},
		{"runs need a job", "GET", "/api/v1/runs", "", "", nil, 400, "job is required"},
		{"runs bad limit", "GET", "/api/v1/runs?job=a&limit=0", "", "", nil, 400, "limit"},
		{"runs", "GET", "/api/v1/runs?job=a&limit=5", "", "", nil, 200, ""},
		{"runs unknown job", "GET", "/api/v1/runs?job=zz", "", "", nil, 404, "unknown job"},
		// Attack 25, W3: what /runs does not take is refused, naming it,
		// not ignored (a cursor answered page one again, a state filter
		// answered unfiltered, a second job was dropped).
		{"runs cursor not given out", "GET", "/api/v1/runs?job=a&limit=1&cursor=abc", "", "", nil, 400, `cursor "abc" is not one this API gave out`},
		{"runs state", "GET", "/api/v1/runs?job=a&state=failure", "", "", nil, 400, `query parameter "state": /api/v1/runs takes only job, limit, cursor`},
		{"runs unknown parameter", "GET", "/api/v1/runs?job=a&bogus=1", "", "", nil, 400, `query parameter "bogus"`},
		{"runs job twice", "GET", "/api/v1/runs?job=a&job=gone", "", "", nil, 400, `query parameter "job" given 2 times`},
		{"jobs unknown parameter", "GET", "/api/v1/jobs?bogus=1", "", "", nil, 400, `query parameter "bogus": /api/v1/jobs takes only limit, cursor, state`},
		{"jobs state twice", "GET", "/api/v1/jobs?state=paused&state=active", "", "", nil, 400, `query parameter "state" given 2 times`},
		{"cluster", "GET", "/api/v1/cluster", "", "", nil, 200, ""},
		{"no such endpoint", "GET", "/api/v2/jobs", "", "", nil, 404, "no such endpoint"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			code, body := call(t, srv, tc.method, tc.path, tc.token, tc.body, tc.hdr...)
			if code != tc.want {
				t.Fatalf("status %d, want %d; body %v", code, tc.want, body)
			}
			if tc.wantErr != "" && !strings.Contains(body["error"].(string), tc.wantErr) {
				t.Fatalf("error %q lacks %q", body["error"], tc.wantErr)
			}
		})
	}
	if len(store.triggers) != 2 || !strings.Contains(store.triggers[0], `"correlation_id":"corr-42"`) ||
		!strings.Contains(store.triggers[1], `"correlation_id":"ci:build/7.2_a-018f6b2c-6d0a-7c3e-9a4b-1f2e3d4c5b6a"`) {
		t.Fatalf("trigger requests: %q", store.triggers)
	}
	if !store.paused["a"] {
		t.Fatal("job not paused")
	}
	// A job not in this replica's config with records stored (a removed
	// job's, a trigger's expired record): its records, and a note, not 404
	// (attack 10, F10).
	if code, body := call(t, srv, "GET", "/api/v1/runs?job=gone", "", ""); code != 200 || body["configured"] != false ||
		!strings.Contains(fmt.Sprint(body["note"]), "not in this replica's config") || len(body["runs"].([]any)) != 1 {
		t.Fatalf("runs of a job not configured here: %d %v", code, body)
	}
	if _, body := call(t, srv, "GET", "/api/v1/runs?job=a", "", ""); body["configured"] != true || body["note"] != nil {
		t.Fatalf("runs of a configured job: %v", body)
	}
	// A job's history a page at a time, each next page older (attack 25,
	// W3: the cursor was ignored, so a client paging looped on page one).
	var got []any
	path := "/api/v1/runs?job=a&limit=2"
	for pages := 1; ; pages++ {
		code, body := call(t, srv, "GET", path, "", "")
		if code != 200 || pages > 3 {
			t.Fatalf("page %d (%s): %d %v", pages, path, code, body)
		}
		for _, r := range body["runs"].([]any) {
			got = append(got, r.(map[string]any)["run_id"])
		}
		next, ok := body["next_cursor"].(string)
		if !ok {
			break
		}
		if code, body := call(t, srv, "GET", "/api/v1/runs?job=gone&cursor="+url.QueryEscape(next), "", ""); code != 400 ||
			!strings.Contains(fmt.Sprint(body["error"]), `the cursor is for job "a"`) {
			t.Fatalf("a's cursor for gone's history: %d %v", code, body)
		}
		path = "/api/v1/runs?job=a&limit=2&cursor=" + url.QueryEscape(next)
	}
	if fmt.Sprint(got) != "[r3 r2 r1]" {
		t.Fatalf("a's history through its pages: %v, want [r3 r2 r1]", got)
	}
}

func TestAuthAllProtectsReads(t *testing.T) {
	t.Parallel()
	srv, _ := setup(t, "s3cret", true)
	if code, _ := call(t, srv, "GET", "/api/v1/jobs", "", ""); code != 401 {
		t.Fatalf("read without token: %d", code)
	}
	if code, _ := call(t, srv, "GET", "/api/v1/jobs", "s3cret", ""); code != 200 {
		t.Fatalf("read with token: %d", code)
	}
	if code, _ := call(t, srv, "GET", "/healthz", "", ""); code != 200 {
		t.Fatalf("healthz must stay open: %d", code)
	}
}

func callH(t *testing.T, srv *httptest.Server, method, path, token string, hdr ...string) (int, http.Header, map[string]any) {
	t.Helper()
	req, err := http.NewRequest(method, srv.URL+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+token)
	if method != http.MethodGet {
		req.Header.Set("Content-Type", "application/json") // what the CLI sends
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Add(hdr[i], hdr[i+1])
	}
	resp, err := srv.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, out
}

// Mutating requests with an Idempotency-Key take effect once; a request
// that may have been stored is never answered with an error; a full
// trigger queue answers 429 (the job's bound) or 503 (the cluster's) with
// Retry-After.
func TestIdempotentMutations(t *testing.T) {
	t.Parallel()
	srv, store := setup(t, "s3cret", false)
	code, h, first := callH(t, srv, "POST", "/api/v1/jobs/a/trigger", "s3cret", "Idempotency-Key", `"key-1"`)
	if code != 202 || first["state"] != "accepted" || first["idempotency_key"] != "key-1" || h.Get("Idempotent-Replayed") != "" {
		t.Fatalf("first trigger: %d %v", code, first)
	}
	code, h, again := callH(t, srv, "POST", "/api/v1/jobs/a/trigger", "s3cret", "Idempotency-Key", "key-1")
	if code != 202 || again["trigger_id"] != first["trigger_id"] || again["replayed"] != true || h.Get("Idempotent-Replayed") != "true" {
		t.Fatalf("repeated trigger: %d %v %v, want the first one's answer", code, h, again)
	}
	if len(store.triggers) != 1 {
		t.Fatalf("%d trigger requests stored, want 1", len(store.triggers))
	}
	if code, _, body := callH(t, srv, "POST", "/api/v1/jobs/a/pause", "s3cret", "Idempotency-Key", "key-1"); code != 422 ||
		!strings.Contains(body["error"].(string), "a trigger") {
		t.Fatalf("key reused for a pause: %d %v, want 422", code, body)
	}
	if code, _, body := callH(t, srv, "POST", "/api/v1/jobs/a/pause", "s3cret", "Idempotency-Key", "p-1"); code != 200 || body["state"] != "applied" {
		t.Fatalf("pause: %d %v", code, body)
	}
	store.mu.Lock()
	store.paused["a"] = false // resumed by someone else meanwhile
	store.mu.Unlock()
	if code, _, body := callH(t, srv, "POST", "/api/v1/jobs/a/pause", "s3cret", "Idempotency-Key", "p-1"); code != 200 || body["replayed"] != true {
		t.Fatalf("repeated pause: %d %v", code, body)
	}
	if store.paused["a"] {
		t.Fatal("a repeated pause took effect again")
	}

	// Attack 3 (unclear): a key reused with another body is refused (422,
	// as Stripe does), not replayed; the same object written otherwise, or
	// no body and {}, is the same request.
	for _, tc := range []struct {
		key, body string
		code      int
	}{
		{"b-1", `{"note":"deploy 7","n":1}`, 202},
		{"b-1", `{ "n": 1, "note": "deploy 7" }`, 202},
		{"b-1", `{"note":"deploy 8","n":1}`, 422},
		{"b-1", ``, 422},
		{"b-2", ``, 202},
		{"b-2", `{}`, 202},
		{"b-2", `{"x":1}`, 422},
	} {
		code, body := call(t, srv, "POST", "/api/v1/jobs/a/trigger", "s3cret", tc.body, "Idempotency-Key", tc.key)
		if code != tc.code || code == 422 && !strings.Contains(body["error"].(string), "another request body") {
			t.Errorf("key %s body %q: %d %v, want %d", tc.key, tc.body, code, body, tc.code)
		}
	}
	if len(store.triggers) != 3 {
		t.Fatalf("%d trigger requests stored, want 3", len(store.triggers))
	}
	for _, bad := range [][]string{
		{"Idempotency-Key", "has space"},
		// Valid structured-field strings, refused as docs/operations.md
		// says: no spaces, double quotes or backslashes in a key.
		{"Idempotency-Key", `"a b"`},
		{"Idempotency-Key", `"a\"b"`},
		{"Idempotency-Key", `"a\\b"`},
		{"Idempotency-Key", `""`},
		{"Idempotency-Key", strings.Repeat("k", 256)},
		{"Idempotency-Key", "a", "Idempotency-Key", "b"},
	} {
		if code, _, body := callH(t, srv, "POST", "/api/v1/jobs/a/trigger", "s3cret", bad...); code != 400 ||
			!strings.Contains(body["error"].(string), "Idempotency-Key") {
			t.Errorf("key %q: %d %v, want 400", bad[1:], code, body)
		}
	}

	for _, tc := range []struct {
		full *coord.LimitError
		code int
	}{
		{&coord.LimitError{Job: "a", Pending: 100, Limit: 100, PerJob: true}, 429},
		{&coord.LimitError{Job: "a", Pending: 1000, Limit: 1000}, 503},
	} {
		store.mu.Lock()
		store.full = tc.full
		store.mu.Unlock()
		code, h, body := callH(t, srv, "POST", "/api/v1/jobs/a/trigger", "s3cret")
		if code != tc.code || h.Get("Retry-After") == "" || !strings.Contains(body["error"].(string), "not stored") {
			t.Errorf("full (%v): %d %v %v", tc.full, code, h, body)
		}
	}
}

// When etcd fails, a mutating request says whether it was stored: "not
// stored" (503: repeating is safe), or "unconfirmed" (202: it may have
// been, and how to find out), never an error for a request that may run.
func TestMutationOutcomeWhenEtcdFails(t *testing.T) {
	t.Parallel()
	r := runner.New(runner.Options{})
	r.SetJobs([]*runner.Job{{ID: "a", Plugin: "shell", Task: "exec", Spec: "@every 5s", Schedule: schedule.Every(5 * time.Second)}})
	store := &memStore{paused: map[string]bool{}, receipts: map[string][]byte{}}
	s := api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Control: &runner.Control{Runner: r, Store: store, Settle: 300 * time.Millisecond}, Token: "s3cret"})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	store.err = fmt.Errorf("request trigger of a: %w: context deadline exceeded", coord.ErrNotStored)
	if code, _, body := callH(t, srv, "POST", "/api/v1/jobs/a/trigger", "s3cret"); code != 503 ||
		!strings.Contains(body["error"].(string), "repeating the request is safe") {
		t.Fatalf("not stored: %d %v", code, body)
	}
	store.err = errors.New("request trigger of a: outcome unknown: context deadline exceeded")
	for _, path := range []string{"/api/v1/jobs/a/trigger", "/api/v1/jobs/a/pause"} {
		code, _, body := callH(t, srv, "POST", path, "s3cret", "Idempotency-Key", "k-"+path)
		if code != 202 || body["state"] != "unconfirmed" || body["error"] != nil ||
			!strings.Contains(body["detail"].(string), "Idempotency-Key: k-"+path) {
			t.Fatalf("%s, outcome unknown: %d %v; want 202 unconfirmed saying how to find out", path, code, body)
		}
	}
}

// GET /api/v1/jobs pages by job ID and filters by state; a cursor is tied
// to its filter; bad input is a 400 that says what is wrong.
func TestJobsArePagedAndFiltered(t *testing.T) {
	t.Parallel()
	r := runner.New(runner.Options{})
	var jobs []*runner.Job
	for i := range 25 {
		jobs = append(jobs, &runner.Job{ID: fmt.Sprintf("job-%02d", i), Plugin: "shell", Task: "exec", Spec: "@every 5s", Schedule: schedule.Every(5 * time.Second)})
	}
	r.SetJobs(jobs)
	paused := map[string]bool{}
	for i := 0; i < 25; i += 3 {
		paused[fmt.Sprintf("job-%02d", i)] = true
	}
	r.SetPaused(paused)
	s := api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Control: &runner.Control{Runner: r, Store: &memStore{paused: map[string]bool{}}}})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	type page struct {
		Jobs []struct {
			ID    string `json:"id"`
			State string `json:"state"`
		} `json:"jobs"`
		NextCursor string `json:"next_cursor"`
		Total      int    `json:"total"`
	}
	get := func(path string) (int, page, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		var p page
		var e struct{ Error string }
		_ = json.Unmarshal(b, &p)
		_ = json.Unmarshal(b, &e)
		return resp.StatusCode, p, e.Error
	}
	walk := func(query string) (ids []string, pages int, total int) {
		t.Helper()
		cursor := ""
		for {
			path := "/api/v1/jobs?" + query
			if cursor != "" {
				path += "&cursor=" + url.QueryEscape(cursor)
			}
			code, p, msg := get(path)
			if code != 200 {
				t.Fatalf("%s: %d %s", path, code, msg)
			}
			pages++
			total = p.Total
			for _, j := range p.Jobs {
				ids = append(ids, j.ID)
			}
			if cursor = p.NextCursor; cursor == "" {
				return ids, pages, total
			}
			if pages > 100 {
				t.Fatal("the pages do not end")
			}
		}
	}
	all, pages, total := walk("limit=10")
	if len(all) != 25 || pages != 3 || total != 25 || !slices.IsSorted(all) || len(slices.Compact(slices.Clone(all))) != 25 {
		t.Fatalf("limit=10: %d jobs in %d pages (total %d): %v", len(all), pages, total, all)
	}
	if one, pages, _ := walk(""); len(one) != 25 || pages != 1 {
		t.Fatalf("default limit: %d jobs in %d pages", len(one), pages)
	}
	if exact, pages, _ := walk("limit=25"); len(exact) != 25 || pages != 1 {
		t.Fatalf("limit=25: %d jobs in %d pages, want one page without a cursor", len(exact), pages)
	}
	p, pages, total := walk("state=paused&limit=4")
	if len(p) != 9 || total != 9 || pages != 3 {
		t.Fatalf("state=paused: %v in %d pages (total %d)", p, pages, total)
	}
	for _, id := range p {
		if !paused[id] {
			t.Fatalf("state=paused listed %s", id)
		}
	}
	if a, _, _ := walk("state=active"); len(a) != 16 {
		t.Fatalf("state=active: %d jobs, want 16", len(a))
	}
	if both, _, _ := walk("state=active,paused"); len(both) != 25 {
		t.Fatalf("state=active,paused: %d jobs, want 25", len(both))
	}
	if none, _, total := walk("state=running"); len(none) != 0 || total != 0 {
		t.Fatalf("state=running: %v", none)
	}
	_, first, _ := get("/api/v1/jobs?limit=4&state=paused")
	for _, tc := range []struct{ query, want string }{
		{"limit=0", "limit"},
		{"limit=1001", "limit"},
		{"limit=x", "limit"},
		{"state=sleeping", `state "sleeping": want one or more of active, paused, unknown, running`},
		{"cursor=!!", "cursor"},
		{"cursor=bm9wZQ", "cursor"},
		{"state=active&cursor=" + url.QueryEscape(first.NextCursor), "keep the filter"},
		// Attack 3, B14: an undecodable query was answered as page one or
		// with the default limit; a cursor made by hand was read.
		{"cursor=%%%", "malformed query string"},
		{"limit=%zz", "malformed query string"},
		{"cursor=" + base64.RawURLEncoding.EncodeToString([]byte(`{"after":"j05","states":"paused"}`)), "cursor"},
		{"cursor=" + forgedCursor(first.NextCursor), "cursor"},
	} {
		code, _, msg := get("/api/v1/jobs?" + tc.query)
		if code != 400 || !strings.Contains(msg, tc.want) {
			t.Errorf("%s: %d %q, want 400 naming %q", tc.query, code, msg, tc.want)
		}
	}
	// A job listing's cursor is not a history's.
	if code, _, msg := get("/api/v1/runs?job=a&cursor=" + url.QueryEscape(first.NextCursor)); code != 400 || !strings.Contains(msg, "not one this API gave out") {
		t.Errorf("a jobs cursor on /api/v1/runs: %d %q, want 400", code, msg)
	}
	// A reload between pages: jobs removed before the cursor do not shift
	// the next page.
	_, p1, _ := get("/api/v1/jobs?limit=10")
	r.SetJobs(jobs[5:])
	_, p2, _ := get("/api/v1/jobs?limit=10&cursor=" + url.QueryEscape(p1.NextCursor))
	if len(p2.Jobs) == 0 || p2.Jobs[0].ID != "job-10" {
		t.Fatalf("after a reload the next page starts at %v, want job-10", p2.Jobs)
	}
}

type fakeMembers coord.JobSetView

func (f fakeMembers) View() coord.JobSetView { return coord.JobSetView(f) }

// /api/v1/cluster shows each replica's job set and whether it agrees.
func TestClusterShowsEachReplicasJobSet(t *testing.T) {
	t.Parallel()
	r := runner.New(runner.Options{})
	view := fakeMembers{JobSet: "bbbb", ClusterJobSet: "aaaa", JobSetMismatch: "refuse", NotLeading: "job set differs",
		Difference: &coord.JobSetDiff{OnlyHere: []string{"x"}},
		Replicas: []coord.ReplicaView{
			{MemberRecord: coord.MemberRecord{Node: "n1", JobSet: "aaaa", Jobs: 2}, Agrees: true},
			{MemberRecord: coord.MemberRecord{Node: "n2", JobSet: "bbbb", Jobs: 3}},
		}}
	s := api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Control: &runner.Control{Runner: r, Store: &memStore{paused: map[string]bool{}}, Members: view}})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	code, body := call(t, srv, "GET", "/api/v1/cluster", "", "")
	if code != 200 || body["leader"] != "n1" || body["job_set"] != "bbbb" || body["cluster_job_set"] != "aaaa" ||
		body["job_set_agreed"] != false || body["not_leading"] != "job set differs" {
		t.Fatalf("cluster: %d %v", code, body)
	}
	reps, _ := body["replicas"].([]any)
	if len(reps) != 2 || reps[1].(map[string]any)["agrees"] != false || reps[0].(map[string]any)["node"] != "n1" {
		t.Fatalf("replicas %v", body["replicas"])
	}
	// n2 campaigns in no election: members lists it all the same, once,
	// after the election holders; replicas say what each leads.
	if got := fmt.Sprint(body["members"]); got != "[n1 n2]" {
		t.Fatalf("members %s, want [n1 n2]", got)
	}
	if got := fmt.Sprint(reps[0].(map[string]any)["leads_shards"], reps[1].(map[string]any)["leads_shards"]); got != "[0] []" {
		t.Fatalf("leads_shards %s, want [0] []", got)
	}
}

// A replica in an election without a member record (stopping, another
// version) is in members once and among the replicas, with its reason.
func TestClusterListsAnElectionHolderWithoutARecord(t *testing.T) {
	t.Parallel()
	r := runner.New(runner.Options{})
	store := &memStore{paused: map[string]bool{}, state: &coord.ClusterState{Cluster: "c", Node: "n1", Leader: "n3",
		Members: []string{"n3", "n1"}, ShardCount: 2, Shards: []coord.ShardState{{Shard: 0, Leader: "n3"}, {Shard: 1, Leader: "n1"}}}}
	view := fakeMembers{JobSet: "aaaa", ClusterJobSet: "aaaa", JobSetAgreed: true, MayLead: true, Replicas: []coord.ReplicaView{
		{MemberRecord: coord.MemberRecord{Node: "n1", JobSet: "aaaa"}, Agrees: true, Candidate: true},
		{MemberRecord: coord.MemberRecord{Node: "n2", JobSet: "aaaa"}, Agrees: true, Candidate: true}}}
	s := api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Control: &runner.Control{Runner: r, Store: store, Members: view}})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	code, body := call(t, srv, "GET", "/api/v1/cluster", "", "")
	if code != 200 || fmt.Sprint(body["members"]) != "[n3 n1 n2]" {
		t.Fatalf("cluster: %d members %v, want [n3 n1 n2]", code, body["members"])
	}
	reps, _ := body["replicas"].([]any)
	if len(reps) != 3 {
		t.Fatalf("replicas %v", reps)
	}
	n3 := reps[2].(map[string]any)
	if n3["node"] != "n3" || n3["candidate"] != false || fmt.Sprint(n3["leads_shards"]) != "[0]" || n3["reason"] != coord.ReasonNoRecord {
		t.Fatalf("n3: %v", n3)
	}
}

// A replica that cannot read etcd answers /api/v1/cluster with 503 and a
// JSON body: the error and what it knows by itself.
func TestClusterOfAReplicaThatCannotReadEtcd(t *testing.T) {
	t.Parallel()
	r := runner.New(runner.Options{})
	store := &memStore{paused: map[string]bool{}, stateErr: errors.New("read elections: context deadline exceeded")}
	view := fakeMembers{JobSet: "aaaa", ClusterJobSet: "aaaa", JobSetAgreed: true, MayLead: true,
		Replicas: []coord.ReplicaView{{MemberRecord: coord.MemberRecord{Node: "n1", JobSet: "aaaa"}, Agrees: true, Candidate: true}}}
	s := api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Control: &runner.Control{Runner: r, Store: store, Members: view}})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	code, body := call(t, srv, "GET", "/api/v1/cluster", "", "")
	if code != http.StatusServiceUnavailable || body["error"] != "read elections: context deadline exceeded" {
		t.Fatalf("cluster: %d %v", code, body)
	}
	if body["node"] != "n1" || body["last_contact"] != "2023-11-14T22:13:20Z" || body["jobs_state"] != "unknown" ||
		fmt.Sprint(body["shards_led"]) != "[]" || body["job_set"] != "aaaa" {
		t.Fatalf("cut off, the local facts: %v", body)
	}
	// It may not lead now, and says why, also in its own row.
	why, _ := body["not_leading"].(string)
	if body["may_lead"] != false || !strings.HasPrefix(why, "cannot reach etcd since 2023-11-14T22:13:20Z") ||
		!strings.Contains(why, "read elections: context deadline exceeded") {
		t.Fatalf("cut off: may_lead %v, not_leading %q", body["may_lead"], why)
	}
	self := body["replicas"].([]any)[0].(map[string]any)
	if self["candidate"] != false || self["reason"] != why || fmt.Sprint(self["leads_shards"]) != "[]" {
		t.Fatalf("cut off, its own row: %v", self)
	}
}

// shardedMembers is a membership that knows the cluster's shard count
// differs from this replica's.
type shardedMembers struct {
	fakeMembers
	shards int
}

func (s shardedMembers) ClusterShards() int { return s.shards }

// On a replica whose cluster.shards is not the cluster's, the jobs API
// gives each job's shard in the cluster (the cluster's count), and its
// shard under this replica's own count as shard_here.
func TestJobsShowTheClustersShard(t *testing.T) {
	t.Parallel()
	const here, there = 4, 6
	r := runner.New(runner.Options{Shards: here})
	var jobs []*runner.Job
	for i := range 20 {
		jobs = append(jobs, &runner.Job{ID: fmt.Sprintf("job-%02d", i), Plugin: "shell", Task: "exec", Spec: "@every 5s", Schedule: schedule.Every(5 * time.Second)})
	}
	r.SetJobs(jobs)
	serve := func(members runner.Members) *httptest.Server {
		s := api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
			Control: &runner.Control{Runner: r, Store: &memStore{paused: map[string]bool{}}, Members: members}})
		srv := httptest.NewServer(s.Handler())
		t.Cleanup(srv.Close)
		return srv
	}
	odd := serve(shardedMembers{shards: there})
	_, page := call(t, odd, "GET", "/api/v1/jobs", "", "")
	listed := page["jobs"].([]any)
	if len(listed) != len(jobs) {
		t.Fatalf("%d jobs listed, want %d", len(listed), len(jobs))
	}
	differ := 0
	for _, j := range listed {
		j := j.(map[string]any)
		id := j["id"].(string)
		want, wantHere := shard.Of(id, there), shard.Of(id, here)
		if j["shard"] != float64(want) || j["shard_here"] != float64(wantHere) {
			t.Errorf("%s: shard %v, shard_here %v; want the cluster's %d, %d here", id, j["shard"], j["shard_here"], want, wantHere)
		}
		if want != wantHere {
			differ++
		}
		if _, one := call(t, odd, "GET", "/api/v1/jobs/"+id, "", ""); one["shard"] != float64(want) || one["shard_here"] != float64(wantHere) {
			t.Errorf("/api/v1/jobs/%s: shard %v, shard_here %v; want %d, %d", id, one["shard"], one["shard_here"], want, wantHere)
		}
	}
	if differ == 0 {
		t.Fatal("no job's shard differs between the two counts: the test shows nothing")
	}
	// A replica with the cluster's count (or none known): its own shard,
	// no shard_here.
	for _, srv := range []*httptest.Server{serve(fakeMembers{}), serve(shardedMembers{shards: here}), serve(nil)} {
		_, one := call(t, srv, "GET", "/api/v1/jobs/job-03", "", "")
		if _, ok := one["shard_here"]; ok || one["shard"] != float64(shard.Of("job-03", here)) {
			t.Errorf("same count: %v", one)
		}
	}
}

// The cost of GET /api/v1/jobs with 10,000 jobs: every job in one response
// (unpaged: what the API returned before it paged), one default page, the
// largest page, a filtered page, and every page as pacer jobs fetches
// them. The response size is reported as resp_bytes.
func BenchmarkJobsList(b *testing.B) {
	r := runner.New(runner.Options{})
	jobs := make([]*runner.Job, 10000)
	paused := map[string]bool{}
	for i := range jobs {
		jobs[i] = &runner.Job{ID: fmt.Sprintf("job-%05d", i), Plugin: "shell", Task: "exec", Spec: "*/5 * * * * *",
			Schedule: schedule.Every(5 * time.Second), Timezone: "UTC", Timeout: time.Minute}
		if i%10 == 0 {
			paused[jobs[i].ID] = true
		}
	}
	r.SetJobs(jobs)
	r.SetPaused(paused)
	ctl := &runner.Control{Runner: r}
	s := api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler), Control: ctl})
	h := s.Handler()
	for _, q := range []string{"unpaged", "", "limit=1000", "state=paused", "all"} {
		name := map[string]string{"": "default", "all": "every-page"}[q]
		if name == "" {
			name = q
		}
		b.Run(name, func(b *testing.B) {
			var size int
			for b.Loop() {
				if q == "unpaged" { // what GET /api/v1/jobs did before it paged: every job in one response
					w := httptest.NewRecorder()
					w.Header().Set("Content-Type", "application/json")
					_ = json.NewEncoder(w).Encode(map[string]any{"jobs": ctl.Jobs()})
					size = w.Body.Len()
					continue
				}
				if q == "all" { // every page, as pacer jobs fetches them
					size = 0
					cursor := ""
					for {
						w := httptest.NewRecorder()
						h.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/jobs?limit=1000&cursor="+url.QueryEscape(cursor), nil))
						size += w.Body.Len()
						var p struct {
							NextCursor string `json:"next_cursor"`
						}
						_ = json.Unmarshal(w.Body.Bytes(), &p)
						if cursor = p.NextCursor; cursor == "" {
							break
						}
					}
					continue
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, httptest.NewRequest("GET", "/api/v1/jobs?"+q, nil))
				if w.Code != 200 {
					b.Fatal(w.Body.String())
				}
				size = w.Body.Len()
			}
			b.ReportMetric(float64(size), "resp_bytes")
		})
	}
}

// forgedCursor is c with its JSON edited (another job) and its checksum
// kept.
func forgedCursor(c string) string {
	body, sum, _ := strings.Cut(c, ".")
	b, _ := base64.RawURLEncoding.DecodeString(body)
	b = bytes.Replace(b, []byte(`"after":"`), []byte(`"after":"0`), 1)
	return base64.RawURLEncoding.EncodeToString(b) + "." + sum
}

// A replica that has not read the pause flags from etcd (it cannot reach
// it) lists its jobs as "unknown", not "active": it does not know whether
// they are paused. Once it has read them, they are active or paused.
func TestJobsStateIsUnknownUntilThePauseFlagsAreRead(t *testing.T) {
	t.Parallel()
	r := runner.New(runner.Options{})
	r.SetJobs([]*runner.Job{{ID: "a", Plugin: "shell", Task: "exec", Spec: "@every 5s", Schedule: schedule.Every(5 * time.Second)},
		{ID: "b", Plugin: "shell", Task: "exec", Spec: "@every 5s", Schedule: schedule.Every(5 * time.Second)}})
	s := api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Control: &runner.Control{Runner: r, Store: &memStore{paused: map[string]bool{}}}})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	states := func(query string) string {
		t.Helper()
		resp, err := http.Get(srv.URL + "/api/v1/jobs" + query)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var p struct {
			Jobs []struct {
				ID    string `json:"id"`
				State string `json:"state"`
			} `json:"jobs"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&p); err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, j := range p.Jobs {
			out = append(out, j.ID+"="+j.State)
		}
		return strings.Join(out, " ")
	}
	if got := states(""); got != "a=unknown b=unknown" {
		t.Fatalf("before the pause flags are read: %q", got)
	}
	if got := states("?state=active"); got != "" {
		t.Fatalf("state=active before the pause flags are read: %q", got)
	}
	r.SetPaused(map[string]bool{"b": true})
	if got := states(""); got != "a=active b=paused" {
		t.Fatalf("after: %q", got)
	}
	if got := states("?state=unknown"); got != "" {
		t.Fatalf("state=unknown after the pause flags were read: %q", got)
	}
}

// stalledStore is a store whose etcd stopped answering reads: the errors
// coord.Coordinator gives then, and its LastContact.
type stalledStore struct {
	*memStore
	contact time.Time
}

func (s *stalledStore) Triggers(_ context.Context, job string) ([]coord.Trigger, error) {
	return nil, fmt.Errorf("read trigger requests of %s: %w", job, context.DeadlineExceeded)
}

func (s *stalledStore) LastContact() time.Time { return s.contact }

// A read etcd did not answer is a 503 that says so, as pacer status does:
// which replica, since when it has not heard from etcd, what to check
// (attack 7, B10: it was the bare "context deadline exceeded").
func TestReadEtcdDidNotAnswerSaysWhy(t *testing.T) {
	t.Parallel()
	r := runner.New(runner.Options{})
	r.SetJobs([]*runner.Job{{ID: "a", Plugin: "shell", Task: "exec", Spec: "@every 5s", Schedule: schedule.Every(5 * time.Second)}})
	contact := time.Now().Add(-42 * time.Second).Truncate(time.Second)
	for _, tc := range []struct {
		contact time.Time
		since   string
	}{
		{contact, "last heard from etcd at " + contact.UTC().Format(time.RFC3339) + ", 4"}, // 42s or 43s ago
		{time.Time{}, "not heard from etcd since it started"},
	} {
		store := &stalledStore{memStore: &memStore{paused: map[string]bool{}}, contact: tc.contact}
		s := api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
			Control: &runner.Control{Runner: r, Store: store, Node: "b"}})
		srv := httptest.NewServer(s.Handler())
		code, body := call(t, srv, "GET", "/api/v1/runs?job=a", "", "")
		srv.Close()
		msg, _ := body["error"].(string)
		for _, want := range []string{"read trigger requests of a: context deadline exceeded; etcd did not answer replica b in time (" + tc.since,
			"check that etcd is up", "cluster.etcd.endpoints", "ask another replica"} {
			if code != 503 || !strings.Contains(msg, want) {
				t.Errorf("runs while etcd is mute (contact %v): %d %q\nwant it to contain %q", tc.contact, code, msg, want)
			}
		}
		if lc, _ := body["last_contact"].(string); tc.contact.IsZero() != (lc == "") || lc != "" && lc != tc.contact.UTC().Format(time.RFC3339) {
			t.Errorf("last_contact %q, want %v", lc, tc.contact)
		}
	}
}

// A trigger accepted by a replica whose job set differs from the
// cluster's, for a job only it has, says in its 202 answer that it will
// not run (attack 10, F10); a job the cluster has gets no warning.
func TestTriggerOfAJobTheClusterLacksWarns(t *testing.T) {
	t.Parallel()
	r := runner.New(runner.Options{})
	r.SetJobs([]*runner.Job{{ID: "a", Plugin: "shell", Task: "exec", Spec: "@every 5s", Schedule: schedule.Every(5 * time.Second)},
		{ID: "x", Plugin: "shell", Task: "exec", Spec: "@every 5s", Schedule: schedule.Every(5 * time.Second)}})
	view := fakeMembers{JobSet: "bbbb", ClusterJobSet: "aaaa", Difference: &coord.JobSetDiff{OnlyHere: []string{"x"}}}
	s := api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler), Token: "s3cret",
		Control: &runner.Control{Runner: r, Store: &memStore{paused: map[string]bool{}}, Members: view}})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	code, body := call(t, srv, "POST", "/api/v1/jobs/x/trigger", "s3cret", "")
	if w, _ := body["warning"].(string); code != 202 || !strings.Contains(w, `job "x" is in this replica's config but not in the cluster's job set`) ||
		!strings.Contains(w, "reason expired") {
		t.Fatalf("trigger x: %d %v", code, body)
	}
	if code, body := call(t, srv, "POST", "/api/v1/jobs/a/trigger", "s3cret", ""); code != 202 || body["warning"] != nil {
		t.Fatalf("trigger a: %d %v", code, body)
	}
}

// The etcd endpoint /api/v1/cluster reports is masked as the log masks it:
// cluster.etcd.endpoints may carry a user and password, and the call needs
// no token (attack 23, U7). So is the reason in a replica's row, which may
// quote etcd's error.
func TestClusterMasksTheEtcdEndpoint(t *testing.T) {
	t.Parallel()
	r := runner.New(runner.Options{})
	const ep = "http://etcduser:EtcdUrlPw55@127.0.0.1:44379"
	store := &memStore{paused: map[string]bool{}, state: &coord.ClusterState{Cluster: "c", Node: "n1", Leader: "n1",
		Members: []string{"n1"}, ShardCount: 1, Shards: []coord.ShardState{{Shard: 0, Leader: "n1"}},
		Etcd: &coord.EtcdStatus{Endpoint: ep, Error: "dial " + ep + ": refused", At: time.Now()}}}
	view := fakeMembers{JobSet: "aaaa", ClusterJobSet: "aaaa", JobSetAgreed: true, MayLead: true, Replicas: []coord.ReplicaView{
		{MemberRecord: coord.MemberRecord{Node: "n1", JobSet: "aaaa"}, Reason: "etcd at " + ep + " is slow"}}}
	s := api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Control: &runner.Control{Runner: r, Store: store, Members: view}})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)
	code, body := call(t, srv, "GET", "/api/v1/cluster", "", "")
	etcd, _ := body["etcd"].(map[string]any)
	if code != 200 || etcd["endpoint"] != "http://[userinfo]@127.0.0.1:44379" {
		t.Fatalf("cluster: %d etcd %v, want the endpoint without its user-info", code, etcd)
	}
	if b, _ := json.Marshal(body); strings.Contains(string(b), "EtcdUrlPw55") || strings.Contains(string(b), "etcduser") {
		t.Fatalf("the answer shows etcd's credentials: %s", b)
	}
	if store.state.Etcd.Endpoint != ep || view.Replicas[0].Reason != "etcd at "+ep+" is slow" {
		t.Fatal("masking the answer changed the replica's own view")
	}
}

// Who asked for a trigger, pause or resume (the caller's User-Agent) is
// stored in etcd masked, as the audit and "manual trigger" lines log it
// (attack 23, U11).
func TestCallerIsStoredMasked(t *testing.T) {
	t.Parallel()
	srv, store := setup(t, "", false)
	const ua = "curl/8 (password=hunter2 ops@example.com ghp_0123456789abcdefghijklmnopqrstuvwxyzAB)"
	for _, path := range []string{"/api/v1/jobs/a/trigger", "/api/v1/jobs/a/pause"} {
		if code, body := call(t, srv, "POST", path, "", "{}", "User-Agent", ua); code != 200 && code != 202 {
			t.Fatalf("%s: %d %v", path, code, body)
		}
	}
	store.mu.Lock()
	defer store.mu.Unlock()
	if len(store.triggers) != 1 || len(store.notes) != 1 {
		t.Fatalf("stored triggers %q, pause notes %q", store.triggers, store.notes)
	}
	var req runner.TriggerRequest
	if err := json.Unmarshal([]byte(strings.TrimPrefix(store.triggers[0], "a ")), &req); err != nil {
		t.Fatal(err)
	}
	var note struct{ By string }
	if err := json.Unmarshal([]byte(store.notes[0]), &note); err != nil {
		t.Fatal(err)
	}
	const want = "api (curl/8 (password=[redacted] [email] [github_token]))"
	if req.By != want || note.By != want {
		t.Fatalf("stored by: trigger %q, pause %q; want %q", req.By, note.By, want)
	}
}
