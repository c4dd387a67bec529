package server

import (
	"context"
	"log/slog"
	"time"

	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pacerun/pacer/internal/wireutf8"
	"github.com/pacerun/pacer/sdk/pluginv1"
)

// NewLogHandler returns a slog.Handler that forwards records to sink. The
// runner adds the run's fields and sanitizes; this side only converts.
func NewLogHandler(sink Sink) slog.Handler { return &logHandler{sink: sink} }

type logHandler struct {
	sink   Sink
	attrs  []*pluginv1.Attr
	prefix string // group prefix, "a.b."
}

func (h *logHandler) Enabled(context.Context, slog.Level) bool { return true }

func (h *logHandler) Handle(_ context.Context, r slog.Record) error {
	rec := &pluginv1.LogRecord{
		Time:    timestamppb.New(r.Time),
		Level:   int32(r.Level),
		Message: r.Message,
		Attrs:   make([]*pluginv1.Attr, 0, len(h.attrs)+r.NumAttrs()),
	}
	rec.Attrs = append(rec.Attrs, h.attrs...)
	r.Attrs(func(a slog.Attr) bool {
		rec.Attrs = appendAttr(rec.Attrs, h.prefix, a)
		return true
	})
	h.sink.Log(rec)
	return nil
}

func (h *logHandler) WithAttrs(as []slog.Attr) slog.Handler {
	c := *h
	c.attrs = append([]*pluginv1.Attr(nil), h.attrs...)
	for _, a := range as {
		c.attrs = appendAttr(c.attrs, h.prefix, a)
	}
	return &c
}

func (h *logHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	c := *h
	c.prefix = h.prefix + name + "."
	return &c
}

// appendAttr flattens groups into dotted keys.
func appendAttr(dst []*pluginv1.Attr, prefix string, a slog.Attr) []*pluginv1.Attr {
	v := a.Value.Resolve()
	if v.Kind() == slog.KindGroup {
		p := prefix
		if a.Key != "" {
			p += a.Key + "."
		}
		for _, ga := range v.Group() {
			dst = appendAttr(dst, p, ga)
		}
		return dst
	}
	if a.Key == "" {
		return dst
	}
	return append(dst, &pluginv1.Attr{Key: prefix + a.Key, Value: toValue(v)})
}

func toValue(v slog.Value) *structpb.Value {
	switch v.Kind() {
	case slog.KindString:
		return structpb.NewStringValue(v.String())
	case slog.KindInt64:
		return structpb.NewNumberValue(float64(v.Int64()))
	case slog.KindUint64:
		return structpb.NewNumberValue(float64(v.Uint64()))
	case slog.KindFloat64:
		return structpb.NewNumberValue(v.Float64())
	case slog.KindBool:
		return structpb.NewBoolValue(v.Bool())
	case slog.KindDuration:
		return structpb.NewStringValue(v.Duration().String())
	case slog.KindTime:
		return structpb.NewStringValue(v.Time().Format(time.RFC3339Nano))
	default:
		if err, ok := v.Any().(error); ok {
			return structpb.NewStringValue(err.Error())
		}
		if pv, err := structpb.NewValue(wireutf8.Value(v.Any())); err == nil {
			return pv
		}
		return structpb.NewStringValue(v.String())
	}
}

func stringAttr(k, v string) *pluginv1.Attr {
	return &pluginv1.Attr{Key: k, Value: structpb.NewStringValue(v)}
}
