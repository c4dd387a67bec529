package server

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pacerun/pacer/sdk/pluginv1"
)

// installTracing makes otel's global tracer provider ship every span a task
// finishes back to the runner over the run's stream. Plugins need no
// exporter configuration, and their spans are sanitized and exported by the
// runner with its own. Spans outside a run are dropped: sampling follows the
// runner's span, and a root span is never sampled.
func installTracing(s *Server) *sdktrace.TracerProvider {
	tp := NewTracerProvider(s)
	otel.SetTracerProvider(tp)
	otel.SetTextMapPropagator(propagatorForPlugins)
	return tp
}

// NewTracerProvider returns a tracer provider whose spans are shipped over
// s's run streams (see installTracing).
func NewTracerProvider(s *Server) *sdktrace.TracerProvider {
	tp := sdktrace.NewTracerProvider(
		sdktrace.WithSampler(sdktrace.ParentBased(sdktrace.NeverSample())),
		sdktrace.WithSpanProcessor(shipper{s}),
	)
	return tp
}

type shipper struct{ s *Server }

func (shipper) OnStart(context.Context, sdktrace.ReadWriteSpan) {}
func (shipper) Shutdown(context.Context) error                  { return nil }
func (shipper) ForceFlush(context.Context) error                { return nil }

func (sh shipper) OnEnd(span sdktrace.ReadOnlySpan) {
	sink := sh.s.sinkForTrace(span.SpanContext().TraceID())
	if sink == nil {
		return
	}
	sc, parent := span.SpanContext(), span.Parent()
	tid, sid, pid := sc.TraceID(), sc.SpanID(), parent.SpanID()
	sd := &pluginv1.SpanData{
		TraceId:       tid[:],
		SpanId:        sid[:],
		Name:          span.Name(),
		Kind:          int32(span.SpanKind()),
		StartTime:     timestamppb.New(span.StartTime()),
		EndTime:       timestamppb.New(span.EndTime()),
		Attributes:    attrs(span.Attributes()),
		StatusCode:    int32(span.Status().Code),
		StatusMessage: span.Status().Description,
		ScopeName:     span.InstrumentationScope().Name,
	}
	if parent.IsValid() {
		sd.ParentSpanId = pid[:]
	}
	for _, e := range span.Events() {
		sd.Events = append(sd.Events, &pluginv1.SpanEvent{Name: e.Name, Time: timestamppb.New(e.Time), Attributes: attrs(e.Attributes)})
	}
	sink.Span(sd)
}

func attrs(kvs []attribute.KeyValue) []*pluginv1.Attr {
	out := make([]*pluginv1.Attr, 0, len(kvs))
	for _, kv := range kvs {
		var v *structpb.Value
		switch kv.Value.Type() {
		case attribute.BOOL:
			v = structpb.NewBoolValue(kv.Value.AsBool())
		case attribute.INT64:
			v = structpb.NewNumberValue(float64(kv.Value.AsInt64()))
		case attribute.FLOAT64:
			v = structpb.NewNumberValue(kv.Value.AsFloat64())
		default:
			v = structpb.NewStringValue(kv.Value.String())
		}
		out = append(out, &pluginv1.Attr{Key: string(kv.Key), Value: v})
	}
	return out
}
