package observability

import (
	"context"
	"fmt"
	"io"
	"net/url"
	"os"
	"slices"
	"strings"
	"time"

	"go.opentelemetry.io/otel/attribute"
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
	// Exporter is "none", "stdout" or "otlp". With "none" spans still get
	// IDs, so logs and exemplars carry trace IDs, but none is recorded or
	// exported (unless OTEL_TRACES_SAMPLER asks for sampling).
	Exporter string
	// Endpoint is the otlp exporter's host:port. Empty: the standard
	// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT
	// if either is set, else 127.0.0.1 on the protocol's port (4317 for
	// grpc, 4318 for http).
	Endpoint string
	// Insecure, for otlp, sends in plaintext. nil: plaintext to Endpoint
	// and to the default endpoint; with an endpoint from the environment,
	// the exporter decides from its scheme and OTEL_EXPORTER_OTLP_INSECURE.
	Insecure *bool
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
	// Sanitizer masks span attributes by key ("db.password") at export, for
	// every span: the runner's and those imported from plugins (their
	// values are sanitized where they are made). nil: DefaultSanitizer.
	Sanitizer *Sanitizer
}

// Default OTLP endpoints, by protocol.
const (
	DefaultOTLPGRPCEndpoint = "127.0.0.1:4317"
	DefaultOTLPHTTPEndpoint = "127.0.0.1:4318"
)

// otlpEndpointFromEnv reports whether the environment names an OTLP trace
// endpoint, which the exporter then reads itself.
func otlpEndpointFromEnv() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
}

// Propagator is the W3C trace-context propagator Pacer uses everywhere.
var Propagator = propagation.TraceContext{}

// sanitizedResource is res with its attributes as the log has them: a
// sensitive key's value redacted, other strings masked. OTEL_RESOURCE_ATTRIBUTES
// adds to it whatever the environment holds, and it goes out with every
// export (attack 32, S5: db.password and an e-mail address were exported
// in clear).
func sanitizedResource(res *resource.Resource, s *Sanitizer) *resource.Resource {
	attrs := res.Attributes()
	for i, a := range attrs {
		switch {
		case a.Value.Type() == attribute.BOOL:
		case s.SensitiveKey(string(a.Key)):
			attrs[i].Value = attribute.StringValue(phRedacted)
		case a.Value.Type() == attribute.STRING:
			attrs[i].Value = attribute.StringValue(s.String(a.Value.AsString()))
		}
		attrs[i].Key = attribute.Key(s.String(string(a.Key)))
	}
	return resource.NewWithAttributes(res.SchemaURL(), attrs...)
}

// checkOTLPEnv refuses the OTEL_EXPORTER_OTLP_* variables the exporter would
// read and could not parse: it logs that it ignores them, quoting them
// whole (an API key in a header, a password in an endpoint), and sends to
// its default endpoint instead (attack 32, S4). endpointFromEnv says whether
// the endpoint is the variables' (none in the config), headersFromEnv the
// same of the headers. What the error quotes is masked.
func checkOTLPEnv(s *Sanitizer, endpointFromEnv, headersFromEnv bool) error {
	if s == nil {
		s = DefaultSanitizer()
	}
	if endpointFromEnv {
		for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT"} {
			v := os.Getenv(name)
			if v == "" {
				continue
			}
			if u, err := url.Parse(v); err != nil || u.Scheme == "" || u.Host == "" {
				return fmt.Errorf("%s=%q: want a URL with a scheme and a host, such as http://collector:4318", name, s.String(v))
			}
		}
	}
	if headersFromEnv {
		for _, name := range []string{"OTEL_EXPORTER_OTLP_TRACES_HEADERS", "OTEL_EXPORTER_OTLP_HEADERS"} {
			v := os.Getenv(name)
			if v == "" {
				continue
			}
			for i, h := range strings.Split(v, ",") {
				if k, _, ok := strings.Cut(h, "="); !ok || strings.TrimSpace(k) == "" {
					return fmt.Errorf("%s: entry %d is not key=value (W3C baggage form, such as api-key=x,tenant=y; its value is not shown)", name, i+1)
				}
			}
		}
	}
	return nil
}

// otlpExporter builds an OTLP exporter over gRPC or HTTP. Options left
// empty fall back to the standard OTEL_EXPORTER_OTLP_* variables, which the
// exporter reads only for what no option sets.
func otlpExporter(ctx context.Context, o TracingOptions) (sdktrace.SpanExporter, error) {
	timeout := o.ExportTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	// The endpoint is set as a whole URL (scheme from Insecure, the
	// standard path) so that no part of an OTEL_EXPORTER_OTLP_* endpoint
	// mixes into the config's; with none in the config, the variables
	// decide, or the default applies.
	endpoint, insecure := o.Endpoint, o.Insecure == nil || *o.Insecure
	if err := checkOTLPEnv(o.Sanitizer, endpoint == "", len(o.Headers) == 0); err != nil {
		return nil, err
	}
	if endpoint == "" {
		if otlpEndpointFromEnv() {
			insecure = o.Insecure != nil && *o.Insecure
		} else if o.Protocol == "http" {
			endpoint = DefaultOTLPHTTPEndpoint
		} else {
			endpoint = DefaultOTLPGRPCEndpoint
		}
	}
	var endpointURL string
	if endpoint != "" {
		scheme := "https"
		if insecure {
			scheme = "http"
		}
		endpointURL = scheme + "://" + endpoint + "/v1/traces"
	}
	if o.Protocol == "http" {
		eo := []otlptracehttp.Option{otlptracehttp.WithTimeout(timeout), otlptracehttp.WithRetry(otlptracehttp.RetryConfig{
			Enabled: true, InitialInterval: timeout / 10, MaxInterval: timeout / 2, MaxElapsedTime: timeout})}
		if endpointURL != "" {
			eo = append(eo, otlptracehttp.WithEndpointURL(endpointURL))
		} else if insecure {
			eo = append(eo, otlptracehttp.WithInsecure())
		}
		if len(o.Headers) > 0 {
			eo = append(eo, otlptracehttp.WithHeaders(o.Headers))
		}
		return otlptracehttp.New(ctx, eo...)
	}
	eo := []otlptracegrpc.Option{otlptracegrpc.WithTimeout(timeout), otlptracegrpc.WithRetry(otlptracegrpc.RetryConfig{
		Enabled: true, InitialInterval: timeout / 10, MaxInterval: timeout / 2, MaxElapsedTime: timeout})}
	if endpointURL != "" {
		eo = append(eo, otlptracegrpc.WithEndpointURL(endpointURL))
	} else if insecure {
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
	if o.Sanitizer != nil {
		// The provider merges OTEL_RESOURCE_ATTRIBUTES in again
		// (WithResource), read afresh, under res: res must hold every
		// key of it, sanitized, to win.
		if env, err := resource.Merge(resource.Environment(), res); err == nil {
			res = env
		}
		res = sanitizedResource(res, o.Sanitizer)
	}
	opts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res)}
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
	// OTEL_TRACES_SAMPLER, when set, wins: the SDK reads it itself.
	// Without an exporter no span is recorded: each still gets its IDs
	// (logs, exemplars and plugins carry them), but building and ending
	// spans nobody exports would cost every run CPU for nothing.
	switch {
	case os.Getenv("OTEL_TRACES_SAMPLER") != "":
	case exp == nil:
		opts = append(opts, sdktrace.WithSampler(sdktrace.NeverSample()))
	default:
		opts = append(opts, sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.TraceIDRatioBased(o.SampleRatio))))
	}
	t := &Tracing{res: res}
	if exp != nil {
		exp = &sanitizingExporter{SpanExporter: exp, s: o.Sanitizer}
		t.export = sdktrace.NewBatchSpanProcessor(exp)
		opts = append(opts, sdktrace.WithSpanProcessor(t.export))
	}
	t.Provider = sdktrace.NewTracerProvider(opts...)
	return t, nil
}

// sanitizingExporter redacts, before export, the values of span and event
// attributes whose key is sensitive (SensitiveKey: "db.password",
// "http.request.header.authorization"), as the logger does for log
// attributes, and masks keys that are themselves personal data.
type sanitizingExporter struct {
	sdktrace.SpanExporter
	s *Sanitizer
}

func (e *sanitizingExporter) ExportSpans(ctx context.Context, spans []sdktrace.ReadOnlySpan) error {
	var out []sdktrace.ReadOnlySpan
	for i, sp := range spans {
		attrs, changed := e.attrs(sp.Attributes())
		var events []sdktrace.Event
		for k, ev := range sp.Events() {
			ea, c := e.attrs(ev.Attributes)
			if c {
				if events == nil {
					events = slices.Clone(sp.Events())
				}
				events[k].Attributes = ea
			}
		}
		if !changed && events == nil {
			if out != nil {
				out = append(out, sp)
			}
			continue
		}
		if out == nil {
			out = append(make([]sdktrace.ReadOnlySpan, 0, len(spans)), spans[:i]...)
		}
		out = append(out, sanitizedSpan{ReadOnlySpan: sp, attrs: attrs, events: events})
	}
	if out == nil {
		out = spans
	}
	return e.SpanExporter.ExportSpans(ctx, out)
}

// attrs returns in with sensitive keys' values redacted and keys masked,
// and whether anything changed (if not, in itself).
func (e *sanitizingExporter) attrs(in []attribute.KeyValue) ([]attribute.KeyValue, bool) {
	var out []attribute.KeyValue
	for i, a := range in {
		k := string(a.Key)
		nk := e.s.String(k)
		sensitive := e.s.SensitiveKey(k) && a.Value.Type() != attribute.BOOL && a.Value.AsString() != phRedacted
		if nk == k && !sensitive {
			continue
		}
		if out == nil {
			out = slices.Clone(in)
		}
		out[i].Key = attribute.Key(nk)
		if sensitive {
			out[i].Value = attribute.StringValue(phRedacted)
		}
	}
	if out == nil {
		return in, false
	}
	return out, true
}

// sanitizedSpan is a span with its attributes and events replaced.
type sanitizedSpan struct {
	sdktrace.ReadOnlySpan
	attrs  []attribute.KeyValue
	events []sdktrace.Event // nil: the span's own
}

func (s sanitizedSpan) Attributes() []attribute.KeyValue { return s.attrs }

func (s sanitizedSpan) Events() []sdktrace.Event {
	if s.events == nil {
		return s.ReadOnlySpan.Events()
	}
	return s.events
}
