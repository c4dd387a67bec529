package main_test

import (
	"context"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"go.uber.org/goleak"

	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/sdk/sdktest"
)

var pluginDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pacer-http-plugin-")
	if err != nil {
		panic(err)
	}
	pluginDir = dir
	if _, err := sdktest.BuildBinary(dir, "github.com/pacerun/pacer/plugins/http"); err != nil {
		panic(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			println("goleak:", err.Error())
			code = 1
		}
	}
	os.Exit(code)
}

func newHost(t *testing.T) *pluginhost.Host {
	t.Helper()
	// A generous start timeout: every test starts its own plugin process,
	// in parallel, on machines that may be busy with other builds.
	h := pluginhost.New(pluginhost.Options{Dir: pluginDir, StartTimeout: time.Minute})
	t.Cleanup(func() { h.Close() })
	return h
}

func newServer(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return srv
}

func call(params map[string]any) pluginhost.Call {
	return pluginhost.Call{
		Plugin: "http", Task: "request", Params: params,
		Info: pluginhost.RunInfo{JobID: "job-1", RunID: "r-1", CorrelationID: "c-1", Attempt: 1, Node: "n1"},
	}
}

// run calls the task and returns its result and the log records it sent.
func run(t *testing.T, h *pluginhost.Host, params map[string]any) (*pluginhost.Result, []pluginhost.LogRecord, error) {
	t.Helper()
	var logs []pluginhost.LogRecord
	c := call(params)
	c.OnLog = func(l pluginhost.LogRecord) { logs = append(logs, l) }
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	res, err := h.Run(ctx, c)
	return res, logs, err
}

// mustSucceed runs the task and fails the test unless it succeeded.
func mustSucceed(t *testing.T, h *pluginhost.Host, params map[string]any) *pluginhost.Result {
	t.Helper()
	res, _, err := run(t, h, params)
	if err != nil || res.TaskError != "" {
		t.Fatalf("err = %v, res = %+v", err, res)
	}
	return res
}

// mustFail runs the task and returns its task error, failing the test
// unless there was one.
func mustFail(t *testing.T, h *pluginhost.Host, params map[string]any) (*pluginhost.Result, string) {
	t.Helper()
	res, _, err := run(t, h, params)
	if err != nil || res.TaskError == "" {
		t.Fatalf("want a task error; err = %v, res = %+v", err, res)
	}
	return res, res.TaskError
}

func attrs(l pluginhost.LogRecord) map[string]any {
	m := map[string]any{}
	for _, a := range l.Attrs {
		m[a.Key] = a.Value.Any()
	}
	return m
}

func TestSuccessReportsBodyStatusAndLogsOneLine(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "healthy")
	}))
	res, logs, err := run(t, h, map[string]any{"url": srv.URL + "/health"})
	if err != nil || res.TaskError != "" {
		t.Fatalf("err = %v, res = %+v", err, res)
	}
	if res.Output != "healthy" {
		t.Errorf("output = %q", res.Output)
	}
	want := map[string]any{"status": float64(200), "response_bytes": float64(7), "truncated": false, "url": srv.URL + "/health"}
	for k, v := range want {
		if res.Data[k] != v {
			t.Errorf("data[%s] = %v, want %v", k, res.Data[k], v)
		}
	}
	if d, ok := res.Data["duration_ms"].(float64); !ok || d < 0 {
		t.Errorf("duration_ms = %v", res.Data["duration_ms"])
	}
	if len(logs) != 1 {
		t.Fatalf("%d log records, want 1: %v", len(logs), logs)
	}
	la := attrs(logs[0])
	if la["method"] != "GET" || la["url"] != srv.URL+"/health" || la["status"] != float64(200) || la["duration_ms"] == nil {
		t.Errorf("log record %q %v", logs[0].Message, la)
	}
}

func TestExpectStatus(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		code, _ := strconv.Atoi(strings.TrimPrefix(r.URL.Path, "/"))
		w.WriteHeader(code)
		fmt.Fprintf(w, "body %d", code)
	}))
	tests := []struct {
		name    string
		code    int
		expect  any    // nil: param omitted
		wantErr string // "": success
	}{
		{"200 default", 200, nil, ""},
		{"204 default", 204, nil, ""},
		{"503 default", 503, nil, "status 503, expected 2xx"},
		{"404 expected as string", 404, []any{"404"}, ""},
		{"404 expected as number", 404, []any{404}, ""},
		{"single value", 418, 418, ""},
		{"class upper case", 302, []any{"3XX"}, ""},
		{"mixed list", 500, []any{200, "3xx"}, "status 500, expected 200 or 3xx"},
		{"three items", 200, []any{201, 202, "4xx"}, "status 200, expected 201, 202 or 4xx"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			url := fmt.Sprintf("%s/%d", srv.URL, tc.code)
			params := map[string]any{"url": url, "follow_redirects": false}
			if tc.expect != nil {
				params["expect_status"] = tc.expect
			}
			res, _, err := run(t, h, params)
			if err != nil {
				t.Fatal(err)
			}
			if res.Data["status"] != float64(tc.code) {
				t.Errorf("data.status = %v, want %d", res.Data["status"], tc.code)
			}
			if tc.code != 204 && res.Output != fmt.Sprintf("body %d", tc.code) {
				t.Errorf("output = %q", res.Output)
			}
			if tc.wantErr == "" {
				if res.TaskError != "" {
					t.Fatalf("task error %q", res.TaskError)
				}
				return
			}
			if want := "GET " + url + ": " + tc.wantErr; res.TaskError != want {
				t.Fatalf("task error %q, want %q", res.TaskError, want)
			}
		})
	}
}

type received struct {
	method string
	header http.Header
	body   string
	user   string
	pass   string
	query  string
}

// recorder answers every request with answer and hands what it received to
// the test.
func recorder(t *testing.T, code int, answer string) (*httptest.Server, <-chan received) {
	got := make(chan received, 10)
	srv := newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		user, pass, _ := r.BasicAuth()
		got <- received{method: r.Method, header: r.Header.Clone(), body: string(b), user: user, pass: pass, query: r.URL.RawQuery}
		w.WriteHeader(code)
		io.WriteString(w, answer)
	}))
	return srv, got
}

func TestHeadersAndBodyArrive(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	srv, got := recorder(t, http.StatusAccepted, "queued")
	tests := []struct {
		name   string
		params map[string]any
		want   received
	}{
		{
			"GET gets run headers",
			map[string]any{},
			received{method: "GET", header: http.Header{
				"X-Correlation-Id": {"c-1"}, "X-Pacer-Run-Id": {"r-1"}, "User-Agent": {"pacer-http/dev"},
			}},
		},
		{
			"POST with body and headers",
			map[string]any{"method": "POST", "body": `{"event":"nightly"}`,
				"headers": map[string]any{"Content-Type": "application/json", "x-custom": "42"}},
			received{method: "POST", body: `{"event":"nightly"}`, header: http.Header{
				"Content-Type": {"application/json"}, "X-Custom": {"42"}, "Content-Length": {"19"},
				"X-Correlation-Id": {"c-1"}, "X-Pacer-Run-Id": {"r-1"},
			}},
		},
		{
			"job headers win",
			map[string]any{"method": "PUT", "headers": map[string]any{
				"x-correlation-id": "mine", "X-PACER-RUN-ID": "run-x", "user-agent": "probe/1"}},
			received{method: "PUT", header: http.Header{
				"X-Correlation-Id": {"mine"}, "X-Pacer-Run-Id": {"run-x"}, "User-Agent": {"probe/1"},
			}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tc.params["url"] = srv.URL + "/hook"
			res := mustSucceed(t, h, tc.params)
			if res.Output != "queued" || res.Data["status"] != float64(202) {
				t.Errorf("res = %+v", res)
			}
			r := <-got
			if r.method != tc.want.method || r.body != tc.want.body {
				t.Errorf("server got %s %q, want %s %q", r.method, r.body, tc.want.method, tc.want.body)
			}
			for k, v := range tc.want.header {
				if got := r.header.Values(k); strings.Join(got, ",") != strings.Join(v, ",") {
					t.Errorf("header %s = %q, want %q", k, got, v)
				}
			}
		})
	}
}

func TestSecretsStayOutOfMessagesAndData(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	srv, got := recorder(t, http.StatusServiceUnavailable, "down")
	tests := []struct {
		name     string
		params   map[string]any
		check    func(t *testing.T, r received)
		wantURL  string
		wantText string
	}{
		{
			"user-info and query",
			map[string]any{"url": strings.Replace(srv.URL, "://", "://alice:hunter2@", 1) + "/p?token=tok-secret&flag"},
			func(t *testing.T, r received) {
				if r.user != "alice" || r.pass != "hunter2" || r.query != "token=tok-secret&flag" {
					t.Errorf("server got user %q pass %q query %q", r.user, r.pass, r.query)
				}
			},
			srv.URL + "/p?flag=&token=xxxxx",
			"status 503, expected 2xx",
		},
		{
			"authorization header",
			map[string]any{"url": srv.URL + "/p", "headers": map[string]any{"Authorization": "Bearer tok-secret"}},
			func(t *testing.T, r received) {
				if r.header.Get("Authorization") != "Bearer tok-secret" {
					t.Errorf("server got Authorization %q", r.header.Get("Authorization"))
				}
			},
			srv.URL + "/p",
			"status 503, expected 2xx",
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, logs, err := run(t, h, tc.params)
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, <-got)
			if res.Data["url"] != tc.wantURL || !strings.Contains(res.TaskError, tc.wantText) {
				t.Errorf("data.url = %v, task error %q", res.Data["url"], res.TaskError)
			}
			everything := res.TaskError + fmt.Sprint(res.Data)
			for _, l := range logs {
				everything += l.Message + fmt.Sprint(attrs(l))
			}
			for _, secret := range []string{"hunter2", "alice", "tok-secret"} {
				if strings.Contains(everything, secret) {
					t.Errorf("%q leaked: %s", secret, everything)
				}
			}
		})
	}
}

func TestRedirects(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	mux := http.NewServeMux()
	mux.HandleFunc("/start", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/middle", http.StatusFound) })
	mux.HandleFunc("/middle", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/final", http.StatusMovedPermanently)
	})
	mux.HandleFunc("/final", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "arrived") })
	mux.HandleFunc("/loop", func(w http.ResponseWriter, r *http.Request) { http.Redirect(w, r, "/loop", http.StatusFound) })
	srv := newServer(t, mux)
	tests := []struct {
		name       string
		params     map[string]any
		wantStatus any
		wantURL    string
		wantErr    string
	}{
		{"followed", map[string]any{"url": srv.URL + "/start"}, float64(200), srv.URL + "/final", ""},
		{"not followed", map[string]any{"url": srv.URL + "/start", "follow_redirects": false},
			float64(302), srv.URL + "/start", "GET " + srv.URL + "/start: status 302, expected 2xx; follow_redirects is off"},
		{"not followed, 3xx expected", map[string]any{"url": srv.URL + "/start", "follow_redirects": false, "expect_status": []any{"3xx"}},
			float64(302), srv.URL + "/start", ""},
		{"loop", map[string]any{"url": srv.URL + "/loop"}, nil, srv.URL + "/loop", "stopped after 10 redirects"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			res, _, err := run(t, h, tc.params)
			if err != nil {
				t.Fatal(err)
			}
			if res.Data["status"] != tc.wantStatus || res.Data["url"] != tc.wantURL {
				t.Errorf("data = %v, want status %v url %s", res.Data, tc.wantStatus, tc.wantURL)
			}
			if tc.wantErr == "" && res.TaskError != "" || !strings.Contains(res.TaskError, tc.wantErr) {
				t.Errorf("task error %q, want %q", res.TaskError, tc.wantErr)
			}
			if tc.wantStatus == float64(200) && res.Output != "arrived" {
				t.Errorf("output %q", res.Output)
			}
		})
	}
}

// What the remote side sends is bounded in the task's error, log line and
// data: a redirect to a 2 MB path (before, a 2 MB error: its record was
// refused by etcd and the job stuck, attack 17, K3), or a Location that
// does not parse, which net/http quotes twice in its error.
func TestRemoteTextIsBoundedInTheError(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	long := strings.Repeat("a", 2_000_000)
	mux := http.NewServeMux()
	mux.HandleFunc("/long", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "/x"+long)
		w.WriteHeader(http.StatusFound)
	})
	mux.HandleFunc("/bad", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Location", "http://[::1"+long[:1_000_000])
		w.WriteHeader(http.StatusFound)
	})
	srv := newServer(t, mux)
	const maxErrorBytes, maxShownURL = 8 << 10, 2 << 10 // the task's bounds
	for _, tc := range []struct{ path, want string }{
		{"/long", "expected 2xx (final URL " + srv.URL + "/xaaa"},
		{"/bad", "GET " + srv.URL + "/bad: "},
	} {
		t.Run(tc.path, func(t *testing.T) {
			res, logs, err := run(t, h, map[string]any{"url": srv.URL + tc.path})
			if err != nil {
				t.Fatal(err)
			}
			if e := res.TaskError; len(e) > maxErrorBytes+64 || !strings.Contains(e, tc.want) || !strings.Contains(e, "URL cut") && !strings.Contains(e, "[truncated ") {
				t.Errorf("task error of %d bytes, starting %.200q: want at most %d bytes, with %q and the cut noted", len(e), e, maxErrorBytes, tc.want)
			}
			if u, _ := res.Data["url"].(string); len(u) > maxShownURL+64 {
				t.Errorf("data's url of %d bytes, want at most %d", len(u), maxShownURL)
			}
			for _, l := range logs {
				for k, v := range attrs(l) {
					if s, _ := v.(string); len(s) > maxErrorBytes+64 {
						t.Errorf("log line %q: %s of %d bytes", l.Message, k, len(s))
					}
				}
			}
		})
	}
}

func TestResponseBodyIsBounded(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	mux := http.NewServeMux()
	words := strings.Repeat("aaaa ", 200)
	mux.HandleFunc("/ascii", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, words) })
	mux.HandleFunc("/utf8", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, strings.Repeat("éé ", 40)) })
	mux.HandleFunc("/word", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, strings.Repeat("é", 2500)) })
	// The token is cut at 20 bytes: the partial word is dropped, not kept
	// unmasked (attack 14, K15).
	mux.HandleFunc("/echo/", func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok "+r.URL.Path[len("/echo"):]) })
	mux.HandleFunc("/binary", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte{'o', 'k', 0xff, 0xfe}) })
	srv := newServer(t, mux)
	tests := []struct {
		name          string
		path          string
		max           any
		wantOutput    string
		wantBytes     float64
		wantTruncated bool
	}{
		{"truncated between words", "/ascii", 100, words[:100] + "\n[response truncated after 100 bytes]", 1000, true},
		{"truncated inside a word", "/ascii", 102, words[:99] + "\n[response truncated after 99 bytes]", 1000, true},
		{"fits exactly", "/ascii", 1000, words, 1000, false},
		{"default bound", "/ascii", nil, words, 1000, false},
		{"cut inside a rune", "/utf8", 101, strings.Repeat("éé ", 19) + "éé\n[response truncated after 99 bytes]", 200, true},
		{"a word longer than 4 KiB, cut inside a rune", "/word", 4197, strings.Repeat("é", 50) + "\n[response truncated after 100 bytes]", 5000, true},
		{"a token cut", "/echo/gh" + "p_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789", 20, "ok\n[response truncated after 2 bytes]", 44, true},
		{"invalid UTF-8", "/binary", nil, "ok\uFFFD", 4, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			params := map[string]any{"url": srv.URL + tc.path}
			if tc.max != nil {
				params["max_response_bytes"] = tc.max
			}
			res := mustSucceed(t, h, params)
			if res.Output != tc.wantOutput || !utf8.ValidString(res.Output) {
				t.Errorf("output = %q, want %q", res.Output, tc.wantOutput)
			}
			if res.Data["response_bytes"] != tc.wantBytes || res.Data["truncated"] != tc.wantTruncated {
				t.Errorf("data = %v", res.Data)
			}
		})
	}
}

func TestTLS(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "secure") }))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // refused handshakes are expected here
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name    string
		tls     map[string]any // nil: no tls param
		wantErr []string       // nil: success
	}{
		{"ca_file", map[string]any{"ca_file": caFile}, nil},
		{"ca_file and server_name", map[string]any{"ca_file": caFile, "server_name": "example.com"}, nil},
		{"insecure_skip_verify", map[string]any{"insecure_skip_verify": true}, nil},
		{"no ca_file", nil, []string{"GET " + srv.URL + "/: ", "certificate signed by unknown authority", "set tls.ca_file"}},
		{"wrong server_name", map[string]any{"ca_file": caFile, "server_name": "other.test"},
			[]string{"other.test", "set tls.server_name"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			params := map[string]any{"url": srv.URL + "/"}
			if tc.tls != nil {
				params["tls"] = tc.tls
			}
			if tc.wantErr == nil {
				if res := mustSucceed(t, h, params); res.Output != "secure" {
					t.Errorf("output %q", res.Output)
				}
				return
			}
			res, msg := mustFail(t, h, params)
			for _, want := range tc.wantErr {
				if !strings.Contains(msg, want) {
					t.Errorf("task error %q does not contain %q", msg, want)
				}
			}
			if _, ok := res.Data["status"]; ok {
				t.Errorf("data has a status without a response: %v", res.Data)
			}
		})
	}
}

func TestNetworkErrorIsClear(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	// A port nobody listens on any more.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	_, msg := mustFail(t, h, map[string]any{"url": "http://" + addr + "/health"})
	if want := "GET http://" + addr + "/health: dial tcp " + addr + ": connect: connection refused"; msg != want {
		t.Fatalf("task error %q, want %q", msg, want)
	}
}

// blocker's handler reports each request's arrival, then waits until the
// client goes away, which it reports too (or until the test ends).
func blocker(t *testing.T) (srv *httptest.Server, arrived, gone <-chan struct{}) {
	release := make(chan struct{})
	arrivedc, gonec := make(chan struct{}, 10), make(chan struct{}, 10)
	srv = newServer(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		arrivedc <- struct{}{}
		select {
		case <-r.Context().Done():
			gonec <- struct{}{}
		case <-release:
		}
	}))
	t.Cleanup(func() { close(release) }) // runs before srv.Close
	return srv, arrivedc, gonec
}

// waitFor fails the test if ch stays empty for long; it is a bound on a
// broken test, not a synchronisation.
func waitFor(t *testing.T, ch <-chan struct{}, what string) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not happen", what)
	}
}

func TestTimeoutParamStopsTheRequest(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	srv, _, gone := blocker(t)
	res, msg := mustFail(t, h, map[string]any{"url": srv.URL + "/slow", "timeout": "200ms"})
	if want := "GET " + srv.URL + "/slow: no complete response within 200ms (timeout param)"; msg != want {
		t.Errorf("task error %q, want %q", msg, want)
	}
	if res.Data["url"] != srv.URL+"/slow" {
		t.Errorf("data = %v", res.Data)
	}
	waitFor(t, gone, "the server seeing the client go away")
}

// stoppedByRun checks how a run whose context ended came back. Depending on
// the host, Run returns ctx's error, or lets the task answer and returns that
// answer, which must then say the request was stopped.
func stoppedByRun(t *testing.T, res *pluginhost.Result, err error, ctxErr error, url string) {
	t.Helper()
	if err != nil {
		if !errors.Is(err, ctxErr) {
			t.Fatalf("err = %v, want %v", err, ctxErr)
		}
		return
	}
	t.Logf("task error: %s", res.TaskError)
	if want := "GET " + url + ": stopped: "; !strings.HasPrefix(res.TaskError, want) {
		t.Fatalf("task error %q, want it to start with %q", res.TaskError, want)
	}
}

func TestRunContextStopsTheRequest(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	// Start the plugin first (bad params do), so that the contexts only
	// cover the requests.
	if _, _, err := run(t, h, map[string]any{}); !errors.Is(err, pluginhost.ErrInvalidParams) {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		ctx    func() (context.Context, context.CancelFunc)
		cancel bool // cancel once the request has arrived
		want   error
	}{
		{"cancelled", func() (context.Context, context.CancelFunc) { return context.WithCancel(context.Background()) },
			true, context.Canceled},
		{"deadline", func() (context.Context, context.CancelFunc) {
			return context.WithTimeout(context.Background(), 300*time.Millisecond)
		}, false, context.DeadlineExceeded},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv, arrived, gone := blocker(t)
			url := srv.URL + "/slow"

			ctx, cancel := tc.ctx()
			defer cancel()
			type answer struct {
				res *pluginhost.Result
				err error
			}
			done := make(chan answer, 1)
			go func() {
				res, err := h.Run(ctx, call(map[string]any{"url": url}))
				done <- answer{res, err}
			}()
			if tc.cancel {
				waitFor(t, arrived, "the request reaching the server")
				cancel()
			}
			a := <-done
			stoppedByRun(t, a.res, a.err, tc.want, url)
			// The plugin dropped the request rather than leaving it hanging.
			waitFor(t, gone, "the server seeing the client go away")
		})
	}
}

func TestInvalidParams(t *testing.T) {
	t.Parallel()
	h := newHost(t)
	tests := []struct {
		name    string
		params  map[string]any
		wantMsg string
	}{
		{"missing url", map[string]any{}, `missing required key "url"`},
		{"bad scheme", map[string]any{"url": "ftp://bob:pw-secret@127.0.0.1/x"}, "absolute http:// or https:// URL, not ftp://127.0.0.1/x"},
		{"relative url", map[string]any{"url": "/health"}, "absolute http:// or https:// URL"},
		{"no host", map[string]any{"url": "http:///health"}, "has no host"},
		{"unparsable url", map[string]any{"url": "http://bob:pw-secret@127.0.0.1:port/"}, `invalid port ":port"`},
		{"unknown key", map[string]any{"url": "http://127.0.0.1/", "timeuot": "1s"}, `unknown key "timeuot" (did you mean "timeout"?)`},
		{"unknown tls key", map[string]any{"url": "http://127.0.0.1/", "tls": map[string]any{"ca": "x"}}, `params.tls.ca: unknown key "ca"`},
		{"bad duration", map[string]any{"url": "http://127.0.0.1/", "timeout": "soon"}, "timeout: "},
		{"negative duration", map[string]any{"url": "http://127.0.0.1/", "timeout": "-1s"}, "timeout must be positive"},
		{"bad method", map[string]any{"url": "http://127.0.0.1/", "method": "GE T"}, `method "GE T" is not a valid HTTP method`},
		{"bad header name", map[string]any{"url": "http://127.0.0.1/", "headers": map[string]any{"Bad Name": "v"}}, `invalid header name "Bad Name"`},
		{"bad header value", map[string]any{"url": "http://127.0.0.1/", "headers": map[string]any{"Authorization": "pw-secret\r\nX: y"}}, "line break"},
		{"duplicate header", map[string]any{"url": "http://127.0.0.1/", "headers": map[string]any{"x-a": "1", "X-A": "2"}}, "more than once"},
		{"bad status class", map[string]any{"url": "http://127.0.0.1/", "expect_status": []any{"2xy"}}, `"2xy" is not a status code`},
		{"status out of range", map[string]any{"url": "http://127.0.0.1/", "expect_status": []any{700}}, "700 is not a status code"},
		{"fractional status", map[string]any{"url": "http://127.0.0.1/", "expect_status": []any{200.5}}, "expected integer, got number 200.5"},
		{"empty expect_status", map[string]any{"url": "http://127.0.0.1/", "expect_status": []any{}}, "must not be empty"},
		{"negative max_response_bytes", map[string]any{"url": "http://127.0.0.1/", "max_response_bytes": -1}, "params.max_response_bytes: must be >= 1, got -1"},
		{"huge max_response_bytes", map[string]any{"url": "http://127.0.0.1/", "max_response_bytes": 1 << 30}, "params.max_response_bytes: must be <= 1048576, got 1073741824"},
		{"wrong type", map[string]any{"url": "http://127.0.0.1/", "follow_redirects": "yes"}, "follow_redirects"},
		{"missing ca_file", map[string]any{"url": "https://127.0.0.1/", "tls": map[string]any{"ca_file": "/nonexistent/ca.pem"}}, "tls.ca_file"},
		// Read only if a regular file, bounded (attack 14, K8): /dev/zero
		// was read without end.
		{"ca_file a device", map[string]any{"url": "https://127.0.0.1/", "tls": map[string]any{"ca_file": "/dev/zero"}}, "tls.ca_file: /dev/zero is a device, not a regular file"},
		{"cert without key", map[string]any{"url": "https://127.0.0.1/", "tls": map[string]any{"cert_file": "/x.pem"}}, "must be given together"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			_, _, err := run(t, h, tc.params)
			if !errors.Is(err, pluginhost.ErrInvalidParams) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %v, want ErrInvalidParams containing %q", err, tc.wantMsg)
			}
			if strings.Contains(err.Error(), "pw-secret") {
				t.Fatalf("secret leaked: %v", err)
			}
		})
	}
}
