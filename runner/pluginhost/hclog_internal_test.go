package pluginhost

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"
	"golang.org/x/time/rate"

	"github.com/pacerun/pacer/observability"
)

// Attack 14, K7: the attributes of a plugin process's stderr line (go-plugin
// logs it through a logger named after the binary, the JSON line's fields
// as its arguments and its own timestamp last) are the plugin's: renamed
// when the runner's line uses the name, sanitized without exemptions.
// go-plugin's own lines (no name) keep theirs.
func TestHCLogSinkTreatsStderrAttributesAsThePlugins(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := observability.NewLogger(&buf, slog.LevelDebug, "json", nil)
	if err != nil {
		t.Fatal(err)
	}
	sink := &hclogSink{log: log.With("node", "n1", "plugin", "evil"), san: observability.DefaultSanitizer()}
	sink.Accept("evil", hclog.Error, "json line", "password", "fdpw_2", "remote_addr", "10.2.2.2 DB_PASSWORD=fdpw_3",
		"trace_id", "token=fdpw_4", "correlation_id", "fake-fd-cid", "job", "otherjob", "node", "n2", "logger", "x",
		"timestamp", "fake", "fencing_token", 7.0, "timestamp", "0001-01-01T00:00:00.000Z")
	sink.Accept("", hclog.Info, "plugin started", "plugin", "/opt/evil", "pid", 12)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.String())
	}
	for _, leak := range []string{"fdpw_", "10.2.2.2"} {
		if strings.Contains(lines[0], leak) {
			t.Errorf("%q is on the line: %s", leak, lines[0])
		}
	}
	for i, want := range []map[string]any{{
		"node": "n1", "plugin": "evil", "source": "go-plugin", "logger": "evil", "timestamp": "0001-01-01T00:00:00.000Z",
		"password": "[redacted]", "plugin.remote_addr": "[ipv4] DB_PASSWORD=[redacted]", "plugin.trace_id": "token=[redacted]",
		"plugin.correlation_id": "fake-fd-cid", "plugin.job": "otherjob", "plugin.node": "n2", "plugin.logger": "x",
		"plugin.timestamp": "fake", "plugin.fencing_token": "[redacted]", "correlation_id": nil, "job": nil, "trace_id": nil,
	}, {
		"plugin": "evil", "path": "/opt/evil", "pid": 12.0, "logger": "", "source": "go-plugin",
	}} {
		keys := map[string]int{}
		dec := json.NewDecoder(strings.NewReader(lines[i]))
		_, _ = dec.Token()
		for dec.More() {
			k, _ := dec.Token()
			var v json.RawMessage
			if err := dec.Decode(&v); err != nil {
				t.Fatal(err)
			}
			keys[k.(string)]++
		}
		for k, n := range keys {
			if n > 1 {
				t.Errorf("key %q %d times: %s", k, n, lines[i])
			}
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &m); err != nil {
			t.Fatal(err)
		}
		for k, v := range want {
			if m[k] != v {
				t.Errorf("line %d: %s = %v, want %v: %s", i, k, m[k], v, lines[i])
			}
		}
	}
}

// Attack 19, P15: what a plugin process writes to its stdout or stderr is
// bounded as a run's log lines are: 20,000 print() lines all reached the
// runner's log before. The rest are dropped, counted, and said in one line
// once the output is back under the rate.
func TestPluginOutputLinesAreBoundedByRate(t *testing.T) {
	var buf bytes.Buffer
	log := slog.New(slog.NewJSONHandler(&buf, nil))
	dropped := 0
	lim := rate.NewLimiter(1, 5) // 5 lines, then one a second
	l := newLineLogger(log, observability.DefaultSanitizer(), slog.LevelInfo, "stdout", lim, func() { dropped++ })
	for i := range 1000 {
		fmt.Fprintf(l, "line %d\n", i)
	}
	logged := strings.Count(buf.String(), `"source":"plugin-stdout"`)
	if logged < 5 || logged > 7 || logged+dropped != 1000 {
		t.Fatalf("%d lines logged and %d dropped of 1,000 at 1 a second (burst 5):\n%s", logged, dropped, buf.String())
	}
	lim.SetLimit(rate.Inf) // the output is back under the rate
	fmt.Fprintln(l, "after")
	if want := fmt.Sprintf(`"msg":"%d lines the plugin wrote to its stdout dropped: over 1 lines/s"`, dropped); !strings.Contains(buf.String(), want) ||
		!strings.Contains(buf.String(), `"msg":"after"`) {
		t.Fatalf("after the flood, want %s and the line:\n%s", want, buf.String())
	}
}
