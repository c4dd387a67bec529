package observability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"testing"
)

type stringerVal struct{ s string }

func (v stringerVal) String() string { return v.s }

type valuer struct{}

func (valuer) LogValue() slog.Value { return slog.StringValue("resolved alice@example.com") }

type nilErr struct{ msg *string }

func (e *nilErr) Error() string { return *e.msg }

// logJSON logs via f with a JSON logger over s and returns the decoded lines.
func logJSON(t *testing.T, s *Sanitizer, f func(l *slog.Logger)) []map[string]any {
	t.Helper()
	var buf bytes.Buffer
	l, err := NewLogger(&buf, slog.LevelDebug, "json", s)
	if err != nil {
		t.Fatal(err)
	}
	f(l)
	var out []map[string]any
	for line := range strings.Lines(buf.String()) {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatalf("bad JSON line %q: %v", line, err)
		}
		out = append(out, m)
	}
	return out
}

func TestLoggerJSONSanitizes(t *testing.T) {
	t.Parallel()
	s := mustSanitizer(t, SanitizerOptions{RedactKeys: []string{"ssn"}})
	lines := logJSON(t, s, func(l *slog.Logger) {
		l = l.With("client", "10.0.0.1", "token", "t0p", slog.Group("who", "email", "bob@example.com"))
		l.Info("login by alice@example.com with password=hunter2",
			"trace_id", "4bf92f3577b34da6a3ce929d0e0e4736",
			"span_id", "00f067aa0ba902b7",
			"level", "alice@example.com", // trusted: untouched
			"err", errors.New("dial 10.0.0.2:5432: refused"),
			"peer", stringerVal{"carol@example.com"},
			"tags", []string{"x", "dave@example.com"},
			"meta", map[string]any{"password": "p", "to": "erin@example.com"},
			"hdr", map[string]string{"Authorization": "Bearer z"},
			"api_key", 12345,
			"SSN", "123-45-6789",
			"v", valuer{},
			"named", namedString("frank@example.com"),
			"raw", json.RawMessage(`{"to":"gina@example.com"}`),
			"struct", testStruct{Email: "hank@example.com", Password: "p", N: 2},
			"n", 7,
			slog.Group("req", "url", "https://u:p@h/x", slog.Group("auth", "secret", "s", "ip", "fe80::1")),
		)
		l.WithGroup("g").With("k", "ivy@example.com").Warn("second", "x", "jack@example.com")
	})
	if len(lines) != 2 {
		t.Fatalf("got %d lines", len(lines))
	}
	want := map[string]any{
		"msg":      "login by [email] with password=[redacted]",
		"client":   "[ipv4]",
		"token":    "[redacted]",
		"who":      map[string]any{"email": "[email]"},
		"trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
		"span_id":  "00f067aa0ba902b7",
		"err":      "dial [ipv4]:5432: refused",
		"peer":     "[email]",
		"tags":     []any{"x", "[email]"},
		"meta":     map[string]any{"password": "[redacted]", "to": "[email]"},
		"hdr":      map[string]any{"Authorization": "[redacted]"},
		"api_key":  "[redacted]",
		"SSN":      "[redacted]",
		"v":        "resolved [email]",
		"named":    "[email]",
		"raw":      `{"to":"[email]"}`,
		"struct":   map[string]any{"email": "[email]", "password": "[redacted]", "n": float64(2)},
		"n":        float64(7),
		"req": map[string]any{
			"url":  "https://[userinfo]@h/x",
			"auth": map[string]any{"secret": "[redacted]", "ip": "[ipv6]"},
		},
	}
	got := lines[0]
	// The trusted "level" attribute duplicates the built-in key; encoding/json
	// keeps the last one, which is ours, untouched.
	if got["level"] != "alice@example.com" {
		t.Errorf("trusted level attr = %v", got["level"])
	}
	for k, w := range want {
		if g := fmt.Sprintf("%#v", got[k]); g != fmt.Sprintf("%#v", w) {
			t.Errorf("%s = %s, want %#v", k, g, w)
		}
	}
	if _, ok := got["time"]; !ok {
		t.Error("no time")
	}
	second := lines[1]
	if second["msg"] != "second" || second["level"] != "WARN" {
		t.Errorf("second line: %v", second)
	}
	g, _ := second["g"].(map[string]any)
	if g["k"] != "[email]" || g["x"] != "[email]" {
		t.Errorf("group g = %#v", second["g"])
	}
	for i, line := range lines {
		b, _ := json.Marshal(line)
		for _, leak := range []string{"hunter2", "t0p", "10.0.0", "123-45", "Bearer z", "u:p@", "12345"} {
			if strings.Contains(string(b), leak) {
				t.Errorf("leak %q in %s", leak, b)
			}
		}
		// Only the trusted "level" attribute of the first line keeps its e-mail.
		if n, want := strings.Count(string(b), "@example.com"), 1-i; n != want {
			t.Errorf("%d e-mails in line %d, want %d: %s", n, i, want, b)
		}
	}
}

func TestLoggerText(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	l, err := NewLogger(&buf, slog.LevelInfo, "TEXT", nil)
	if err != nil {
		t.Fatal(err)
	}
	l.Debug("hidden alice@example.com")
	l.Info("hello alice@example.com", "pw", "x", "password", "y", "b", []byte("bob@example.com"))
	out := buf.String()
	if strings.Contains(out, "hidden") {
		t.Errorf("debug line written at info level: %s", out)
	}
	for _, want := range []string{`msg="hello [email]"`, "password=[redacted]", `b="[email]"`, "pw=x"} {
		if !strings.Contains(out, want) {
			t.Errorf("text output %q lacks %q", out, want)
		}
	}
	if strings.Contains(out, "example.com") {
		t.Errorf("leak: %s", out)
	}
}

func TestNewLoggerFormats(t *testing.T) {
	t.Parallel()
	for _, f := range []string{"", "json", "JSON", " text "} {
		if _, err := NewLogger(io.Discard, slog.LevelInfo, f, nil); err != nil {
			t.Errorf("format %q: %v", f, err)
		}
	}
	if _, err := NewLogger(io.Discard, slog.LevelInfo, "xml", nil); err == nil || !strings.Contains(err.Error(), `unknown log format "xml"`) {
		t.Errorf("format xml: err = %v", err)
	}
	if _, err := NewLogger(nil, slog.LevelInfo, "json", nil); err == nil {
		t.Error("nil writer accepted")
	}
}

func TestParseLevel(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		in   string
		want slog.Level
		err  bool
	}{
		{"debug", slog.LevelDebug, false},
		{"INFO", slog.LevelInfo, false},
		{" Warn ", slog.LevelWarn, false},
		{"error", slog.LevelError, false},
		{"verbose", 0, true},
		{"", 0, true},
		{"warning", 0, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			t.Parallel()
			got, err := ParseLevel(tc.in)
			if tc.err {
				if err == nil || !strings.Contains(err.Error(), "want debug, info, warn or error") {
					t.Fatalf("ParseLevel(%q) err = %v", tc.in, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseLevel(%q) = %v, %v", tc.in, got, err)
			}
		})
	}
}

// recordingHandler keeps the records and WithAttrs calls it sees.
type recordingHandler struct {
	records   *[]slog.Record
	withAttrs *[][]slog.Attr
	level     slog.Level
}

func (h recordingHandler) Enabled(_ context.Context, l slog.Level) bool { return l >= h.level }
func (h recordingHandler) Handle(_ context.Context, r slog.Record) error {
	*h.records = append(*h.records, r.Clone())
	return nil
}
func (h recordingHandler) WithAttrs(as []slog.Attr) slog.Handler {
	*h.withAttrs = append(*h.withAttrs, as)
	return h
}
func (h recordingHandler) WithGroup(string) slog.Handler { return h }

// countingStringer counts how often it is rendered.
type countingStringer struct{ n *int }

func (c countingStringer) String() string { *c.n++; return "x@example.com" }

func TestSanitizingHandlerContract(t *testing.T) {
	t.Parallel()
	var recs []slog.Record
	var with [][]slog.Attr
	base := recordingHandler{records: &recs, withAttrs: &with, level: slog.LevelInfo}
	h := NewSanitizingHandler(base, mustSanitizer(t, SanitizerOptions{TrustedKeys: []string{"keep"}}))
	ctx := context.Background()
	if h.Enabled(ctx, slog.LevelDebug) || !h.Enabled(ctx, slog.LevelWarn) {
		t.Error("Enabled does not delegate")
	}
	if h.WithGroup("") != h || h.WithAttrs(nil) != h {
		t.Error("empty WithGroup/WithAttrs should return the handler itself")
	}
	n := 0
	l := slog.New(h).With("c", countingStringer{&n}, "keep", "a@example.com", "trace_id", "b@example.com")
	if n != 1 {
		t.Fatalf("With-value rendered %d times at With time, want 1", n)
	}
	for range 3 {
		l.Info("m")
	}
	if n != 1 {
		t.Fatalf("With-value rendered %d times after 3 records, want 1 (sanitized once at With time)", n)
	}
	if len(with) != 1 || len(recs) != 3 {
		t.Fatalf("with=%d recs=%d", len(with), len(recs))
	}
	got := map[string]string{}
	for _, a := range with[0] {
		got[a.Key] = a.Value.String()
	}
	// Custom TrustedKeys replace the defaults: trace_id is sanitized here.
	if got["c"] != "[email]" || got["keep"] != "a@example.com" || got["trace_id"] != "[email]" {
		t.Errorf("WithAttrs passed %v", got)
	}

	// Errors whose Error method panics do not take the logger down.
	l.Info("boom", "err", &nilErr{})
	last := recs[len(recs)-1]
	last.Attrs(func(a slog.Attr) bool {
		if a.Key == "err" && !strings.HasPrefix(a.Value.String(), "!PANIC") {
			t.Errorf("err = %q", a.Value.String())
		}
		return true
	})
}

func TestSanitizingHandlerNilHandlerPanics(t *testing.T) {
	t.Parallel()
	defer func() {
		if recover() == nil {
			t.Error("no panic")
		}
	}()
	NewSanitizingHandler(nil, nil)
}

// countingWriter counts the bytes written to it.
type countingWriter struct{ n int64 }

func (w *countingWriter) Write(p []byte) (int, error) { w.n += int64(len(p)); return len(p), nil }

// BenchmarkLogger writes lines through NewLogger to io.Discard; MB/s is of
// the JSON written. "unsanitized" is the plain slog JSON handler, for scale.
func BenchmarkLogger(b *testing.B) {
	s := mustSanitizer(b, SanitizerOptions{})
	clean := func(l *slog.Logger) {
		l.Info("run finished", "run_id", "018f6b2c-6d0a-7c3e-9a4b-1f2e3d4c5b6a", "attempt", 2,
			"trace_id", "4bf92f3577b34da6a3ce929d0e0e4736", "status", "success", "duration", "1m30.5s")
	}
	dirtyErr := errors.New("dial tcp 10.0.0.7:5432: password authentication failed for alice@example.com")
	dirty := func(l *slog.Logger) {
		l.Error("run failed for alice@example.com", "err", dirtyErr, "password", "hunter2",
			"client", "203.0.113.9", "trace_id", "4bf92f3577b34da6a3ce929d0e0e4736")
	}
	newLogger := func(w io.Writer, sanitized bool) *slog.Logger {
		var l *slog.Logger
		if sanitized {
			var err error
			if l, err = NewLogger(w, slog.LevelInfo, "json", s); err != nil {
				b.Fatal(err)
			}
		} else {
			l = slog.New(slog.NewJSONHandler(w, &slog.HandlerOptions{Level: slog.LevelInfo}))
		}
		return l.With("job", "nightly-backup", "node", "node-3")
	}
	for _, bc := range []struct {
		name      string
		sanitized bool
		line      func(*slog.Logger)
	}{
		{"clean", true, clean},
		{"dirty", true, dirty},
		{"clean_unsanitized", false, clean},
		{"dirty_unsanitized", false, dirty},
	} {
		b.Run(bc.name, func(b *testing.B) {
			var cw countingWriter
			bc.line(newLogger(&cw, bc.sanitized))
			b.SetBytes(cw.n)
			l := newLogger(io.Discard, bc.sanitized)
			b.ReportAllocs()
			for b.Loop() {
				bc.line(l)
			}
		})
	}
}

// TestAuditRemoteAddrKept: the audit line's remote_addr (the TCP peer of an
// API call) is a default trusted key: kept, while the same address in any
// other attribute or the message is masked.
func TestAuditRemoteAddrKept(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := NewLogger(&buf, slog.LevelInfo, "json", nil)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("api audit from 203.0.113.9", "remote_addr", "203.0.113.9:52114", "client", "203.0.113.9:52114")
	var got map[string]any
	if err := json.Unmarshal(buf.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if got["remote_addr"] != "203.0.113.9:52114" || got["client"] != "[ipv4]:52114" || got["msg"] != "api audit from [ipv4]" {
		t.Fatalf("got %v", got)
	}
}

// TestFencingTokenFieldsKept: every fencing-token field Pacer logs keeps its
// number (previous_token of a hand-over or an unfinished trigger included),
// while a string under those names, and a number under any other key ending
// in token, is still redacted.
func TestFencingTokenFieldsKept(t *testing.T) {
	t.Parallel()
	var buf bytes.Buffer
	log, err := NewLogger(&buf, slog.LevelInfo, "json", nil)
	if err != nil {
		t.Fatal(err)
	}
	log.Info("shard handed over", "fencing_token", int64(7), "previous_token", int64(42),
		"previous_fencing_token", uint64(41), "access_token", int64(123456))
	log.Info("plugin line", "previous_token", "s3kr1t", "my_fencing_token", "s3kr1t")
	dec := json.NewDecoder(&buf)
	var first, second map[string]any
	if err := dec.Decode(&first); err != nil {
		t.Fatal(err)
	}
	if err := dec.Decode(&second); err != nil {
		t.Fatal(err)
	}
	if first["fencing_token"] != 7.0 || first["previous_token"] != 42.0 || first["previous_fencing_token"] != 41.0 ||
		first["access_token"] != "[redacted]" {
		t.Errorf("fencing tokens: got %v", first)
	}
	if second["previous_token"] != "[redacted]" || second["my_fencing_token"] != "[redacted]" {
		t.Errorf("string values under fencing-token names: got %v", second)
	}
}

// The IDs Pacer makes (UUIDs) keep their value under correlation_id, run_id
// and trigger_id however broad an operator pattern is, so a run's log lines
// can be found by its record's IDs; any other value under those keys, and
// the same UUID under another key, are still masked (attack 9, finding 14).
func TestLoggerKeepsGeneratedIDsFromOperatorPatterns(t *testing.T) {
	t.Parallel()
	s := mustSanitizer(t, SanitizerOptions{Patterns: []Pattern{{Name: "acct", Regex: "[0-9]{3}"}}})
	corr, run, trig := "0bc12345-14b7-4537-bc50-5feb7e1235c2", "01a24d50-3d91-77aa-123e-456d33f5d95d", "01a24d50-3d91-77aa-8000-000000000001"
	if !GeneratedID(NewCorrelationID()) || !GeneratedID(NewRunID()) {
		t.Fatalf("Pacer's IDs are not GeneratedID's shape: %s %s", NewCorrelationID(), NewRunID())
	}
	lines := logJSON(t, s, func(l *slog.Logger) {
		l.With("correlation_id", corr).Info("run started", "run_id", run, "trigger_id", trig, "other", corr)
		l.Info("plugin line", "correlation_id", "acct 12345", "run_id", "password=hunter2")
	})
	if got := lines[0]; got["correlation_id"] != corr || got["run_id"] != run || got["trigger_id"] != trig {
		t.Errorf("IDs changed: %v", got)
	}
	if got := lines[0]["other"]; got == corr {
		t.Errorf("the UUID under another key was not masked: %v", got)
	}
	if got := lines[1]; got["correlation_id"] != "acct [acct]45" || got["run_id"] != "password=[redacted]" {
		t.Errorf("other values under the ID keys: %v", got)
	}
}
