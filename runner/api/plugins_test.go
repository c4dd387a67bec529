package api_test

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/api"
	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/runner/schedule"
)

// POST /api/v1/plugins/{name}/restart needs the bearer token like every
// mutating call, passes force, and maps the host's errors to statuses.
func TestPluginRestartEndpoint(t *testing.T) {
	t.Parallel()
	type req struct {
		name  string
		force bool
	}
	var got []req
	s := api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler), Token: "tok",
		RestartPlugin: func(_ context.Context, name string, force bool) (any, error) {
			got = append(got, req{name, force})
			switch name {
			case "nosuch":
				return nil, fmt.Errorf("%w: %q has no binary", pluginhost.ErrPluginNotFound, name)
			case "busy":
				return pluginhost.Status{Name: name, State: "up"}, fmt.Errorf("%w: 2 runs in progress", pluginhost.ErrPluginBusy)
			case "broken":
				return pluginhost.Status{Name: name, State: "down", Cause: pluginhost.CauseIdentity}, fmt.Errorf("%w: wrong binary", pluginhost.ErrPluginIdentity)
			}
			return pluginhost.Status{Name: name, State: "up", PID: 42}, nil
		}})
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(srv.Close)

	if code, body := call(t, srv, http.MethodPost, "/api/v1/plugins/shell/restart", "", ""); code != http.StatusUnauthorized {
		t.Fatalf("without a token: %d %v", code, body)
	}
	if len(got) != 0 {
		t.Fatal("an unauthenticated request reached the host")
	}
	for _, tc := range []struct {
		path string
		code int
		want req
	}{
		{"/api/v1/plugins/shell/restart", http.StatusOK, req{"shell", false}},
		{"/api/v1/plugins/shell/restart?force=true", http.StatusOK, req{"shell", true}},
		{"/api/v1/plugins/nosuch/restart", http.StatusNotFound, req{"nosuch", false}},
		{"/api/v1/plugins/busy/restart", http.StatusConflict, req{"busy", false}},
		{"/api/v1/plugins/broken/restart", http.StatusServiceUnavailable, req{"broken", false}},
	} {
		got = nil
		code, body := call(t, srv, http.MethodPost, tc.path, "tok", "")
		if code != tc.code || len(got) != 1 || got[0] != tc.want {
			t.Errorf("%s: %d %v (host saw %v), want %d %v", tc.path, code, body, got, tc.code, tc.want)
		}
		if code != http.StatusOK && body["error"] == nil {
			t.Errorf("%s: no JSON error: %v", tc.path, body)
		}
		if code == http.StatusOK || code == http.StatusServiceUnavailable {
			if p, _ := body["plugin"].(map[string]any); p["name"] != tc.want.name {
				t.Errorf("%s: no plugin status in %v", tc.path, body)
			}
		}
	}
	if code, _ := call(t, srv, http.MethodPost, "/api/v1/plugins/shell/restart?force=maybe", "tok", ""); code != http.StatusBadRequest {
		t.Errorf("force=maybe: %d", code)
	}
}

// Every error text the API answers with passes the runner's sanitizer: a
// plugin status's error and last_error (a start failure quotes the plugin's
// stderr), a refused restart, /readyz. Options.Plugins need not sanitize.
func TestErrorTextsAreSanitized(t *testing.T) {
	t.Parallel()
	const secret = "s3kr1t-api"
	leak := fmt.Errorf("start plugin %q: its stderr ended with: %q", "py", "db password="+secret+"\n")
	s := api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Plugins: func() any {
			return []pluginhost.Status{{Name: "py", State: "down", LastError: leak.Error(), Error: "token=" + secret}}
		},
		RestartPlugin: func(context.Context, string, bool) (any, error) {
			return pluginhost.Status{Name: "py", State: "down", LastError: leak.Error()}, leak
		},
		Ready: func(context.Context) error { return fmt.Errorf("plugin py quarantined (cause handshake: %w)", leak) },
	})
	h := s.Handler()
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/api/v1/plugins"},
		{http.MethodPost, "/api/v1/plugins/py/restart"},
		{http.MethodGet, "/readyz"},
	} {
		r := httptest.NewRequest(c.method, c.path, nil)
		if c.method == http.MethodPost {
			r.Header.Set("Content-Type", "application/json")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if body := w.Body.String(); strings.Contains(body, secret) || !strings.Contains(body, "[redacted]") {
			t.Errorf("%s %s: %d %s", c.method, c.path, w.Code, body)
		}
	}
}

// Attack 19, P14: what a plugin says of itself in Describe (its version,
// its SDK's, its tasks' names and descriptions) is masked like a log line and
// its control characters escaped, in /api/v1/plugins and a restart's answer.
// Before, they went out as the plugin sent them: "password=hunter2" and an
// e-mail address in the clear, a newline and an escape sequence that forged
// a row of "pacer plugins" and drove the terminal.
func TestPluginSuppliedTextIsCleaned(t *testing.T) {
	t.Parallel()
	evil := "1.0 password=hunter2 ops@example.com\nshell  up  -  9.9.9  1  0  exec\x1b[2J\r"
	st := pluginhost.Status{Name: "gop", State: "up", PID: 7, Version: evil, SDKVersion: evil,
		Tasks: []pluginhost.TaskInfo{{Name: "work" + evil, Description: evil, ParamsSchema: `{"type":"object"}`}}}
	s := api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Plugins:       func() any { return []pluginhost.Status{st} },
		RestartPlugin: func(context.Context, string, bool) (any, error) { return st, nil },
	})
	const want = `1.0 password=[redacted] [email]\nshell  up  -  9.9.9  1  0  exec\x1b[2J\r`
	h := s.Handler()
	for _, c := range []struct{ method, path string }{
		{http.MethodGet, "/api/v1/plugins"},
		{http.MethodPost, "/api/v1/plugins/gop/restart"},
	} {
		r := httptest.NewRequest(c.method, c.path, nil)
		if c.method == http.MethodPost {
			r.Header.Set("Content-Type", "application/json")
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		var body struct {
			Plugins []pluginhost.Status
			Plugin  pluginhost.Status
		}
		if err := json.Unmarshal(w.Body.Bytes(), &body); err != nil {
			t.Fatalf("%s %s: %d %v: %s", c.method, c.path, w.Code, err, w.Body)
		}
		got := body.Plugin
		if len(body.Plugins) == 1 {
			got = body.Plugins[0]
		}
		if got.Version != want || got.SDKVersion != want || len(got.Tasks) != 1 ||
			got.Tasks[0].Name != "work"+want || got.Tasks[0].Description != want || got.Tasks[0].ParamsSchema != `{"type":"object"}` {
			t.Errorf("%s %s: %+v\nwant version, SDK version, task name and description %q", c.method, c.path, got, want)
		}
	}
	if st.Version != evil || st.Tasks[0].Name != "work"+evil {
		t.Error("cleaning changed the host's own status")
	}
}

// Attack 16, G1: an error that quotes what the caller sent (a limit, a
// path, a flag) passes the sanitizer too. Before, the limit errors of
// /api/v1/jobs and /api/v1/runs and the 404 and 405 texts echoed it as
// sent: an e-mail address, "password=hunter2", an AWS key.
func TestErrorsQuotingTheCallerAreSanitized(t *testing.T) {
	t.Parallel()
	r := runner.New(runner.Options{})
	r.SetJobs([]*runner.Job{{ID: "j", Plugin: "shell", Task: "exec", Spec: "@every 5s", Schedule: schedule.Every(5 * time.Second)}})
	s := api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Control: &runner.Control{Runner: r, Store: &memStore{paused: map[string]bool{}}}})
	h := s.Handler()
	for _, c := range []struct{ method, path, secret, mask string }{
		{http.MethodGet, "/api/v1/jobs?limit=ops@example.com", "ops@example.com", "[email]"},
		{http.MethodGet, "/api/v1/jobs?limit=password%3Dhunter2", "hunter2", "password=[redacted]"},
		{http.MethodGet, "/api/v1/runs?job=j&limit=AKIAIOSFODNN7EXAMPLE", "AKIAIOSFODNN7EXAMPLE", "[aws_key]"},
		{http.MethodGet, "/api/v1/ops@example.com", "ops@example.com", "[email]"},
		{http.MethodDelete, "/api/v1/jobs/ops@example.com/pause", "ops@example.com", "[email]"},
	} {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, httptest.NewRequest(c.method, c.path, nil))
		if body := w.Body.String(); w.Code < 400 || strings.Contains(body, c.secret) || !strings.Contains(body, c.mask) {
			t.Errorf("%s %s: %d %s; want an error with %s, without %s", c.method, c.path, w.Code, body, c.mask, c.secret)
		}
	}
}
