package api_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
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
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// memStore is an in-memory ControlStore.
type memStore struct {
	mu       sync.Mutex
	paused   map[string]bool
	triggers []string
	receipts map[string][]byte // job/idempotency key -> receipt
	full     *coord.LimitError // refuse trigger requests with this
	err      error             // fail every write with this
}

// apply applies an idempotent write once per key.
func (m *memStore) apply(job string, idem coord.Idempotency, effect func()) (coord.Applied, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.err != nil {
		return coord.Applied{}, m.err
	}
	if r, ok := m.receipts[job+"/"+idem.Key]; ok {
		return coord.Applied{Receipt: r, Replayed: true}, nil
	}
	effect()
	m.receipts[job+"/"+idem.Key] = idem.Receipt
	return coord.Applied{Receipt: idem.Receipt}, nil
}

func (m *memStore) SetPaused(_ context.Context, job string, p bool, _ []byte, idem coord.Idempotency) (coord.Applied, error) {
	return m.apply(job, idem, func() { m.paused[job] = p })
}

func (m *memStore) RequestTrigger(_ context.Context, job, _ string, body []byte, idem coord.Idempotency, _ coord.TriggerLimits) (coord.Applied, error) {
	if m.full != nil {
		return coord.Applied{}, m.full
	}
	return m.apply(job, idem, func() { m.triggers = append(m.triggers, job+" "+string(body)) })
}

func (m *memStore) Triggers(context.Context, string) ([]coord.Trigger, error) { return nil, nil }

func (m *memStore) Runs(context.Context, string, int) ([][]byte, error) {
	return [][]byte{[]byte(`{"job":"a","state":"success"}`)}, nil
}

func (m *memStore) State(context.Context) (coord.ClusterState, error) {
	return coord.ClusterState{Cluster: "c", Leader: "n1", FencingToken: 7}, nil
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
		{"malformed body", "POST", "/api/v1/jobs/a/pause", "s3cret", "{nope", nil, 400, "JSON object"},
		{"oversized body", "POST", "/api/v1/jobs/a/pause", "s3cret", `{"x":"` + strings.Repeat("a", 70<<10) + `"}`, nil, 413, "over"},
		{"pause", "POST", "/api/v1/jobs/a/pause", "s3cret", `{}`, nil, 200, ""},
		{"runs need a job", "GET", "/api/v1/runs", "", "", nil, 400, "job is required"},
		{"runs bad limit", "GET", "/api/v1/runs?job=a&limit=0", "", "", nil, 400, "limit"},
		{"runs", "GET", "/api/v1/runs?job=a&limit=5", "", "", nil, 200, ""},
		{"runs unknown job", "GET", "/api/v1/runs?job=zz", "", "", nil, 404, "unknown job"},
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
	if len(store.triggers) != 1 || !strings.Contains(store.triggers[0], `"correlation_id":"corr-42"`) {
		t.Fatalf("trigger requests: %q", store.triggers)
	}
	if !store.paused["a"] {
		t.Fatal("job not paused")
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
	for _, bad := range [][]string{
		{"Idempotency-Key", "has space"},
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
