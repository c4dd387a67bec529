package observability

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/pacerun/pacer/internal/syncbuf"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

func TestStdoutExporterCarriesResourceAndImportedSpans(t *testing.T) {
	var out bytes.Buffer
	tr, err := NewTracing(context.Background(), TracingOptions{Exporter: "stdout", SampleRatio: 1, Version: "1.2.3", Node: "n1", Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Provider.Tracer("t").Start(context.Background(), "pacer.run")
	span.End()
	tr.ImportSpan(tracetest.SpanStub{Name: "from.plugin", SpanContext: span.SpanContext()}.Snapshot())
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"pacer.run"`, `"from.plugin"`, `"service.name"`, `"pacer"`, `"service.instance.id"`, `"n1"`, `"1.2.3"`} {
		if !strings.Contains(out.String(), want) {
			t.Fatalf("export lacks %s:\n%s", want, out.String())
		}
	}
}

// Shutdown with an unreachable collector returns once its context ends.
func TestShutdownIsBoundedWhenTheCollectorIsDown(t *testing.T) {
	for _, proto := range []string{"grpc", "http"} {
		t.Run(proto, func(t *testing.T) {
			tr, err := NewTracing(context.Background(), TracingOptions{Exporter: "otlp", Protocol: proto,
				Endpoint: "127.0.0.1:1", Insecure: new(true), SampleRatio: 1, ExportTimeout: 300 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			_, span := tr.Provider.Tracer("t").Start(context.Background(), "pacer.run")
			span.End()
			ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			defer cancel()
			done := make(chan struct{})
			go func() { _ = tr.Shutdown(ctx); close(done) }()
			select {
			case <-done:
			case <-time.After(30 * time.Second):
				t.Fatal("Shutdown did not return after its context ended")
			}
		})
	}
}

func TestEnvSamplerWins(t *testing.T) {
	t.Setenv("OTEL_TRACES_SAMPLER", "always_off")
	tr, err := NewTracing(context.Background(), TracingOptions{Exporter: "none", SampleRatio: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	_, span := tr.Provider.Tracer("t").Start(context.Background(), "x")
	defer span.End()
	if span.SpanContext().IsSampled() {
		t.Fatal("OTEL_TRACES_SAMPLER=always_off was ignored")
	}
}

// Span and event attributes whose key is sensitive are redacted at export,
// for the runner's spans and imported ones (attack 3, B4: a Python plugin's
// ctx.span("db", {"db.password": ...}) was exported as it was).
func TestExportRedactsSensitiveKeys(t *testing.T) {
	var out bytes.Buffer
	tr, err := NewTracing(context.Background(), TracingOptions{Exporter: "stdout", SampleRatio: 1, Stdout: &out})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Provider.Tracer("t").Start(context.Background(), "pacer.run")
	span.SetAttributes(attribute.String("http.request.header.authorization", "S3KRITrun1"), attribute.Int64("pacer.fencing_token", 42))
	span.End()
	tr.ImportSpan(tracetest.SpanStub{Name: "db", SpanContext: span.SpanContext(),
		Attributes: []attribute.KeyValue{attribute.String("db.password", "S3KRITpy6"), attribute.String("db.system", "postgresql"),
			attribute.Bool("db.password_set", true), attribute.String("alice@example.com", "k")},
		Events: []sdktrace.Event{{Name: "connect", Attributes: []attribute.KeyValue{attribute.String("api_key", "S3KRITev1")}}},
	}.Snapshot())
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	for _, leak := range []string{"S3KRIT", "alice@"} {
		if strings.Contains(got, leak) {
			t.Errorf("the export holds %q:\n%s", leak, got)
		}
	}
	for _, want := range []string{`"Key":"db.password","Value":{"Type":"STRING","Value":"[redacted]"}`,
		`"Key":"api_key","Value":{"Type":"STRING","Value":"[redacted]"}`, `"Key":"[email]"`,
		`"Key":"db.system","Value":{"Type":"STRING","Value":"postgresql"}`, `"Key":"db.password_set","Value":{"Type":"BOOL","Value":true}`,
		`"Key":"pacer.fencing_token","Value":{"Type":"INT64","Value":42}`} {
		if !strings.Contains(got, want) {
			t.Errorf("the export lacks %s:\n%s", want, got)
		}
	}
}

// otlpCollector is an OTLP/HTTP receiver that records the paths spans
// were posted to.
func otlpCollector(t *testing.T, ln net.Listener) <-chan string {
	t.Helper()
	paths := make(chan string, 16)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case paths <- r.URL.Path:
		default:
		}
		w.Header().Set("Content-Type", "application/x-protobuf")
		w.WriteHeader(http.StatusOK)
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	return paths
}

func exportOneSpan(t *testing.T, o TracingOptions) {
	t.Helper()
	o.Exporter, o.SampleRatio, o.ExportTimeout = "otlp", 1, 5*time.Second
	tr, err := NewTracing(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Provider.Tracer("t").Start(context.Background(), "pacer.run")
	span.End()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_ = tr.Shutdown(ctx)
}

func waitPath(t *testing.T, paths <-chan string, want string) {
	t.Helper()
	select {
	case p := <-paths:
		if p != want {
			t.Fatalf("spans posted to %s, want %s", p, want)
		}
	case <-time.After(10 * time.Second):
		t.Fatalf("no spans reached the collector (want %s)", want)
	}
}

// With no endpoint in the config, the standard variables name it (attack 3,
// B9: they were ignored, and protocol http went to port 4317).
func TestOTLPEndpointFromEnvironment(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	paths := otlpCollector(t, ln)
	base := "http://" + ln.Addr().String()

	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", base)
	exportOneSpan(t, TracingOptions{Protocol: "http"})
	waitPath(t, paths, "/v1/traces")

	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", base+"/custom/traces")
	exportOneSpan(t, TracingOptions{Protocol: "http"})
	waitPath(t, paths, "/custom/traces")

	// The config's endpoint wins over the environment.
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://127.0.0.1:1/nowhere")
	exportOneSpan(t, TracingOptions{Protocol: "http", Endpoint: ln.Addr().String()})
	waitPath(t, paths, "/v1/traces")
}

// With neither, protocol http goes to 127.0.0.1:4318.
func TestOTLPHTTPDefaultPort(t *testing.T) {
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "")
	t.Setenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "")
	ln, err := net.Listen("tcp", DefaultOTLPHTTPEndpoint)
	if err != nil {
		t.Skipf("cannot listen on %s, the default OTLP/HTTP port, to check it: %v", DefaultOTLPHTTPEndpoint, err)
	}
	paths := otlpCollector(t, ln)
	exportOneSpan(t, TracingOptions{Protocol: "http"})
	waitPath(t, paths, "/v1/traces")
}

// OpenTelemetry's own errors become sanitized JSON lines, one per interval
// with the number left out (attack 3, B8: plain text from package log).
func TestOTelErrorHandler(t *testing.T) {
	var buf bytes.Buffer
	log, err := NewLogger(&buf, slog.LevelInfo, "json", nil)
	if err != nil {
		t.Fatal(err)
	}
	h := NewOTelErrorHandler(log, 30*time.Second)
	now := time.Unix(1000, 0)
	h.now = func() time.Time { return now }
	fail := errors.New(`traces export: Post "https://u:S3KRITot1@collector:4318/v1/traces": connection refused`)
	h.Handle(fail)
	for range 5 {
		now = now.Add(time.Second)
		h.Handle(fail)
	}
	now = now.Add(30 * time.Second)
	h.Handle(fail)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), buf.String())
	}
	for i, want := range []float64{0, 5} {
		var l map[string]any
		if err := json.Unmarshal([]byte(lines[i]), &l); err != nil {
			t.Fatalf("not JSON: %q", lines[i])
		}
		if l["level"] != "WARN" || l["msg"] != "opentelemetry error" || l["suppressed"] != want ||
			l["error"] != `traces export: Post "https://[userinfo]@collector:4318/v1/traces": connection refused` {
			t.Errorf("line %d: %v", i, l)
		}
	}
}

// Without an exporter spans are not recorded, but still have IDs: logs and
// exemplars carry them.
func TestNoExporterRecordsNothingButKeepsIDs(t *testing.T) {
	tr, err := NewTracing(context.Background(), TracingOptions{Exporter: "none", SampleRatio: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer tr.Shutdown(context.Background())
	ctx, span := tr.Provider.Tracer("t").Start(context.Background(), "pacer.run")
	_, child := tr.Provider.Tracer("t").Start(ctx, "pacer.claim")
	defer span.End()
	defer child.End()
	for _, s := range []trace.Span{span, child} {
		if s.IsRecording() || s.SpanContext().IsSampled() {
			t.Fatalf("span recorded (%v) or sampled (%v) without an exporter", s.IsRecording(), s.SpanContext().IsSampled())
		}
		if !s.SpanContext().HasTraceID() || !s.SpanContext().HasSpanID() {
			t.Fatalf("span without IDs: %v", s.SpanContext())
		}
	}
	if child.SpanContext().TraceID() != span.SpanContext().TraceID() {
		t.Fatal("the child is not in its parent's trace")
	}
}

// OTEL_RESOURCE_ATTRIBUTES goes out with every export: its sensitive keys'
// values are redacted and its other values masked, as in the log (attack
// 32, S5: db.password and an e-mail address were exported in clear).
func TestResourceFromTheEnvironmentIsSanitized(t *testing.T) {
	t.Setenv("OTEL_RESOURCE_ATTRIBUTES", "db.password=RESPWSECRET,owner=ops@example.com,team=payments")
	var out bytes.Buffer
	tr, err := NewTracing(context.Background(), TracingOptions{Exporter: "stdout", SampleRatio: 1, Stdout: &out, Sanitizer: DefaultSanitizer()})
	if err != nil {
		t.Fatal(err)
	}
	_, span := tr.Provider.Tracer("t").Start(context.Background(), "pacer.run")
	span.End()
	if err := tr.Shutdown(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, leak := range []string{"RESPWSECRET", "ops@example.com"} {
		if strings.Contains(out.String(), leak) {
			t.Errorf("export shows %s:\n%s", leak, out.String())
		}
	}
	for _, want := range []string{`"db.password"`, `"[redacted]"`, `"[email]"`, `"payments"`} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("export lacks %s:\n%s", want, out.String())
		}
	}
}

// OTEL_EXPORTER_OTLP_* variables the exporter could not parse are refused
// at the start, naming the variable and quoting nothing secret. Before,
// OpenTelemetry logged them whole to stderr in plain text (the API key of a
// header written "Authorization: Bearer x", the password of an endpoint)
// and sent to its default endpoint instead (attack 32, S4).
func TestOTLPVariablesThatCannotBeParsedAreRefused(t *testing.T) {
	for _, tc := range []struct{ name, value, want string }{
		{"OTEL_EXPORTER_OTLP_HEADERS", "Authorization: Bearer HDRSECRET", "OTEL_EXPORTER_OTLP_HEADERS: entry 1 is not key=value"},
		{"OTEL_EXPORTER_OTLP_TRACES_HEADERS", "api-key=x,HDRSECRET", "OTEL_EXPORTER_OTLP_TRACES_HEADERS: entry 2 is not key=value"},
		{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://bob:pa/ssEPSECRET@127.0.0.1:1/v1/traces?api_key=KEYSECRET x", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT="},
		{"OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318", "OTEL_EXPORTER_OTLP_ENDPOINT=\"collector:4318\": want a URL with a scheme and a host"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(tc.name, tc.value)
			_, err := NewTracing(context.Background(), TracingOptions{Exporter: "otlp", Protocol: "http", Sanitizer: DefaultSanitizer()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want one saying %q", err, tc.want)
			}
			for _, leak := range []string{"SECRET", "ssEP"} {
				if strings.Contains(err.Error(), leak) {
					t.Fatalf("error %v shows the secret", err)
				}
			}
		})
	}
	// The config's headers and endpoint win: the variables are not read.
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization: Bearer HDRSECRET")
	t.Setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")
	tr, err := NewTracing(context.Background(), TracingOptions{Exporter: "otlp", Protocol: "http", Endpoint: "127.0.0.1:1",
		Headers: map[string]string{"api-key": "x"}})
	if err != nil {
		t.Fatalf("with the config's endpoint and headers: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = tr.Shutdown(ctx)
}

// What OpenTelemetry logs of itself goes through the logger it is given:
// JSON lines that pass the sanitizer (attack 32, S4: plain text on stderr,
// quoting a header variable whole).
func TestOTelLogsGoThroughTheLogger(t *testing.T) {
	var buf syncbuf.Buffer
	log, err := NewLogger(&buf, slog.LevelInfo, "json", nil)
	if err != nil {
		t.Fatal(err)
	}
	RouteOTelLogs(log)
	t.Cleanup(func() { RouteOTelLogs(slog.New(slog.DiscardHandler)) })
	t.Setenv("OTEL_EXPORTER_OTLP_HEADERS", "Authorization: Bearer HDRSECRET")
	exp, err := otlptracehttp.New(context.Background(), otlptracehttp.WithEndpointURL("http://127.0.0.1:1/v1/traces"))
	if err != nil {
		t.Fatal(err)
	}
	_ = exp.Shutdown(context.Background())
	if !strings.Contains(buf.String(), `"msg":"parse headers"`) || strings.Contains(buf.String(), "HDRSECRET") ||
		!strings.Contains(buf.String(), "Bearer [token]") {
		t.Fatalf("log %q, want OpenTelemetry's parse headers line, masked", buf.String())
	}
}
