package pluginhost_test

import (
	"context"
	"encoding/json"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/pacerun/pacer/internal/syncbuf"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// Attack 14, K7: what a real plugin process supplies as attributes, in a
// log record of its run, in an hclog JSON line written to its file
// descriptor 2, and on a span, passes the sanitizer with none of the
// exemptions meant for the runner's fields, and cannot pass for those
// fields: each key is once on a line, the runner's value under it.
// Before, remote_addr, trace_id, span_id, time and fencing_token went out
// as the plugin wrote them, and the line had the runner's correlation_id,
// job, node, … and then the plugin's.
func TestPluginAttributesCannotPassAsTheRunners(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr transport) {
		var sink syncbuf.Buffer
		base, err := observability.NewLogger(&sink, slog.LevelInfo, "json", nil)
		if err != nil {
			t.Fatal(err)
		}
		base = base.With("node", "n1") // as the runner's logger
		var mu sync.Mutex
		var spans []sdktrace.ReadOnlySpan
		b := setup(t, tr.opts(pluginhost.Options{
			Logger:     base.With("component", "pluginhost"),
			ImportSpan: func(s sdktrace.ReadOnlySpan) { mu.Lock(); spans = append(spans, s); mu.Unlock() },
		}))
		c := call("attrs", map[string]any{
			"message": "spoof1",
			"attrs": map[string]any{
				"remote_addr": "10.9.8.7 DB_PASSWORD=spoof_pw_1 ops@example.com", "trace_id": "spoof_tr ops2@example.com password=spoof_pw_2",
				"span_id": "pw 10.9.8.6", "time": "token=spoof_pw_4", "fencing_token": "spoof_pw_5", "correlation_id": "deploy-fake-cid",
				"run_id": "fake-run", "job": "otherjob", "node": "othernode", "source": "runner", "plugin": "other",
				"pacer.correlation_id": "fake-cid token=spoof_pw_6", "pacer.plugin": "other",
			},
			"line": `{"@level":"error","@message":"json line","password":"fdpw_2","remote_addr":"10.2.2.2 DB_PASSWORD=fdpw_3",` +
				`"trace_id":"token=fdpw_4","correlation_id":"fake-fd-cid","job":"otherjob","plugin":"other","timestamp":"fake"}`,
		})
		// The run's line as the runner logs it (runner/attempt.go).
		runLog := base.With("correlation_id", "corr-1", "job", "job-1", "run_id", "run-1",
			"trace_id", "4bf92f3577b34da6a3ce929d0e0e4736", "span_id", "00f067aa0ba902b7")
		c.OnLog = func(l pluginhost.LogRecord) {
			attrs := append([]slog.Attr{slog.String("source", "plugin"), slog.String("plugin", "testplugin")}, l.Attrs...)
			runLog.LogAttrs(context.Background(), l.Level, l.Message, attrs...)
		}
		ctx, root := sdktrace.NewTracerProvider().Tracer("t").Start(context.Background(), "pacer.run")
		_, err = b.host.Run(ctx, c)
		root.End()
		if err != nil {
			t.Fatal(err)
		}
		waitForLog(t, "the plugin's stderr line", func() bool { return strings.Contains(sink.String(), `"msg":"json line"`) }, sink.String)

		lines := map[string]string{}
		for l := range strings.Lines(sink.String()) {
			var m struct{ Msg string }
			if err := json.Unmarshal([]byte(l), &m); err != nil {
				t.Fatalf("%v: %s", err, l)
			}
			lines[m.Msg] = l
		}
		checkLine(t, lines["spoof1"], map[string]any{
			"correlation_id": "corr-1", "job": "job-1", "run_id": "run-1", "node": "n1", "source": "plugin", "plugin": "testplugin",
			"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736", "span_id": "00f067aa0ba902b7", "level": "INFO",
			"plugin.correlation_id": "deploy-fake-cid", "plugin.job": "otherjob", "plugin.node": "othernode", "plugin.run_id": "fake-run",
			"plugin.source": "runner", "plugin.plugin": "other", "plugin.fencing_token": "[redacted]",
			"plugin.remote_addr": "[ipv4] DB_PASSWORD=[redacted] [email]", "plugin.time": "token=[redacted]",
		})
		checkLine(t, lines["json line"], map[string]any{
			"correlation_id": nil, "job": nil, "trace_id": nil, "node": "n1", "component": "pluginhost", "source": "go-plugin",
			"plugin": "testplugin", "level": "ERROR", "password": "[redacted]", "plugin.remote_addr": "[ipv4] DB_PASSWORD=[redacted]",
			"plugin.trace_id": "token=[redacted]", "plugin.correlation_id": "fake-fd-cid", "plugin.job": "otherjob",
			"plugin.plugin": "other", "plugin.timestamp": "fake",
		})
		for _, leak := range []string{"spoof_pw", "fdpw_", "ops@example.com", "10.9.8.", "10.2.2.2"} {
			if strings.Contains(sink.String(), leak) {
				t.Errorf("%q is in the log:\n%s", leak, sink.String())
			}
		}

		mu.Lock()
		defer mu.Unlock()
		if len(spans) != 1 {
			t.Fatalf("%d spans imported, want 1", len(spans))
		}
		got := map[string]string{}
		var keys []string
		for _, kv := range spans[0].Attributes() {
			got[string(kv.Key)] = kv.Value.String()
			keys = append(keys, string(kv.Key))
		}
		for k, want := range map[string]string{
			"pacer.plugin": "testplugin", "plugin.pacer.plugin": "other", "plugin.pacer.correlation_id": "fake-cid token=[redacted]",
			"fencing_token": "[redacted]", "remote_addr": "[ipv4] DB_PASSWORD=[redacted] [email]",
		} {
			if got[k] != want {
				t.Errorf("span attribute %s = %q, want %q (all: %v)", k, got[k], want, got)
			}
		}
		if _, ok := got["pacer.correlation_id"]; ok {
			t.Errorf("the plugin's span carries pacer.correlation_id: %v", got)
		}
		if i := slices.Index(keys, "pacer.plugin"); slices.Contains(keys[i+1:], "pacer.plugin") {
			t.Errorf("pacer.plugin twice on the span: %v", keys)
		}
	})
}

// checkLine checks that the JSON log line has each key once and the wanted
// values (nil: the key is not there).
func checkLine(t *testing.T, line string, want map[string]any) {
	t.Helper()
	if line == "" {
		t.Errorf("no such line; want %v", want)
		return
	}
	dec := json.NewDecoder(strings.NewReader(line))
	if _, err := dec.Token(); err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatal(err)
		}
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatal(err)
		}
		if k := tok.(string); seen[k] {
			t.Errorf("key %q twice: %s", k, line)
		} else {
			seen[k] = true
		}
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatal(err)
	}
	for k, v := range want {
		if m[k] != v {
			t.Errorf("%s = %v, want %v: %s", k, m[k], v, line)
		}
	}
}
