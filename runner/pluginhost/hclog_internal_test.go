package pluginhost

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/hashicorp/go-hclog"

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
