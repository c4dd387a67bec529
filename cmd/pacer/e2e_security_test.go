package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner/shard"
)

// Issue 11, "secure by default", through real runners: the API's access
// rules, bounded connections, the environment tasks and plugin processes
// get, and metrics that exist from the first scrape.

// The README's two-command start: the example config (on free ports) starts
// with an API on loopback and no token, says so in exactly one WARN line,
// and runs its jobs.
func TestE2EExampleConfigStartsWithOneWarning(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	example, err := os.ReadFile(filepath.Join("..", "..", "examples", "pacer.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	httpAddr := freeAddr(t)
	cfg := strings.NewReplacer(
		"127.0.0.1:9464", httpAddr,
		"data_dir: ./data", "data_dir: "+t.TempDir()+"\n  etcd: {embedded: {client_listen: "+freeAddr(t)+", peer_listen: "+freeAddr(t)+"}}",
		"dir: ./bin/plugins", "dir: "+filepath.Join(binDir, "plugins"),
	).Replace(string(example))
	p := startPacer(t, "example", httpAddr, cfg)
	lines := p.waitLogs("the example's hello job to succeed", 60*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool {
			return l.str("msg") == "run finished" && l.str("job") == "hello" && l.str("outcome") == "success"
		})) > 0
	})
	var warns []string
	for _, l := range match(lines, pacerWarning) {
		warns = append(warns, l.str("msg"))
	}
	if len(warns) != 1 || !strings.HasPrefix(warns[0], "no API token is set, so any program on this machine can pause") {
		t.Fatalf("start-up WARN lines: %q, want exactly the one about the API without a token", warns)
	}
}

// An API that other machines could reach, without a token: pacer validate
// and pacer run refuse the config (exit 2) naming http.token_env and the
// opt-out, before binding anything.
func TestE2EOpenAPIOnTheNetworkRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	path := filepath.Join(t.TempDir(), "open.yaml")
	// Port 0 and a deadline: should the check ever regress, the runner
	// binds no fixed port and the test fails instead of hanging.
	must(os.WriteFile(path, []byte(fmt.Sprintf("cluster: {data_dir: %s, etcd: {embedded: {client_listen: %s, peer_listen: %s}}}\nhttp: {listen: '0.0.0.0:0'}\n",
		t.TempDir(), freeAddr(t), freeAddr(t))), 0o644))
	for _, cmd := range []string{"validate", "run"} {
		refusedConfig(t, path, nil, []string{cmd}, path+`:2: http.listen: "0.0.0.0:0" can be reached from other machines, and the API has no token`,
			"set http.token_env", "http.insecure_no_auth: true")
	}
}

// An embedded etcd that other machines could reach (it has no
// authentication): pacer validate and pacer run refuse the config (exit 2)
// naming the key and the opt-in, before etcd starts (attack 23, U9).
func TestE2EOpenEmbeddedEtcdOnTheNetworkRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	path := filepath.Join(t.TempDir(), "open-etcd.yaml")
	client := strings.Replace(freeAddr(t), "127.0.0.1", "0.0.0.0", 1)
	must(os.WriteFile(path, []byte(fmt.Sprintf("cluster:\n  data_dir: %s\n  embedded: {client_url: 'http://%s', peer_url: 'http://%s'}\n",
		t.TempDir(), client, freeAddr(t))), 0o644))
	for _, cmd := range []string{"validate", "run"} {
		refusedConfig(t, path, nil, []string{cmd},
			path+`:3: cluster.embedded.client_url: "`+client+`" can be reached from other machines, and the embedded etcd has no authentication`,
			"cluster.embedded.insecure_no_auth: true")
	}
}

// A config naming a token variable that is not set on this host is a config
// error (exit 2) that names the line, the key and the variable, before
// anything starts; not an error from deep in the start-up wiring. So is a
// token with a control character, which no client could send (attack 23,
// U3: the runner started, and every call got 401).
func TestE2EUnsetTokenVariableRefused(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts a real pacer process (skipped with -short)")
	}
	path := filepath.Join(t.TempDir(), "token.yaml")
	must(os.WriteFile(path, []byte(fmt.Sprintf("cluster: {data_dir: %s, etcd: {embedded: {client_listen: %s, peer_listen: %s}}}\nhttp: {listen: '127.0.0.1:0', token_env: PACER_TEST_UNSET_TOKEN}\n",
		t.TempDir(), freeAddr(t), freeAddr(t))), 0o644))
	for _, c := range []struct{ token, want string }{
		{" \t", "is empty, blank or not set"}, // blank: no request could send it
		{"abc\x01def", "holds a control character (byte 4 of the token, 0x01), which an HTTP header cannot carry"},
	} {
		out := refusedConfig(t, path, []string{"PACER_TEST_UNSET_TOKEN=" + c.token}, []string{"run"},
			path+":2: http.token_env: environment variable PACER_TEST_UNSET_TOKEN "+c.want)
		if strings.Contains(out, "fxmodule") || strings.Contains(out, "abc") {
			t.Errorf("pacer run with token %q: the start-up wiring or the token in the error\n%s", c.token, out)
		}
	}
}

// A loopback runner without a token (the default): a web page cannot make
// it act (content type, origin, DNS rebinding), a wrong method answers 405,
// mutating calls are rate limited and audited, connections that never send
// their body are cut off within 30s and over max_connections at once,
// every series exists at 0 at the first scrape, and a reload that removes a
// job removes its series.
func TestE2ELoopbackAPIGuards(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	httpAddr := freeAddr(t)
	head := runnerConfig{node: "e2e-guard", cluster: "guard",
		http: "max_connections: 40, rate_limit: {per_second: 0.001, burst: 8}"}.head(t, httpAddr) + `jobs:
  - id: yearly
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    params: {command: [/bin/true]}
`
	extra := "  - id: removed-later\n    plugin: shell\n    task: exec\n    schedule: \"0 0 0 1 1 *\"\n    params: {command: [/bin/true]}\n"
	p := startPacer(t, "e2e-guard", httpAddr, head+extra)
	// A job's series live on the leader of its shard, from the moment
	// that shard's jobs are scheduled: wait for every shard's.
	p.waitLogs("every shard's jobs scheduled", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, msgIs("shard's jobs scheduled"))) >= shard.Default
	})

	// Alerts from the first event: every known label value at 0.
	for _, s := range []struct {
		name   string
		labels []string
	}{
		{"pacer_plugin_restarts_total", []string{`plugin="shell"`, `reason="crash"`}},
		{"pacer_plugin_restarts_total", []string{`plugin="shell"`, `reason="unhealthy"`}},
		{"pacer_plugin_log_lines_dropped_total", []string{`plugin="shell"`}},
		{"pacer_job_runs_total", []string{`"yearly"`, `outcome="crashed"`}},
		{"pacer_job_runs_total", []string{`"removed-later"`, `outcome="failure"`}},
		{"pacer_job_skipped_total", []string{`"yearly"`, `reason="overlap"`}},
		{"pacer_lease_keepalives_total", []string{`result="no_leader"`}},
		{"pacer_http_rejected_total", []string{`reason="rate_limited"`}},
	} {
		if v := p.metric(s.name, s.labels...); v != 0 {
			t.Errorf("%s%v = %v at the start, want 0", s.name, s.labels, v)
		}
	}

	post := func(path string, hdr ...string) (int, http.Header, string) {
		req, _ := http.NewRequest("POST", p.httpURL+path, strings.NewReader("{}"))
		for i := 0; i+1 < len(hdr); i += 2 {
			if hdr[i] == "Host" {
				req.Host = hdr[i+1]
			} else {
				req.Header.Set(hdr[i], hdr[i+1])
			}
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}
	// What a web page could send: refused, and the job is not paused.
	for _, tc := range []struct {
		name string
		hdr  []string
		want int
	}{
		{"form from another site", []string{"Content-Type", "application/x-www-form-urlencoded", "Origin", "https://evil.example"}, 403},
		{"text/plain, no Origin", []string{"Content-Type", "text/plain"}, 415},
		{"json from another site", []string{"Content-Type", "application/json", "Sec-Fetch-Site", "cross-site"}, 403},
		{"DNS rebinding", []string{"Content-Type", "application/json", "Host", "evil.example:" + strings.Split(httpAddr, ":")[1]}, 403},
	} {
		if code, _, body := post("/api/v1/jobs/yearly/pause", tc.hdr...); code != tc.want {
			t.Errorf("%s: %d %s, want %d", tc.name, code, body, tc.want)
		}
	}
	if code, hdr, body := func() (int, http.Header, string) {
		resp, err := http.Get(p.httpURL + "/api/v1/jobs/yearly/trigger")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, resp.Header, string(b)
	}(); code != 405 || hdr.Get("Allow") != "POST" || !strings.Contains(body, `"error"`) {
		t.Errorf("GET on the trigger path: %d Allow %q %s", code, hdr.Get("Allow"), body)
	}

	// The CLI's calls pass, and each leaves one audit line.
	if out, code := p.cli([]string{"PACER_CORRELATION_ID=e2e-audit-1"}, "trigger", "yearly"); code != 0 {
		t.Fatalf("trigger: %d %s", code, out)
	}
	if out, code := p.cli(nil, "pause", "yearly"); code != 0 {
		t.Fatalf("pause: %d %s", code, out)
	}
	audits := p.waitLogs("audit lines", 10*time.Second, func(ls []logLine) bool {
		return len(match(ls, msgIs("api audit"))) >= 6
	})
	var got []string
	for _, a := range match(audits, msgIs("api audit")) {
		got = append(got, fmt.Sprintf("%s %s %v token=%v", a.str("action"), a.str("job"), a["status"], a["token_presented"]))
		if a.str("level") != "INFO" || !strings.HasPrefix(a.str("remote_addr"), "127.0.0.1:") {
			t.Errorf("audit line %v", a)
		}
	}
	// The rebinding refusal happens before routing, and is audited too.
	want := []string{"pause yearly 403 token=false", "pause yearly 415 token=false", "pause yearly 403 token=false",
		"pause yearly 403 token=false", "trigger yearly 202 token=false", "pause yearly 200 token=false"}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("audit lines:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	if tr := match(audits, func(l logLine) bool { return l.str("msg") == "api audit" && l.str("action") == "trigger" }); len(tr) != 1 ||
		tr[0].str("correlation_id") != "e2e-audit-1" {
		t.Errorf("trigger audit line: %v", tr)
	}

	// Rate limit: the burst is 8; the calls above that reached the limiter
	// took 2. Flood until refused.
	limited := false
	for i := 0; i < 20 && !limited; i++ {
		code, hdr, body := post("/api/v1/jobs/yearly/resume", "Content-Type", "application/json")
		if code == 429 {
			limited = true
			if s, err := strconv.Atoi(hdr.Get("Retry-After")); err != nil || s < 1 || !strings.Contains(body, "http.rate_limit") {
				t.Errorf("429 without a usable Retry-After: %q %s", hdr.Get("Retry-After"), body)
			}
		}
	}
	if !limited || p.metric("pacer_http_rejected_total", `reason="rate_limited"`) < 1 {
		t.Errorf("mutating calls were not rate limited")
	}
	if out, code := p.cli(nil, "resume", "yearly"); code == 0 || !strings.Contains(out, "429") {
		t.Errorf("CLI over the limit: exit %d %s", code, out)
	}

	// Clients that send headers and never their body: 60 of them, against
	// a cap of 40. Over the rate limit, each is answered 429 before its
	// body is read, and its connection waits while the server reads the
	// rest; so 20 connections are closed at once (the 20 over the cap, or
	// as many waiting ones in their place: connection_evicted), the others
	// when the read timeout passes, all within 30s; then the API answers
	// again.
	http.DefaultClient.CloseIdleConnections() // the test's own keep-alive connections count too
	const slow = 60
	var wg sync.WaitGroup
	closedAfter := make([]time.Duration, slow)
	began := time.Now()
	for i := range slow {
		c, err := net.Dial("tcp", httpAddr)
		if err != nil {
			t.Fatal(err)
		}
		_, _ = fmt.Fprintf(c, "POST /api/v1/jobs/yearly/pause HTTP/1.1\r\nHost: %s\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n", httpAddr)
		wg.Go(func() {
			defer c.Close()
			_ = c.SetReadDeadline(time.Now().Add(45 * time.Second))
			_, _ = io.Copy(io.Discard, c) // until the server closes it
			closedAfter[i] = time.Since(began)
		})
	}
	wg.Wait()
	var atOnce, longest int
	for _, d := range closedAfter {
		if d < 5*time.Second {
			atOnce++
		}
		longest = max(longest, int(d.Seconds()))
	}
	if longest >= 30 || atOnce < slow-40 {
		t.Errorf("slow clients: %d closed at once (want >= %d), the last after %ds (want < 30s)", atOnce, slow-40, longest)
	}
	t.Logf("slow clients: %d of %d closed at once (over max_connections), the last after %ds", atOnce, slow, longest)
	// Refused, or, when the new one came before an older one's head was
	// read, the older one closed in its place (connection_evicted).
	if v, e := p.metric("pacer_http_rejected_total", `reason="connection_limit"`),
		p.metric("pacer_http_rejected_total", `reason="connection_evicted"`); v+e < slow-40 {
		t.Errorf("pacer_http_rejected_total{reason=connection_limit} = %v, {reason=connection_evicted} = %v, want %d in all", v, e, slow-40)
	}
	if out, code := p.cli(nil, "jobs"); code != 0 {
		t.Fatalf("after the slow clients: %d %s", code, out)
	}

	// A reload removes a job: its series go.
	must(os.WriteFile(p.configPath, []byte(head), 0o644))
	p.waitLogs("the reload", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("config reloaded"))) == 1 })
	for _, name := range []string{"pacer_job_runs_total", "pacer_job_skipped_total", "pacer_job_running", "pacer_job_schedule_lag_seconds_count"} {
		if v := p.metric(name, `"removed-later"`); v != -1 {
			t.Errorf("%s of the removed job still exported (%v)", name, v)
		}
		if v := p.metric(name, `"yearly"`); v == -1 {
			t.Errorf("%s of the remaining job gone", name)
		}
	}
}

// A runner with a token and mutual TLS: the CLI needs the CA, a client
// certificate and the token (any case of "Bearer"); a task sees the base
// variables, PACER_* and what its inherit_env names, never the token's
// variable nor others; the plugin process's own environment is minimal too;
// listing the token's variable in inherit_env is a config error.
func TestE2ETokenTLSAndEnvironment(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	pki := newTestPKI(t)
	httpAddr := freeAddr(t)
	head := runnerConfig{node: "e2e-tls", cluster: "tls",
		http:    fmt.Sprintf("token_env: PACER_TEST_TOKEN, tls: {cert_file: %s, key_file: %s, client_ca_file: %s}", pki.cert, pki.key, pki.ca),
		plugins: "dir: " + builtPlugins() + ", inherit_env: [E2E_PLUGIN_*]"}.head(t, httpAddr) + fmt.Sprintf(`jobs:
  - id: envdump
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    params:
      command: [env]
      inherit_env: [E2E_VISIBLE_*, %%s]
  - id: leaky
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    params: {command: [echo, %s]}
`, leakyOutput)

	// Listing the token's variable is refused with its place in the file.
	bad := filepath.Join(t.TempDir(), "bad.yaml")
	badCfg := fmt.Sprintf(head, "PACER_TEST_TOKEN")
	line := strings.Count(badCfg[:strings.Index(badCfg, "      inherit_env:")], "\n") + 1
	must(os.WriteFile(bad, []byte(badCfg), 0o644))
	out, err := exec.Command(filepath.Join(binDir, "pacer"), "validate", "--skip-plugins", "--config", bad).CombinedOutput()
	if err == nil || !strings.Contains(string(out), fmt.Sprintf("%s:%d: jobs[0].params.inherit_env[1]: PACER_TEST_TOKEN holds the API token (http.token_env)", bad, line)) {
		t.Fatalf("inherit_env listing the token's variable: %v\n%s", err, out)
	}

	env := []string{"PACER_TEST_TOKEN=tok-e2e-9f3", "E2E_VISIBLE_A=shown", "E2E_HIDDEN=not-for-tasks", "E2E_PLUGIN_LIST=x"}
	// PACER_TEST_* matches the token's variable: that one is skipped.
	p := startPacer(t, "e2e-tls", httpAddr, fmt.Sprintf(head, "PACER_TEST_*"), env...)
	p.httpURL = "https://" + httpAddr
	p.waitLogs("leadership", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("became leader"))) > 0 })
	if warns := match(p.logs(), pacerWarning); len(warns) != 0 {
		t.Errorf("WARN lines with a token and client certificates: %v", warns)
	}

	tlsEnv := []string{"PACER_CA_FILE=" + pki.ca, "PACER_CERT_FILE=" + pki.clientCert, "PACER_KEY_FILE=" + pki.clientKey}
	auth := append([]string{"PACER_API_TOKEN=tok-e2e-9f3"}, tlsEnv...)
	if out, code := p.cli([]string{"PACER_CA_FILE=" + pki.ca}, "jobs"); code == 0 || !strings.Contains(out, "the runner requires a client certificate") {
		t.Errorf("CLI without a client certificate: exit %d\n%s", code, out)
	}
	if out, code := p.cli(tlsEnv, "jobs"); code != 0 || !strings.Contains(out, "envdump") {
		t.Errorf("CLI with the CA and a client certificate: exit %d\n%s", code, out)
	}
	if out, code := p.cli(tlsEnv, "trigger", "envdump"); code == 0 || !strings.Contains(out, "401") {
		t.Errorf("trigger without the token: exit %d\n%s", code, out)
	}
	if out, code := p.cli(nil, "jobs", "--ca-file", pki.ca, "--cert-file", pki.clientCert, "--key-file", pki.clientKey); code != 0 {
		t.Errorf("CLI flags instead of variables: exit %d\n%s", code, out)
	}
	// Lower-case scheme, as RFC 9110 allows.
	hc := pki.client(t)
	req, _ := http.NewRequest("POST", p.httpURL+"/api/v1/jobs/envdump/trigger", strings.NewReader("{}"))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "bearer tok-e2e-9f3")
	req.Header.Set("X-Correlation-ID", "e2e-env-1")
	resp, err := hc.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 202 {
		t.Fatalf("trigger with a lower-case bearer: %d", resp.StatusCode)
	}

	fin := p.waitLogs("the env dump", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool { return l.str("msg") == "run finished" && l.str("correlation_id") == "e2e-env-1" })) == 1
	})
	seen := map[string]bool{}
	for _, l := range match(fin, func(l logLine) bool { return l.str("source") == "plugin" && l.str("correlation_id") == "e2e-env-1" }) {
		name, _, _ := strings.Cut(l.str("msg"), "=")
		seen[name] = true
	}
	for _, want := range []string{"PATH", "E2E_VISIBLE_A", "PACER_JOB_ID", "PACER_FENCING_TOKEN"} {
		if !seen[want] {
			t.Errorf("the task did not see %s (saw %v)", want, seen)
		}
	}
	for _, hidden := range []string{"PACER_TEST_TOKEN", "E2E_HIDDEN", "E2E_PLUGIN_LIST", "PACER_PLUGIN_COOKIE", "PLUGIN_CLIENT_CERT"} {
		if seen[hidden] {
			t.Errorf("the task saw %s", hidden)
		}
	}
	if _, code := p.cli(auth, "trigger", "envdump"); code != 0 {
		t.Errorf("CLI trigger with token and client certificate: exit %d", code)
	}

	// Bare secrets a command prints are masked, typed, in the log and in
	// the stored run record.
	if out, code := p.cli(append(auth, "PACER_CORRELATION_ID=e2e-leaky"), "trigger", "leaky"); code != 0 {
		t.Fatalf("trigger leaky: %d %s", code, out)
	}
	lines := p.waitLogs("the leaky run", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool { return l.str("msg") == "run finished" && l.str("correlation_id") == "e2e-leaky" })) == 1
	})
	const masked = "deploy [aws_key] [github_token] [slack_token] pay [iban] call [phone]"
	if got := match(lines, func(l logLine) bool { return l.str("source") == "plugin" && l.str("correlation_id") == "e2e-leaky" }); len(got) != 1 || got[0].str("msg") != masked {
		t.Errorf("the command's output line in the log: %v, want %q", got, masked)
	}
	var runs struct{ Runs []struct{ Output string } }
	for deadline := time.Now().Add(15 * time.Second); ; {
		out, code := p.cli(tlsEnv, "runs", "leaky", "-o", "json")
		if code != 0 || json.Unmarshal([]byte(out), &runs) != nil {
			t.Fatalf("runs: %d %s", code, out)
		}
		if len(runs.Runs) > 0 && runs.Runs[0].Output != "" || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if len(runs.Runs) != 1 || strings.TrimSpace(runs.Runs[0].Output) != masked {
		t.Errorf("the stored run record: %+v, want output %q", runs.Runs, masked)
	}
	if raw := p.rawLogs(); strings.Contains(raw, "IOSFODNN7") || strings.Contains(raw, "3704 0044") || strings.Contains(raw, "12345678") {
		t.Error("a bare secret reached the runner's log")
	}

	// The plugin process itself: base variables, plugins.inherit_env,
	// go-plugin's handshake; not the token, not the task's variables, not
	// unlisted ones.
	var plugins struct {
		Plugins []struct {
			Name string
			PID  int
		}
	}
	out2, code := p.cli(tlsEnv, "plugins", "-o", "json")
	if code != 0 || json.Unmarshal([]byte(out2), &plugins) != nil {
		t.Fatalf("plugins: %d %s", code, out2)
	}
	for _, pl := range plugins.Plugins {
		if pl.Name != "shell" || pl.PID == 0 {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/environ", pl.PID))
		if errors.Is(err, fs.ErrPermission) && os.Geteuid() != 0 {
			// Plugin processes are not dumpable: only root reads their
			// environment (TestE2ETaskOutputAndRunnerSecrets checks that).
			t.Logf("the shell plugin's environment is readable by root only; its contents are checked when the tests run as root")
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		names := map[string]bool{}
		for _, kv := range strings.Split(string(b), "\x00") {
			name, _, _ := strings.Cut(kv, "=")
			names[name] = true
		}
		for _, bad := range []string{"PACER_TEST_TOKEN", "E2E_VISIBLE_A", "E2E_HIDDEN"} {
			if names[bad] {
				t.Errorf("the shell plugin process has %s in its environment", bad)
			}
		}
		for _, want := range []string{"PATH", "E2E_PLUGIN_LIST", "PACER_PLUGIN_COOKIE"} {
			if !names[want] {
				t.Errorf("the shell plugin process lacks %s", want)
			}
		}
	}
}

// leakyOutput is what the leaky job echoes: an AWS key ID, a GitHub token, a
// Slack token, an IBAN and a phone number, with nothing in front of them
// (built from parts, so no file holds a whole one).
var leakyOutput = `"deploy ` + "AK" + `IAIOSFODNN7EXAMPLE ` + "gh" + `p_wWPw5k4aXcaT4fNP0UcnZwJUVFk6LO0pINUx ` +
	"xo" + `xb-263594206564-FGqddMF8t08v8N7Oq4i57vs1 pay DE89 3704 0044 0532 0130 00 call +49 30 12345678"`

// testPKI is a CA, a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files.
type testPKI struct {
	ca, cert, key, clientCert, clientKey string
	pool                                 *x509.CertPool
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		must(os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600))
		return path
	}
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "e2e CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p := &testPKI{ca: write("ca.pem", "CERTIFICATE", caDER), pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	issue := func(name string, usage x509.ExtKeyUsage, serial int64) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(key)
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kb)
	}
	p.cert, p.key = issue("server", x509.ExtKeyUsageServerAuth, 2)
	p.clientCert, p.clientKey = issue("client", x509.ExtKeyUsageClientAuth, 3)
	return p
}

func (p *testPKI) client(t *testing.T) *http.Client {
	t.Helper()
	c, err := tls.LoadX509KeyPair(p.clientCert, p.clientKey)
	if err != nil {
		t.Fatal(err)
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: p.pool, Certificates: []tls.Certificate{c}}}}
}

// refusedConfig runs pacer with args and --config path (and env added to
// this process's), checks that it refuses the config, exit 2 within 30 s
// with each of wants in its output, and returns that output.
func refusedConfig(t *testing.T, path string, env, args []string, wants ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(binDir, "pacer"), append(args, "--config", path)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	var ee *exec.ExitError
	ok := errors.As(err, &ee) && ee.ExitCode() == 2 && ctx.Err() == nil
	for _, w := range wants {
		ok = ok && strings.Contains(string(out), w)
	}
	if !ok {
		t.Errorf("pacer %s %v: %v, want exit 2 saying %q\n%s", strings.Join(args, " "), env, err, wants, out)
	}
	return string(out)
}
