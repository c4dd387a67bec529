package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// spanPlugin is a Python plugin whose task opens a span with a password
// among its attributes, as the tester's did (attack 3, B4).
const spanPlugin = `#!/usr/bin/python3
import sys
from dataclasses import dataclass
sys.path.insert(0, %q)
import pacer_sdk
from pacer_sdk import param

@dataclass
class P:
    table: str = param(default="users", description="table")

plugin = pacer_sdk.Plugin("spanpw", version="1.0.0")

@plugin.task(description="query with a password in a span attribute")
def db(ctx: pacer_sdk.Context, params: P) -> pacer_sdk.Result:
    with ctx.span("db", {"db.password": "S3KRIT" + "py6", "db.system": "postgresql", "db.table": params.table}):
        pass
    return pacer_sdk.Result(output="queried")

if __name__ == "__main__":
    pacer_sdk.serve(plugin)
`

// What the third doc-only attack found through a running runner, fixed:
//
//   - B5: secrets after a key in shapes the sanitizer missed (Digest and
//     AWS4 auth-params, quoted Basic, ":=", --flags, tabs, cookies, XML,
//     pass:) and the tail of a value longer than a log piece, masked in the
//     log and the run record;
//   - B4: a Python plugin's span attribute db.password, redacted in the
//     exported span;
//   - B6: an X-Correlation-ID the logs would mask is refused with a JSON
//     400 naming the header, so nothing stores it raw;
//   - B14: undecodable query strings and hand-made cursors are JSON 400s.
func TestE2EAttack3Sanitizing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts a real pacer process and a Python plugin (skipped with -short)")
	}
	t.Parallel()
	needPython(t)
	dir := t.TempDir()
	sdk, err := filepath.Abs(filepath.Join("..", "..", "sdk", "python"))
	must(err)
	plugin := filepath.Join(dir, "spanpw")
	must(os.WriteFile(plugin, []byte(fmt.Sprintf(spanPlugin, sdk)), 0o755))

	httpAddr := freeAddr(t)
	p := startPacer(t, "a3-san", httpAddr, runnerConfig{node: "a3-san", cluster: "a3san", dataDir: dir + "/data",
		plugins: "dir: " + builtPlugins() + ", paths: {spanpw: " + plugin + "}"}.head(t, httpAddr)+`observability:
  tracing: {exporter: stdout}
jobs:
  - id: shapes
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    params:
      shell: true
      command: >-
        echo 'Proxy-Authorization: Digest username="u", response="S3KRITc1"';
        echo 'Authorization: AWS4-HMAC-SHA256 Credential=AKID/2015/x/s3/aws4_request, Signature=S3KRITd7';
        echo 'Authorization: Basic "S3KRITg5"';
        echo 'password := S3KRITf5';
        echo 'curl --token S3KRITt1 --password S3KRITt2 -v';
        printf 'password\tS3KRITtab\n';
        echo 'Set-Cookie: sid=S3KRITck1; Path=/; HttpOnly';
        echo 'Cookie: a=1; b=S3KRITck2';
        echo '<password>S3KRITx1</password>';
        echo 'user: bob pass: S3KRITp1'
  - id: longword
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    params:
      shell: true
      command: "printf 'password=S3KRITi7'; head -c 6000 /dev/zero | tr '\\0' A; echo 'S3KRITi8 tail'"
  - id: pyspan
    plugin: spanpw
    task: db
    schedule: "0 0 0 1 1 *"
`)
	p.waitLogs("leadership", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("became leader"))) > 0 })

	// B6: refused at intake, with a JSON error naming the header.
	for _, corr := range []string{"https://u:S3KRITcid1@x.org", "gh" + "p_S3KRITcid2aBcDeFgHiJkLmNoPqRsTuVwXyZ01"} {
		code, body := apiCall(t, "POST", p.httpURL+"/api/v1/jobs/shapes/trigger", "X-Correlation-ID", corr)
		if code != 400 || !strings.HasPrefix(body["error"], "X-Correlation-ID: ") {
			t.Errorf("X-Correlation-ID %.12q…: %d %v, want a JSON 400 naming the header", corr, code, body)
		}
	}
	// B14: a query that does not decode, a cursor made by hand.
	for _, q := range []string{"cursor=%%%", "limit=%zz", "cursor=eyJhZnRlciI6InNoYXBlcyJ9"} {
		if code, body := apiCall(t, "GET", p.httpURL+"/api/v1/jobs?"+q); code != 400 || body["error"] == "" {
			t.Errorf("GET /api/v1/jobs?%s: %d %v, want a JSON 400", q, code, body)
		}
	}

	jobs := []string{"shapes", "longword", "pyspan"}
	for _, j := range jobs {
		if out, code := p.cli([]string{"PACER_CORRELATION_ID=a3-san-" + j}, "trigger", j); code != 0 {
			t.Fatalf("trigger %s: %d %s", j, code, out)
		}
	}
	lines := p.waitLogs("every run to finish", 60*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool {
			return l.str("msg") == "run finished" && strings.HasPrefix(l.str("correlation_id"), "a3-san-")
		})) == len(jobs)
	})
	for _, fin := range match(lines, msgIs("run finished")) {
		if fin.str("outcome") != "success" {
			t.Errorf("run of %s: %s %s", fin.str("job"), fin.str("outcome"), fin.str("error"))
		}
	}
	var out []string
	for _, l := range match(lines, func(l logLine) bool { return l.str("source") == "plugin" && l.str("correlation_id") == "a3-san-shapes" }) {
		out = append(out, l.str("msg"))
	}
	want := []string{
		"Proxy-Authorization: Digest [redacted]",
		"Authorization: AWS4-HMAC-SHA256 [redacted]",
		`Authorization: Basic "[redacted]"`,
		"password := [redacted]",
		"curl --token [redacted] --password [redacted] -v",
		"password\t[redacted]",
		"Set-Cookie: [redacted]",
		"Cookie: [redacted]",
		"<password>[redacted]</password>",
		"user: bob pass: [redacted]",
	}
	if strings.Join(out, "\n") != strings.Join(want, "\n") {
		t.Errorf("shapes in the log:\n%s\nwant\n%s", strings.Join(out, "\n"), strings.Join(want, "\n"))
	}
	var long []string
	for _, l := range match(lines, func(l logLine) bool {
		return l.str("source") == "plugin" && l.str("correlation_id") == "a3-san-longword"
	}) {
		long = append(long, l.str("msg"))
	}
	// Masked whole before it is cut into pieces (it is under 16 KiB): one
	// line, where before each piece was masked on its own, the later one
	// with the key repeated.
	if len(long) != 1 || long[0] != "password=[redacted] tail" {
		t.Errorf("the long word's line in the log: %.200q", long)
	}
	for _, job := range []string{"shapes", "longword"} {
		if rec := lastRecord(t, p, nil, job); strings.Contains(rec, "S3KRIT") {
			t.Errorf("%s's run record holds a secret: %.300q", job, rec)
		}
	}
	if raw := p.rawLogs(); strings.Contains(raw, "S3KRIT") {
		i := strings.Index(raw, "S3KRIT")
		t.Errorf("the runner's log holds a secret: …%s…", raw[max(0, i-200):min(len(raw), i+40)])
	}

	// B4: the span, exported at shutdown.
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}
	spans := p.stdout.String()
	if strings.Contains(spans, "S3KRIT") {
		t.Errorf("an exported span holds the password")
	}
	var db *exportedSpan
	for _, s := range exportedSpans(t, spans) {
		if s.Name == "db" {
			db = &s
		}
	}
	if db == nil || db.attr("db.password") != "[redacted]" || db.attr("db.system") != "postgresql" || db.attr("pacer.plugin") != "spanpw" {
		t.Fatalf("the plugin's span: %+v", db)
	}
}

// apiCall calls the runner's API and decodes its JSON answer; the answer
// must be JSON.
func apiCall(t *testing.T, method, url string, hdr ...string) (int, map[string]string) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	must(err)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if method == "POST" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var body map[string]string
	if err := json.Unmarshal(b, &body); err != nil && resp.StatusCode >= 400 {
		t.Errorf("%s %s: %d answer is not JSON: %q", method, url, resp.StatusCode, b)
	}
	return resp.StatusCode, body
}

// Tracing through real runners (attack 3, B8, B9): with tracing.protocol
// http and no endpoint, OTEL_EXPORTER_OTLP_ENDPOINT names the collector;
// an export that fails is a JSON WARN line through the log, never a plain
// text line on stderr.
func TestE2EAttack3Tracing(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	must(err)
	var mu sync.Mutex
	var paths []string
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths = append(paths, r.Method+" "+r.URL.Path)
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })

	cfg := func(name, httpAddr, tracing string) string {
		return runnerConfig{node: name, cluster: name}.head(t, httpAddr) + fmt.Sprintf(`observability:
  tracing: %s
jobs:
  - id: tick
    plugin: shell
    task: exec
    schedule: "@every 1s"
    params: {command: ['true']}
`, tracing)
	}
	envAddr, deadAddr := freeAddr(t), freeAddr(t)
	fromEnv := startPacer(t, "a3-env", envAddr, cfg("a3-env", envAddr, "{exporter: otlp, protocol: http}"),
		"OTEL_EXPORTER_OTLP_ENDPOINT=http://"+ln.Addr().String(), "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT=")
	dead := startPacer(t, "a3-dead", deadAddr, cfg("a3-dead", deadAddr, "{exporter: otlp, protocol: http, endpoint: '127.0.0.1:1'}"))

	deadline := time.Now().Add(45 * time.Second)
	for {
		mu.Lock()
		got := append([]string(nil), paths...)
		mu.Unlock()
		if len(got) > 0 {
			if got[0] != "POST /v1/traces" {
				t.Fatalf("the collector named by OTEL_EXPORTER_OTLP_ENDPOINT got %v, want POST /v1/traces", got)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no spans reached the collector named by OTEL_EXPORTER_OTLP_ENDPOINT")
		}
		select {
		case <-fromEnv.exited:
			t.Fatalf("a3-env exited: %v", fromEnv.exitErr)
		case <-time.After(100 * time.Millisecond):
		}
	}

	lines := dead.waitLogs("a failed export logged", 60*time.Second, func(ls []logLine) bool {
		return len(match(ls, msgIs("opentelemetry error"))) > 0
	})
	e := match(lines, msgIs("opentelemetry error"))[0]
	if e.str("level") != "WARN" || e.str("component") != "tracing" || !strings.Contains(e.str("error"), "127.0.0.1:1") {
		t.Errorf("the export error's line: %v", e)
	}
	for _, l := range strings.Split(dead.rawLogs(), "\n") {
		if !json.Valid([]byte(l)) {
			t.Errorf("a line on stderr is not JSON: %q", l)
		}
	}
}

// What the pacer binary prints as an error passes the sanitizer, and files
// and values the config names are checked at their line (attack 3, B7,
// B14): secrets in a config value, a URL, a Python plugin's param error; a
// missing certificate; an absurd jitter; a job ID starting with '-'.
func TestE2EAttack3CLIErrors(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: runs the pacer binary and a Python plugin (skipped with -short)")
	}
	t.Parallel()
	needPython(t)
	dir := t.TempDir()
	example, err := filepath.Abs(filepath.Join("..", "..", "examples", "python-plugin", "hello_python.py"))
	must(err)
	pacer := func(env []string, args ...string) (string, int) {
		t.Helper()
		cmd := exec.Command(filepath.Join(binDir, "pacer"), args...)
		cmd.Dir = dir
		cmd.Env = append(os.Environ(), env...)
		out, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(out), ee.ExitCode()
		}
		must(err)
		return string(out), 0
	}
	file := func(name, body string) string {
		path := filepath.Join(dir, name)
		must(os.WriteFile(path, []byte(body), 0o644))
		return path
	}
	base := fmt.Sprintf("cluster: {data_dir: %s}\nplugins: {dir: %s, paths: {hello-python: %s}}\n", filepath.Join(dir, "data"), filepath.Join(binDir, "plugins"), example)

	for _, tc := range []struct {
		name string
		args []string
		code int
		want []string
		env  []string
	}{
		{"status with userinfo", []string{"status", "--addr", "http://user:S3KRITcli1@127.0.0.1:1"}, 1,
			[]string{"cannot reach the runner at http://[userinfo]@127.0.0.1:1"}, nil},
		{"secrets in config values", []string{"validate", "--skip-plugins", "--config", file("cv.yaml", base+`
observability:
  tracing: {exporter: otlp, endpoint: "https://u:S3KRITcf3@127.0.0.1:1/v1/traces"}
jobs:
  - {id: a, plugin: shell, task: exec, schedule: "@daily", timeout: "token=S3KRITcf1", params: {command: [echo]}}
`)}, 2, []string{"cv.yaml:5: observability.tracing.endpoint: ", "[userinfo]", `cv.yaml:7: jobs[0].timeout: `, "token=[redacted]"}, nil},
		{"python param error", []string{"validate", "--config", file("pv.yaml", base+`
jobs:
  - {id: p, plugin: hello-python, task: greet, schedule: "@daily", params: {name: x, greeting: "password=S3KRITpv1"}}
`)}, 2, []string{"pv.yaml:5: jobs[0].params.greeting: ", "password=[redacted]"}, nil},
		{"missing certificate, validate", []string{"validate", "--skip-plugins", "--config", file("tls.yaml", base+`
http:
  listen: 127.0.0.1:1
  tls: {cert_file: /nonexistent.pem, key_file: /nonexistent-key.pem}
jobs: []
`)}, 2, []string{"tls.yaml:6: http.tls.cert_file: open /nonexistent.pem: no such file or directory"}, nil},
		{"missing certificate, run", []string{"run", "--config", filepath.Join(dir, "tls.yaml")}, 2,
			[]string{"tls.yaml:6: http.tls.cert_file: open /nonexistent.pem: no such file or directory", "refusing to start"}, nil},
		{"absurd jitter", []string{"validate", "--skip-plugins", "--config", file("jit.yaml", base+`
jobs:
  - id: j
    plugin: shell
    task: exec
    schedule: "@every 2s"
    jitter: 1000000h
    params: {command: [echo]}
`)}, 2, []string{"jit.yaml:9: jobs[0].jitter: 1000000h0m0s is more than the limit of 24h0m0s"}, nil},
		{"plugins check quoting params", []string{"plugins", "check", example, "--params", `greet={"name":"x","greeting":"password=S3KRITpc1"}`}, 1,
			[]string{`FAIL  cancel`, `got "password=[redacted]"`}, nil},
		{"job ID starting with -", []string{"trigger", "-x"}, 2, []string{"goes after --: pacer trigger -- -x"}, nil},
		{"correlation ID with a token", []string{"trigger", "x", "--addr", "http://127.0.0.1:1"}, 2,
			[]string{"PACER_CORRELATION_ID: holds what the logs mask"}, []string{"PACER_CORRELATION_ID=gh" + "p_S3KRITcid3aBcDeFgHiJkLmNoPqRsTuVwXyZ01"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := tc.args
			out, code := pacer(tc.env, args...)
			if code != tc.code || strings.Contains(out, "S3KRIT") || strings.Contains(out, ".go:") {
				t.Errorf("pacer %v: exit %d (want %d):\n%s", args, code, tc.code, out)
			}
			for _, w := range tc.want {
				if !strings.Contains(out, w) {
					t.Errorf("pacer %v: output lacks %q:\n%s", args, w, out)
				}
			}
		})
	}
}
