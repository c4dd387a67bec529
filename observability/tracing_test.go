package observability

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/trace/tracetest"
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
				Endpoint: "127.0.0.1:1", Insecure: true, SampleRatio: 1, ExportTimeout: 300 * time.Millisecond})
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
