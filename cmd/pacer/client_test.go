package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"regexp"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"

	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/api"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
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

// Attack 19, P11: `pacer jobs` gave up after 1,000 pages ("use --state or
// --limit to narrow the listing"), so 1,500 jobs at --limit 1 could not be
// listed, though it promises every page. It follows as many pages as the
// jobs take.
func TestJobsCommandFollowsMoreThanAThousandPages(t *testing.T) {
	r := runner.New(runner.Options{})
	var jobs []*runner.Job
	for i := range 1500 {
		jobs = append(jobs, &runner.Job{ID: fmt.Sprintf("j%04d", i), Plugin: "shell", Task: "exec", Spec: "@every 1h", Schedule: schedule.Every(time.Hour)})
	}
	r.SetJobs(jobs)
	srv := httptest.NewServer(api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Control: &runner.Control{Runner: r}}).Handler())
	defer srv.Close()
	var out, errOut bytes.Buffer
	if err := jobsCmd([]string{"--addr", srv.URL, "--limit", "1"}, &out, &errOut); err != nil {
		t.Fatalf("jobs: %v (%s)", err, errOut.String())
	}
	if n := strings.Count(out.String(), "\n"); n != 1501 {
		t.Fatalf("%d lines, want a header and 1,500 jobs", n)
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

// `pacer plugins` keeps its table narrow: the state and the cause in
// columns, each plugin's error on a line of its own below the table, cut
// short, and whole in -o json (attack 7, B9: an identity error listing the
// plugin's jobs was printed inside the STATE column, ~600 characters wide).
func TestPluginsTablePutsErrorsBelow(t *testing.T) {
	t.Parallel()
	var refs []string
	for i := range 40 {
		refs = append(refs, fmt.Sprintf("c.yaml:%d: jobs[%d]", 10+i, i))
	}
	long := `plugin is not what the jobs expect: /srv/plugins/shell describes itself as plugin "http"; the jobs expect plugin "shell" with task "exec" (` +
		strings.Join(refs, ", ") + ")"
	until := time.Date(2026, 12, 6, 19, 30, 0, 0, time.UTC)
	body, err := json.Marshal(map[string]any{"plugins": []pluginhost.Status{
		{Name: "http", State: "up", Version: "0.1.0", PID: 42, Tasks: []pluginhost.TaskInfo{{Name: "request"}}},
		{Name: "shell", State: "quarantined", Restarts: 4, Quarantined: &until, Cause: pluginhost.CauseIdentity, LastError: long},
		{Name: "report", State: "not_started", Error: `plugin not found: "report" has no binary at /srv/plugins/report`},
	}})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	defer srv.Close()

	var out, errOut bytes.Buffer
	if err := pluginsCmd([]string{"--addr", srv.URL}, &out, &errOut); err != nil {
		t.Fatalf("plugins: %v (%s)", err, errOut.String())
	}
	table, notes, found := strings.Cut(out.String(), "\n\n")
	if !found {
		t.Fatalf("no errors below the table:\n%s", out.String())
	}
	rows := strings.Split(strings.TrimSuffix(table, "\n"), "\n")
	if len(rows) != 4 || !strings.HasPrefix(rows[0], "PLUGIN") || !strings.Contains(rows[0], "CAUSE") {
		t.Fatalf("table:\n%s", table)
	}
	for _, row := range rows {
		if len(row) > 100 {
			t.Errorf("row of %d characters: %q", len(row), row)
		}
	}
	if f := strings.Fields(rows[2]); len(f) < 3 || f[0] != "shell" || f[1] != "quarantined" || f[2] != "identity" {
		t.Errorf("shell row %q: want its state and cause", rows[2])
	}
	lines := strings.Split(strings.TrimSuffix(notes, "\n"), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "shell (quarantined until 2026-12-06T19:30:00Z): plugin is not what the jobs expect") ||
		!strings.HasSuffix(lines[0], "… (cut; -o json has the whole error)") || len([]rune(lines[0])) > 400 ||
		lines[1] != `report: plugin not found: "report" has no binary at /srv/plugins/report` {
		t.Errorf("errors below the table:\n%s", notes)
	}

	out.Reset()
	if err := pluginsCmd([]string{"--addr", srv.URL, "-o", "json"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	var listing struct{ Plugins []pluginhost.Status }
	if err := json.Unmarshal(out.Bytes(), &listing); err != nil || len(listing.Plugins) != 3 || listing.Plugins[1].LastError != long {
		t.Errorf("-o json does not hold the whole error: %v\n%s", err, out.String())
	}
}

// Attack 19, P14: no cell of a table, whatever the runner answers (one of
// an older version did not clean a plugin's version), adds a row or sends
// the terminal a control character: "pacer plugins", "pacer plugins
// restart" and "pacer runs" write them as escapes. Before, a version
// "1.0\nshell  up ..." forged a row and its ESC reached the terminal.
func TestTablesEscapeControlCharacters(t *testing.T) {
	t.Parallel()
	// A clear-screen sequence: the sanitizer every cell passes first
	// removes colour codes (SGR), and leaves this one to the escaping.
	const evil = "1.0\nshell  up  -  9.9.9  1  0  exec\x1b[2JRED\rFAKE"
	const shown = `1.0\nshell  up  -  9.9.9  1  0  exec\x1b[2JRED\rFAKE`
	st := pluginhost.Status{Name: "gop", State: "up", Version: evil, PID: 42, Tasks: []pluginhost.TaskInfo{{Name: "work\tx"}}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		var v any
		switch {
		case strings.HasPrefix(r.URL.Path, "/api/v1/plugins/"):
			v = map[string]any{"plugin": st}
		case r.URL.Path == "/api/v1/plugins":
			v = map[string]any{"plugins": []pluginhost.Status{st}}
		default:
			v = map[string]any{"runs": []map[string]any{{"scheduled_time": time.Now(), "state": "failure", "attempt": 1, "node": "n1", "error": evil}}}
		}
		_ = json.NewEncoder(w).Encode(v)
	}))
	defer srv.Close()
	for _, tc := range []struct {
		args []string
		rows int
		want []string
	}{
		{[]string{"plugins", "--addr", srv.URL}, 2, []string{shown, `work\tx`}},
		{[]string{"plugins", "restart", "gop", "--addr", srv.URL}, 1, []string{"restarted gop: up, pid 42, version " + shown}},
		{[]string{"runs", "j", "--addr", srv.URL}, 2, []string{shown}},
	} {
		var out, errOut bytes.Buffer
		if err := run(tc.args, &out, &errOut); err != nil {
			t.Fatalf("%v: %v (%s)", tc.args, err, errOut.String())
		}
		rows := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
		if len(rows) != tc.rows || strings.ContainsAny(out.String(), "\x1b\r") {
			t.Errorf("%v: %d rows, want %d and no ESC or CR:\n%s", tc.args, len(rows), tc.rows, out.String())
		}
		for _, w := range tc.want {
			if !strings.Contains(out.String(), w) {
				t.Errorf("%v: output lacks %q:\n%s", tc.args, w, out.String())
			}
		}
	}
}

// `pacer runs` on a replica whose etcd does not answer (a SIGSTOPped etcd:
// its port takes connections and never answers) says what pacer status
// says: etcd did not answer this replica, since when, and what to check.
// The coordinator and its etcd client are real. (Attack 7, B10: it printed
// only "read trigger requests of job-b: context deadline exceeded".)
func TestRunsWhileEtcdIsMuteSaysWhy(t *testing.T) {
	t.Parallel()
	mute, err := net.Listen("tcp", "127.0.0.1:0") // never accepted: nothing answers
	if err != nil {
		t.Fatal(err)
	}
	defer mute.Close()
	cli, err := clientv3.New(clientv3.Config{Endpoints: []string{mute.Addr().String()}, Logger: zap.NewNop()})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	r := runner.New(runner.Options{})
	r.SetJobs([]*runner.Job{{ID: "job-b", Plugin: "shell", Task: "exec", Spec: "@every 1h", Schedule: schedule.Every(time.Hour)}})
	store := coord.New(coord.Options{Client: cli, Cluster: "t", Node: "b", RequestTimeout: 300 * time.Millisecond})
	srv := httptest.NewServer(api.New(api.Options{Registry: prometheus.NewRegistry(), Logger: slog.New(slog.DiscardHandler),
		Control: &runner.Control{Runner: r, Store: store, Node: "b"}}).Handler())
	defer srv.Close()

	var out, errOut bytes.Buffer
	err = runsCmd([]string{"--addr", srv.URL, "job-b"}, &out, &errOut)
	if err == nil {
		t.Fatalf("runs while etcd is mute: no error\n%s", out.String())
	}
	printed := errorText(err)
	for _, want := range []string{"503 Service Unavailable: read trigger requests of job-b: ",
		"etcd did not answer replica b in time (not heard from etcd since it started): check that etcd is up",
		"this replica's cluster.etcd.endpoints are right and reachable from its machine", "or ask another replica"} {
		if !strings.Contains(printed, want) {
			t.Errorf("pacer runs prints\n%s\nwant it to contain %q", printed, want)
		}
	}
}

// The help of a client command (-h, or any mistyped flag) shows neither
// the API token nor an address's password taken from the environment,
// which are still used (attack 8, N1: `pacer trigger -h` printed the live
// token as the flag's default, unmasked).
func TestHelpShowsNoSecretFromTheEnvironment(t *testing.T) {
	t.Setenv("PACER_API_TOKEN", "password=hunter2-tok")
	t.Setenv("PACER_ADDR", "http://user:pa55word@127.0.0.1:1")
	for _, args := range [][]string{{"-h"}, {"--no-such-flag"}} {
		var stdout, stderr bytes.Buffer
		if err := statusCmd(args, &stdout, &stderr); err == nil {
			t.Fatalf("status %v: no error", args)
		}
		out := stdout.String() + stderr.String()
		if strings.Contains(out, "hunter2") || strings.Contains(out, "pa55word") || !strings.Contains(out, "-token") {
			t.Errorf("status %v printed:\n%s", args, out)
		}
	}
	var c clientFlags
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	c.register(fs)
	if err := fs.Parse(nil); err != nil || c.token != "password=hunter2-tok" || c.addr != "http://user:pa55word@127.0.0.1:1" {
		t.Fatalf("the environment's token and address are not used: %v, %q, %q", err, c.token, c.addr)
	}
}

// "pacer COMMAND -h" prints the command's flags and succeeds (exit 0, no
// "usage error" line), as "pacer -h" does; "pacer version -h" shows its
// help instead of the version (attack 10, F1).
func TestCommandHelpSucceeds(t *testing.T) {
	cmds := [][]string{{"run"}, {"validate"}, {"jobs"}, {"trigger"}, {"pause"}, {"resume"}, {"runs"},
		{"status"}, {"plugins"}, {"plugins", "check"}, {"plugins", "restart"}}
	for _, cmd := range cmds {
		for _, h := range []string{"-h", "--help"} {
			var stdout, stderr bytes.Buffer
			args := append(slices.Clone(cmd), h)
			if err := run(args, &stdout, &stderr); err != nil {
				t.Errorf("pacer %v: %v (exit %d)", args, err, exitCode(err))
				continue
			}
			if out := stdout.String() + stderr.String(); !strings.Contains(out, "-addr") && !strings.Contains(out, "-config") && !strings.Contains(out, "-only") {
				t.Errorf("pacer %v printed no flags:\n%s", args, out)
			}
		}
	}
	var stdout, stderr bytes.Buffer
	if err := run([]string{"version", "-h"}, &stdout, &stderr); err != nil || !strings.Contains(stdout.String(), "Usage: pacer version") {
		t.Errorf("pacer version -h: %v, printed %q", err, stdout.String())
	}
	// A bad flag is still a usage error.
	if err := run([]string{"status", "--no-such-flag"}, &stdout, &stderr); exitCode(err) != 2 {
		t.Errorf("pacer status --no-such-flag: %v, want exit 2", err)
	}
}

// pacer runs --limit N asks the API for N records (1 to 1000, the API's
// range; attack 10, F2), and prints the note of a job that is not in the
// answering replica's config below the table (F10).
func TestRunsLimitAndNote(t *testing.T) {
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.RawQuery)
		fmt.Fprint(w, `{"job":"gone","runs":[{"state":"skipped","reason":"expired","manual":true}],"configured":false,"note":"job \"gone\" is not in this replica's config"}`)
	}))
	defer srv.Close()
	var out, errOut bytes.Buffer
	if err := runsCmd([]string{"--addr", srv.URL, "gone", "--limit", "50"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if err := runsCmd([]string{"--addr", srv.URL, "gone"}, &out, &errOut); err != nil {
		t.Fatal(err)
	}
	if want := []string{"job=gone&limit=50", "job=gone"}; !slices.Equal(queries, want) {
		t.Errorf("queries %q, want %q", queries, want)
	}
	if !strings.Contains(out.String(), "skipped (expired) [manual]") || !strings.Contains(errOut.String(), `note: job "gone" is not in this replica's config`) {
		t.Errorf("printed:\n%s\nstderr:\n%s", out.String(), errOut.String())
	}
	// An explicit 0 is not "the default" (the API answers limit=0 with 400;
	// G8): every value outside 1 to 1000 is refused before any request.
	queries = nil
	for _, bad := range []string{"1001", "-1", "0", "x"} {
		if err := runsCmd([]string{"--addr", srv.URL, "gone", "--limit", bad}, &out, &errOut); exitCode(err) != 2 {
			t.Errorf("--limit %s: %v, want a usage error", bad, err)
		}
	}
	if err := runsCmd([]string{"--addr", srv.URL, "gone", "--limit", "0"}, &out, &errOut); err == nil || err.Error() != "usage error: --limit 0: want 1 to 1000" {
		t.Errorf("--limit 0: %v", err)
	}
	if len(queries) != 0 {
		t.Errorf("a bad --limit was sent: %q", queries)
	}
}

// pacer jobs --limit N checks N against the API's range (1 to 1000) as
// pacer runs does: an explicit 0 or 1001 is a usage error, exit 2, and no
// request is sent; not given, no limit goes to the API (its default) (G8).
func TestJobsLimitChecked(t *testing.T) {
	var queries []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		queries = append(queries, r.URL.RawQuery)
		fmt.Fprint(w, `{"jobs":[],"total":0}`)
	}))
	defer srv.Close()
	var out, errOut bytes.Buffer
	for _, bad := range []string{"0", "1001", "-1", "x"} {
		err := jobsCmd([]string{"--addr", srv.URL, "--limit", bad}, &out, &errOut)
		if exitCode(err) != 2 {
			t.Errorf("--limit %s: %v, want a usage error", bad, err)
		}
		if bad != "x" && (err == nil || err.Error() != "usage error: --limit "+bad+": want 1 to 1000") {
			t.Errorf("--limit %s: %v", bad, err)
		}
	}
	if len(queries) != 0 {
		t.Fatalf("a bad --limit was sent: %q", queries)
	}
	for _, args := range [][]string{{"--limit", "1000"}, {"--limit", "1"}, nil} {
		if err := jobsCmd(append([]string{"--addr", srv.URL}, args...), &out, &errOut); err != nil {
			t.Fatalf("jobs %q: %v", args, err)
		}
	}
	if want := []string{"limit=1000", "limit=1", ""}; !slices.Equal(queries, want) {
		t.Errorf("queries %q, want %q", queries, want)
	}
}

// Attack 16, G1: a bad flag value is printed only through the sanitizer:
// the flag package's own line, which quoted it as typed, is left out; the
// usage is still printed, and -h still prints it alone.
func TestBadFlagValueIsPrintedMasked(t *testing.T) {
	for _, args := range [][]string{
		{"jobs", "--limit", "ops@example.com"},
		{"runs", "j", "--limit", "ops@example.com"},
		{"validate", "--config", "x.yaml", "--count", "ops@example.com"},
		{"plugins", "restart", "p", "--force=ops@example.com"},
	} {
		var stdout, stderr bytes.Buffer
		err := run(args, &stdout, &stderr)
		printed := stderr.String() + "pacer: " + errorText(err) // as main prints it
		if exitCode(err) != 2 || strings.Contains(printed, "ops@example.com") || !strings.Contains(printed, "[email]") ||
			!strings.Contains(printed, "Usage of") {
			t.Errorf("pacer %q: exit %d, printed %q; want a usage error with [email], the usage, and no address", args, exitCode(err), printed)
		}
	}
	var stdout, stderr bytes.Buffer
	if err := run([]string{"jobs", "-h"}, &stdout, &stderr); err != nil || strings.Count(stderr.String(), "Usage of jobs") != 1 {
		t.Errorf("pacer jobs -h: %v, printed %q; want the usage once", err, stderr.String())
	}
}

// A token holding a character an HTTP header cannot carry is a usage error
// (exit 2) said before any request, without the token: before, the CLI
// said it could not reach the runner ("is it running?") and tried again
// for half a minute (attack 23, U3).
func TestTokenNoHeaderCanCarryIsAUsageError(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
	defer srv.Close()
	for _, token := range []string{"tok\nX-Evil: 1", "abc\x01secret", "x\x7fy"} {
		var out, errOut bytes.Buffer
		err := pauseCmd("pause")([]string{"--addr", srv.URL, "--token", token, "j"}, &out, &errOut)
		if !errors.Is(err, errUsage) || !strings.Contains(errorText(err), "the API token (--token, env PACER_API_TOKEN) holds a control character") {
			t.Errorf("pause with token %q: %v, want a usage error naming the control character", token, err)
		}
		if strings.Contains(errorText(err)+errOut.String(), "secret") || strings.Contains(errorText(err), "Evil") {
			t.Errorf("the token is printed: %s", errorText(err))
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests sent with an unusable token", n)
	}
}
