package observability

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"reflect"
	"slices"
	"strings"
	"testing"

	"go.opentelemetry.io/otel/attribute"
)

// Attack 14, K7: the sanitizer's exemptions for the runner's own fields
// (trusted keys, a number under a fencing-token name, a generated ID) do
// not apply to an attribute a plugin supplies, and a plugin's attribute
// named like one of the runner's fields is renamed.
func TestPluginAttrSanitizesWithoutExemptions(t *testing.T) {
	t.Parallel()
	s := mustSanitizer(t, SanitizerOptions{Patterns: []Pattern{{Name: "num", Regex: `[0-9]{4}`}}})
	const uuid = "01a24e7c-0fbf-78e3-8810-8dd782df5e04"
	tests := []struct {
		key     string
		val     any
		wantKey string
		want    any
	}{
		{"remote_addr", "10.9.8.7 DB_PASSWORD=spoof_pw_1 ops@example.com", "plugin.remote_addr", "[ipv4] DB_PASSWORD=[redacted] [email]"},
		{"trace_id", "spoof_tr ops2@example.com password=spoof_pw_2", "plugin.trace_id", "spoof_tr [email] password=[redacted]"},
		{"span_id", "10.9.8.6", "plugin.span_id", "[ipv4]"},
		{"time", "token=spoof_pw_4", "plugin.time", "token=[redacted]"},
		{"level", "token=x", "plugin.level", "token=[redacted]"},
		{"fencing_token", "spoof_pw_5", "plugin.fencing_token", "[redacted]"},
		{"fencing_token", 42.0, "plugin.fencing_token", "[redacted]"},
		{"previous_fencing_token", int64(7), "previous_fencing_token", "[redacted]"},
		{"previous_token", int64(7), "previous_token", "[redacted]"},
		{"correlation_id", "deploy-fake-cid", "plugin.correlation_id", "deploy-fake-cid"},
		{"run_id", uuid, "plugin.run_id", s.String(uuid)},
		{"trigger_id", uuid, "plugin.trigger_id", s.String(uuid)},
		{"job", "otherjob", "plugin.job", "otherjob"},
		{"node", "othernode", "plugin.node", "othernode"},
		{"msg", "m", "plugin.msg", "m"},
		{"source", "runner", "plugin.source", "runner"},
		{"plugin", "other", "plugin.plugin", "other"},
		{"host", "db.internal", "host", "db.internal"},
		{"attempt", 3.0, "attempt", 3.0},
		{"conn", map[string]any{"fencing_token": "x", "remote_addr": "10.1.2.3", "password": "p", "port": 5432.0},
			"conn", map[string]any{"fencing_token": "[redacted]", "remote_addr": "[ipv4]", "password": "[redacted]", "port": 5432.0}},
	}
	if s.String(uuid) == uuid {
		t.Fatalf("the operator pattern leaves %s as it is: the test cannot tell an exempt ID", uuid)
	}
	for _, tc := range tests {
		got := s.PluginAttr(slog.Any(tc.key, tc.val))
		if v := got.Value.Any(); got.Key != tc.wantKey || !reflect.DeepEqual(v, tc.want) {
			t.Errorf("PluginAttr(%s=%v) = %s=%#v, want %s=%#v", tc.key, tc.val, got.Key, v, tc.wantKey, tc.want)
		}
	}
	// The runner's own fields keep their exemptions.
	for _, a := range []slog.Attr{slog.String("remote_addr", "10.9.8.7"), slog.Int64("previous_token", 7), slog.String("run_id", uuid)} {
		if got := s.attr(a, 0); !got.Equal(a) {
			t.Errorf("the runner's %s = %v, want %v as it is", a.Key, got.Value, a.Value)
		}
	}
	var nilSan *Sanitizer
	if got := nilSan.PluginAttr(slog.String("remote_addr", "10.1.2.3")); got.Key != "plugin.remote_addr" || got.Value.String() != "[ipv4]" {
		t.Errorf("nil sanitizer: %s=%v", got.Key, got.Value)
	}
}

// A plugin's attributes logged beside every field the runner writes on a
// plugin's line: each key appears once, the runner's value under its name,
// and the line's handler leaves what PluginAttr made as it is.
func TestPluginAttrsLogBesideTheRunnersFields(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := NewLogger(&buf, slog.LevelInfo, "json", nil)
	if err != nil {
		t.Fatal(err)
	}
	var runner, plugin []any
	for _, k := range ReservedLogKeys {
		plugin = append(plugin, DefaultSanitizer().PluginAttr(slog.String(k, "spoof password=spoof_pw 10.9.8.7")))
		if k != "time" && k != "level" && k != "msg" { // slog's own
			runner = append(runner, slog.String(k, "runner-"+k))
		}
	}
	log.With(runner...).Info("spoof1", plugin...)
	line := buf.String()
	if strings.Contains(line, "spoof_pw") || strings.Contains(line, "10.9.8.7") {
		t.Errorf("a secret is on the line: %s", line)
	}
	keys := jsonKeys(t, line)
	for i, k := range keys {
		if slices.Contains(keys[i+1:], k) {
			t.Errorf("key %q twice: %s", k, line)
		}
	}
	var m map[string]any
	if err := json.Unmarshal([]byte(line), &m); err != nil {
		t.Fatal(err)
	}
	for _, k := range ReservedLogKeys {
		want := "runner-" + k
		switch k {
		case "time":
			continue
		case "level":
			want = "INFO"
		case "msg":
			want = "spoof1"
		}
		if m[k] != want {
			t.Errorf("%s = %v, want %q", k, m[k], want)
		}
		want = "spoof password=[redacted] [ipv4]"
		if k == "fencing_token" { // a name ending in "token"
			want = "[redacted]"
		}
		if m["plugin."+k] != want {
			t.Errorf("plugin.%s = %v, want %q", k, m["plugin."+k], want)
		}
	}
}

// jsonKeys returns the keys of a JSON object's top level in order,
// repeated ones as often as they appear.
func jsonKeys(t *testing.T, line string) []string {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		t.Fatalf("not a JSON object: %s", line)
	}
	var keys []string
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			t.Fatalf("%v: %s", err, line)
		}
		keys = append(keys, tok.(string))
		var v json.RawMessage
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("%v: %s", err, line)
		}
	}
	return keys
}

// A plugin's span attribute cannot take a name in Pacer's namespace, and
// is sanitized with no exemption for fencing-token names.
func TestPluginSpanAttr(t *testing.T) {
	t.Parallel()
	tests := []struct {
		in, want attribute.KeyValue
	}{
		{attribute.String("pacer.correlation_id", "fake-cid token=x"), attribute.String("plugin.pacer.correlation_id", "fake-cid token=[redacted]")},
		{attribute.String("pacer.plugin", "other"), attribute.String("plugin.pacer.plugin", "other")},
		{attribute.Int64("pacer.fencing_token", 5), attribute.String("plugin.pacer.fencing_token", "[redacted]")},
		{attribute.String("fencing_token", "spoof_pw_5"), attribute.String("fencing_token", "[redacted]")},
		{attribute.Float64("api_key", 3), attribute.String("api_key", "[redacted]")},
		{attribute.Bool("db.password", true), attribute.Bool("db.password", true)},
		{attribute.String("note", "mail alice@example.com"), attribute.String("note", "mail [email]")},
		{attribute.StringSlice("hosts", []string{"10.1.2.3", "db"}), attribute.StringSlice("hosts", []string{"[ipv4]", "db"})},
		{attribute.Float64("rows", 12), attribute.Float64("rows", 12)},
	}
	for _, tc := range tests {
		if got := DefaultSanitizer().PluginSpanAttr(tc.in); got != tc.want {
			t.Errorf("PluginSpanAttr(%s=%s) = %s=%s, want %s=%s", tc.in.Key, tc.in.Value.String(),
				got.Key, got.Value.String(), tc.want.Key, tc.want.Value.String())
		}
	}
}
