package observability

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
)

// TracingOptions configure the tracer provider.
type TracingOptions struct {
	// Exporter is "none", "stdout" or "otlp". With "none" spans are still
	// created, so logs carry trace IDs, but nothing is exported.
	Exporter string
	Endpoint string // otlp: host:port of the OTLP receiver
	Insecure bool   // otlp: plaintext
	Protocol string // otlp: "grpc" (default) or "http"
	Headers  map[string]string
	// ExportTimeout bounds one export including its retries (default 10s),
	// so a collector that is down cannot hold spans, or a shutdown, for
	// long.
	ExportTimeout time.Duration
	SampleRatio   float64
	Version       string
	Node          string
	// Stdout is where the stdout exporter writes; default os.Stdout.
	Stdout io.Writer
}

// Propagator is the W3C trace-context propagator Pacer uses everywhere.
var Propagator = propagation.TraceContext{}

// otlpExporter builds an OTLP exporter over gRPC or HTTP. Options left
// empty fall back to the standard OTEL_EXPORTER_OTLP_* variables.
func otlpExporter(ctx context.Context, o TracingOptions) (sdktrace.SpanExporter, error) {
	timeout := o.ExportTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	if o.Protocol == "http" {
		eo := []otlptracehttp.Option{otlptracehttp.WithTimeout(timeout), otlptracehttp.WithRetry(otlptracehttp.RetryConfig{
			Enabled: true, InitialInterval: timeout / 10, MaxInterval: timeout / 2, MaxElapsedTime: timeout})}
		if o.Endpoint != "" {
			eo = append(eo, otlptracehttp.WithEndpoint(o.Endpoint))
		}
		if o.Insecure {
			eo = append(eo, otlptracehttp.WithInsecure())
		}
		if len(o.Headers) > 0 {
			eo = append(eo, otlptracehttp.WithHeaders(o.Headers))
		}
		return otlptracehttp.New(ctx, eo...)
	}
	eo := []otlptracegrpc.Option{otlptracegrpc.WithTimeout(timeout), otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{
		Enabled: true, InitialInterval: timeout / 10, MaxInterval: timeout / 2, MaxElapsedTime: timeout})}
	if o.Endpoint != "" {
		eo = append(eo, otlptracegrpc.WithEndpoint(o.Endpoint))
	}
	if o.Insecure {
		eo = append(eo, otlptracegrpc.WithInsecure())
	}
	if len(o.Headers) > 0 {
		eo = append(eo, otlptracegrpc.WithHeaders(o.Headers))
	}
	return otlptracegrpc.New(ctx, eo...)
}

// Tracing is the runner's tracer provider plus a way to export spans that
// were recorded elsewhere (inside plugins) through the same pipeline.
type Tracing struct {
	Provider *sdktrace.TracerProvider
	res      *resource.Resource
	export   sdktrace.SpanProcessor // nil when nothing is exported
}

// ImportSpan queues a span recorded outside this process for export, as
// part of this service.
func (t *Tracing) ImportSpan(s sdktrace.ReadOnlySpan) {
	if t.export != nil {
		t.export.OnEnd(withResource{s, t.res})
	}
}

// Shutdown flushes and stops the provider.
func (t *Tracing) Shutdown(ctx context.Context) error { return t.Provider.Shutdown(ctx) }

type withResource struct {
	sdktrace.ReadOnlySpan
	res *resource.Resource
}

func (w withResource) Resource() *resource.Resource { return w.res }

// NewTracing builds the tracer provider. Shut it down to flush spans. The
// OTLP exporter also honours the standard OTEL_EXPORTER_OTLP_* variables.
func NewTracing(ctx context.Context, o TracingOptions) (*Tracing, error) {
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(
		semconv.ServiceName("pacer"),
		semconv.ServiceVersion(o.Version),
		semconv.ServiceInstanceID(o.Node),
	))
	if err != nil {
		return nil, fmt.Errorf("tracing resource: %w", err)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
	// OTEL_TRACES_SAMPLER, when set, wins: the SDK reads it itself.
	if os.Getenv("OTEL_TRACES_SAMPLER") == "" {
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(o.SampleRatio))))
	}
	var exp sdktrace.SpanExporter
	switch o.Exporter {
	case "", "none":
	case "stdout":
		w := o.Stdout
		if w == nil {
			w = os.Stdout
		}
		if exp, err = stdouttrace.New(stdouttrace.WithWriter(w)); err != nil {
			return nil, fmt.Errorf("stdout trace exporter: %w", err)
		}
	case "otlp":
		if exp, err = otlpExporter(ctx, o); err != nil {
			return nil, fmt.Errorf("otlp trace exporter: %w", err)
		}
	default:
		return nil, fmt.Errorf("tracing exporter %q: want none, stdout or otlp", o.Exporter)
	}
	t := &Tracing{res: res}
	if exp != nil {
		t.export = sdktrace.NewBatchSpanProcessor(exp)
		opts = append(opts, sdktrace.WithSpanProcessor(t.export))
	}
	t.Provider = sdktrace.NewTracerProvider(opts...)
	return t, nil
}
