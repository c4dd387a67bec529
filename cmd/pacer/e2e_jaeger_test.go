package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacerun/pacer/internal/syncbuf"
)

// The Jaeger the end-to-end tracing test exports to is built from the Go
// module proxy in its own module, tools/jaeger, so that its dependencies stay
// out of Pacer's go.mod. It is the v2 binary, an OpenTelemetry collector
// configured by a YAML file.
const jaegerPkg = "github.com/jaegertracing/jaeger/cmd/jaeger"

// jaegerBinary builds Jaeger once per version of tools/jaeger and returns its
// path. The binary is kept under os.UserCacheDir()/pacer-test so that later
// runs skip the build (a cold build takes minutes).
func jaegerBinary(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(root, "tools", "jaeger")
	gomod, err := os.ReadFile(filepath.Join(dir, "go.mod"))
	if err != nil {
		t.Fatalf("the Jaeger tools module: %v", err)
	}
	gosum, err := os.ReadFile(filepath.Join(dir, "go.sum"))
	if err != nil {
		t.Fatalf("the Jaeger tools module: %v", err)
	}
	m := regexp.MustCompile(`(?m)^\s*github\.com/jaegertracing/jaeger (v\S+)`).FindSubmatch(gomod)
	if m == nil {
		t.Fatalf("tools/jaeger/go.mod does not require github.com/jaegertracing/jaeger:\n%s", gomod)
	}
	// The key also covers go.mod and go.sum: a changed dependency rebuilds.
	sum := sha256.Sum256(append(gomod, gosum...))
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	out := filepath.Join(cache, "pacer-test", fmt.Sprintf("jaeger-%s-%s", m[1], hex.EncodeToString(sum[:6])), "jaeger")
	if fi, err := os.Stat(out); err == nil && fi.Mode().IsRegular() {
		t.Logf("Jaeger %s: cached %s", m[1], out)
		return out
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	// Build next to the target, then rename: a concurrent or interrupted
	// run never sees a partial binary.
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	defer os.Remove(tmp)
	start := time.Now()
	t.Logf("Jaeger %s: building %s into %s (minutes when Go's build cache is cold)", m[1], jaegerPkg, out)
	cmd := exec.Command("go", "build", "-o", tmp, jaegerPkg)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s in %s: %v\n%s", jaegerPkg, dir, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		t.Fatal(err)
	}
	t.Logf("Jaeger %s: built in %s", m[1], time.Since(start).Round(time.Second))
	// Binaries of earlier versions of tools/jaeger are 100+ MB each: drop them.
	old, _ := filepath.Glob(filepath.Join(cache, "pacer-test", "jaeger-*"))
	for _, d := range old {
		if d != filepath.Dir(out) {
			_ = os.RemoveAll(d)
		}
	}
	return out
}

// jaegerConfig is the collector configuration: OTLP/gRPC in, in-memory
// storage, the query API (HTTP and gRPC) out; every listener on loopback, no
// metrics endpoint, no other receivers or extensions.
const jaegerConfig = `
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter]
  telemetry:
    metrics: {level: none}
    logs: {level: warn}
extensions:
  jaeger_storage:
    backends:
      mem: {memory: {max_traces: 10000}}
  jaeger_query:
    storage: {traces: mem}
    enable_tracing: false
    http: {endpoint: %s}
    grpc: {endpoint: %s}
receivers:
  otlp:
    protocols:
      grpc: {endpoint: %s}
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
`

// jaegerTrace is a trace as Jaeger's HTTP query API returns it.
type jaegerTrace struct {
	TraceID string `json:"traceID"`
	Spans   []struct {
		SpanID        string `json:"spanID"`
		OperationName string `json:"operationName"`
		References    []struct {
			RefType string `json:"refType"`
			TraceID string `json:"traceID"`
			SpanID  string `json:"spanID"`
		} `json:"references"`
		Tags      []jaegerKV `json:"tags"`
		ProcessID string     `json:"processID"`
	} `json:"spans"`
	Processes map[string]struct {
		ServiceName string     `json:"serviceName"`
		Tags        []jaegerKV `json:"tags"`
	} `json:"processes"`
}

type jaegerKV struct {
	Key   string `json:"key"`
	Type  string `json:"type"`
	Value any    `json:"value"`
}

func tag(tags []jaegerKV, key string) (string, bool) {
	for _, kv := range tags {
		if kv.Key == key {
			return fmt.Sprint(kv.Value), true
		}
	}
	return "", false
}

// A live runner exports a run's spans over OTLP to a real Jaeger: the trace
// is found by the run's correlation ID, the plugin's own span hangs under the
// RPC span under pacer.run, and no personal data reaches the backend.
// planted is what the traced job's plugin logs, tags and returns: none of it
// may reach the runner's logs, the run records or Jaeger.
var planted = []string{"alice@example.com", "10.1.2.3", "4111 1111 1111 1111", "s3cr3tT0k3nValue", "hunter2"}

func TestE2EJaeger(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: builds Jaeger (minutes, once) and starts it and a real pacer process (skipped with -short)")
	}
	bin := jaegerBinary(t)
	start := time.Now()

	queryAddr, queryGRPC, otlpAddr := freeAddr(t), freeAddr(t), freeAddr(t)
	cfgPath := filepath.Join(t.TempDir(), "jaeger.yaml")
	must(os.WriteFile(cfgPath, []byte(fmt.Sprintf(jaegerConfig, queryAddr, queryGRPC, otlpAddr)), 0o644))
	jaeger := exec.Command(bin, "--config", cfgPath)
	var jlog syncbuf.Buffer
	jaeger.Stdout, jaeger.Stderr = &jlog, &jlog
	if err := jaeger.Start(); err != nil {
		t.Fatal(err)
	}
	jexited := make(chan struct{})
	go func() { _ = jaeger.Wait(); close(jexited) }()
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	t.Cleanup(func() {
		_ = jaeger.Process.Kill()
		<-jexited
		client.CloseIdleConnections()
		if t.Failed() {
			t.Logf("--- jaeger log ---\n%s", jlog.String())
		}
	})

	// get fetches a path of the query API; status 0 means no answer.
	get := func(path string) (int, []byte) {
		resp, err := client.Get("http://" + queryAddr + path)
		if err != nil {
			return 0, nil
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, b
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if code, _ := get("/api/services"); code == http.StatusOK {
			break
		}
		select {
		case <-jexited:
			t.Fatalf("jaeger exited before its query API answered")
		default:
		}
		if time.Now().After(deadline) {
			t.Fatal("jaeger's query API did not answer within 30s")
		}
	}
	t.Logf("jaeger up after %s (OTLP %s, query %s)", time.Since(start).Round(time.Millisecond), otlpAddr, queryAddr)

	httpAddr := freeAddr(t)
	p := startPacer(t, "jaeger-1", httpAddr, runnerConfig{node: "jaeger-1", cluster: "e2e"}.head(t, httpAddr)+fmt.Sprintf(`observability:
  tracing: {exporter: otlp, endpoint: %s, insecure: true}
jobs:
  - id: traced
    plugin: testplugin
    task: span
    schedule: "@every 1s"
    timeout: 10s
    params: {message: "mail alice@example.com ip 10.1.2.3 card 4111 1111 1111 1111 auth Bearer s3cr3tT0k3nValue password=hunter2"}
%s`, otlpAddr, echoJob))

	isTraced := func(l logLine) bool {
		return l.str("msg") == "run finished" && l.str("job") == "traced" && l.str("outcome") == "success"
	}
	lines := p.waitLogs("a successful run of the traced job", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, isTraced)) > 0 && len(match(ls, func(l logLine) bool { return l.str("msg") == "run finished" && l.str("job") == "echo" })) > 0
	})
	fin := match(lines, isTraced)[0]
	corr, traceID := fin.str("correlation_id"), fin.str("trace_id")
	if corr == "" || len(traceID) != 32 {
		t.Fatalf("run line lacks its correlation or trace ID: %v", fin)
	}
	// Personal data stays out of the run records and the logs too.
	// The record is written just after the "run finished" line: wait for it.
	var records []byte
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		runsResp, err := http.Get(p.httpURL + "/api/v1/runs?job=traced")
		if err != nil {
			t.Fatal(err)
		}
		records, _ = io.ReadAll(runsResp.Body)
		runsResp.Body.Close()
		if bytes.Contains(records, []byte(`"state":"success"`)) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no successful run record within 15s: %s", records)
		}
	}
	if !bytes.Contains(records, []byte("[email]")) || !bytes.Contains(records, []byte("[card]")) {
		t.Fatalf("run records do not hold the masked output: %s", records)
	}
	logs := p.rawLogs()
	if !strings.Contains(logs, "working on: mail [email]") {
		t.Fatal("the plugin's log line did not reach the runner's log")
	}
	for _, secret := range planted {
		if bytes.Contains(records, []byte(secret)) {
			t.Errorf("%q reached the run records: %s", secret, records)
		}
		if strings.Contains(logs, secret) {
			t.Errorf("%q reached the runner's log", secret)
		}
	}

	// Spans are batched; shutdown flushes them.
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit code %d after SIGTERM, want 0", code)
	}

	// Find the trace by the run's correlation ID alone.
	q := url.Values{
		"service":  {"pacer"},
		"tags":     {fmt.Sprintf(`{"pacer.correlation_id":%q}`, corr)},
		"lookback": {"1h"},
		"limit":    {"20"},
	}
	var found []jaegerTrace
	var body []byte
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		var code int
		code, body = get("/api/traces?" + q.Encode())
		var res struct{ Data []jaegerTrace }
		if code == http.StatusOK && json.Unmarshal(body, &res) == nil && len(res.Data) > 0 {
			found = res.Data
			// Jaeger stores each export batch as it comes: the run's claim
			// span can arrive after the trace's first spans can be read.
			claimed := false
			for _, sp := range found[0].Spans {
				claimed = claimed || sp.OperationName == "pacer.claim"
			}
			if claimed {
				break
			}
		}
		if time.Now().After(deadline) {
			if len(found) > 0 {
				break // the assertions below say what is missing
			}
			t.Fatalf("no trace with pacer.correlation_id=%s in Jaeger within 15s after shutdown; last answer: %s", corr, body)
		}
	}
	if len(found) != 1 || found[0].TraceID != traceID {
		ids := []string{}
		for _, tr := range found {
			ids = append(ids, tr.TraceID)
		}
		t.Fatalf("search by correlation ID %s found traces %v, want exactly [%s]", corr, ids, traceID)
	}
	// The same trace by its ID.
	code, body := get("/api/traces/" + traceID)
	var byID struct{ Data []jaegerTrace }
	if code != http.StatusOK || json.Unmarshal(body, &byID) != nil || len(byID.Data) != 1 {
		t.Fatalf("GET /api/traces/%s: %d %s", traceID, code, body)
	}
	tr := byID.Data[0]

	// Personal data never reaches the backend: not in any tag, log field,
	// process tag or name.
	for _, secret := range planted {
		if bytes.Contains(body, []byte(secret)) {
			t.Errorf("%q reached Jaeger: %s", secret, body)
		}
	}

	spans := map[string]int{} // span ID -> index
	byName := map[string][]int{}
	for i, s := range tr.Spans {
		spans[s.SpanID] = i
		byName[s.OperationName] = append(byName[s.OperationName], i)
		proc, ok := tr.Processes[s.ProcessID]
		if !ok || proc.ServiceName != "pacer" {
			t.Errorf("span %s: process %q has service %q, want pacer", s.OperationName, s.ProcessID, proc.ServiceName)
		}
	}
	names := func() []string {
		var out []string
		for _, s := range tr.Spans {
			out = append(out, s.OperationName)
		}
		return out
	}
	one := func(name string) int {
		t.Helper()
		if len(byName[name]) != 1 {
			t.Fatalf("trace %s has %d %q spans, want 1; spans: %v", traceID, len(byName[name]), name, names())
		}
		return byName[name][0]
	}
	parentOf := func(i int) string {
		for _, r := range tr.Spans[i].References {
			if r.RefType == "CHILD_OF" && r.TraceID == traceID {
				if j, ok := spans[r.SpanID]; ok {
					return tr.Spans[j].OperationName
				}
				return "missing span " + r.SpanID
			}
		}
		return ""
	}

	run := one("pacer.run")
	if got, _ := tag(tr.Spans[run].Tags, "pacer.correlation_id"); got != corr {
		t.Errorf("pacer.run has pacer.correlation_id %q, want %q", got, corr)
	}
	if got, _ := tag(tr.Spans[run].Tags, "pacer.job.id"); got != "traced" {
		t.Errorf("pacer.run has pacer.job.id %q, want traced", got)
	}
	if parent := parentOf(run); parent != "" {
		t.Errorf("pacer.run has parent %s, want a root span", parent)
	}
	rpc := one("pacer.plugin.v1.TaskPlugin/Run")
	if parent := parentOf(rpc); parent != "pacer.run" {
		t.Errorf("the RPC span's parent is %q, want pacer.run", parent)
	}
	work := one("testplugin.work")
	if parent := parentOf(work); parent != "pacer.plugin.v1.TaskPlugin/Run" {
		t.Errorf("testplugin.work's parent is %q, want the RPC span", parent)
	}
	if got, _ := tag(tr.Spans[work].Tags, "note"); got != "mail [email] ip [ipv4] card [card] auth Bearer [token] password=[redacted]" {
		t.Errorf("testplugin.work note = %q, want the sanitized %q", got, "mail [email] ip [ipv4] card [card] auth Bearer [token] password=[redacted]")
	}
	if got, _ := tag(tr.Spans[work].Tags, "pacer.plugin"); got != "testplugin" {
		t.Errorf("testplugin.work pacer.plugin = %q, want testplugin", got)
	}
	if len(byName["pacer.claim"]) != 1 {
		t.Errorf("trace %s has %d pacer.claim spans, want 1 (a child of pacer.run); spans: %v", traceID, len(byName["pacer.claim"]), names())
		// Say where the job's claim spans went instead.
		q := url.Values{"service": {"pacer"}, "operation": {"pacer.claim"}, "tags": {`{"pacer.job.id":"traced"}`}, "lookback": {"1h"}, "limit": {"5"}}
		_, b := get("/api/traces?" + q.Encode())
		var res struct{ Data []jaegerTrace }
		_ = json.Unmarshal(b, &res)
		for _, other := range res.Data {
			var ops []string
			for _, s := range other.Spans {
				ops = append(ops, fmt.Sprintf("%s(refs %d)", s.OperationName, len(s.References)))
			}
			t.Logf("the traced job's pacer.claim is in trace %s instead, with spans %v", other.TraceID, ops)
		}
	} else if parent := parentOf(byName["pacer.claim"][0]); parent != "pacer.run" {
		t.Errorf("pacer.claim's parent is %q, want pacer.run", parent)
	}
	if t.Failed() {
		t.Logf("trace %s: %s", traceID, body)
	}
	t.Logf("trace %s of run %s checked in Jaeger %s after the build", traceID, corr, time.Since(start).Round(time.Millisecond))
}
