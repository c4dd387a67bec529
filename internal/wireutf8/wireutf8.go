// Package wireutf8 makes protobuf messages safe to send: proto3 requires
// every string field to hold valid UTF-8, and gRPC refuses to marshal a
// message that does not ("string field contains invalid UTF-8"), failing
// the whole call. Task output is bytes from the outside world (a command
// printing Latin-1, a binary file): it must arrive, not break the run.
package wireutf8

import (
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pacerun/pacer/sdk/pluginv1"
)

// Replacement is what each run of invalid bytes becomes: U+FFFD.
const Replacement = "\uFFFD"

// String returns s with every run of invalid UTF-8 bytes replaced by
// U+FFFD, or s itself when it is valid.
func String(s string) string {
	if utf8.ValidString(s) {
		return s
	}
	return strings.ToValidUTF8(s, Replacement)
}

// Fix replaces, in place, every run of invalid UTF-8 bytes in every string
// field of m (nested messages, lists and maps included, map keys too) with
// U+FFFD. It reports whether it changed anything.
func Fix(m proto.Message) bool {
	if m == nil {
		return false
	}
	return fixMessage(m.ProtoReflect())
}

func fixMessage(m protoreflect.Message) bool {
	if !m.IsValid() {
		return false
	}
	changed := false
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		switch {
		case fd.IsList():
			l := v.List()
			for i := range l.Len() {
				nv, set, fixed := fixValue(fd, l.Get(i))
				if set {
					l.Set(i, nv)
				}
				changed = changed || fixed
			}
		case fd.IsMap():
			mp := v.Map()
			var rekey []protoreflect.MapKey
			mp.Range(func(k protoreflect.MapKey, mv protoreflect.Value) bool {
				nv, set, fixed := fixValue(fd.MapValue(), mv)
				if set {
					mp.Set(k, nv)
				}
				changed = changed || fixed
				if fd.MapKey().Kind() == protoreflect.StringKind && !utf8.ValidString(k.String()) {
					rekey = append(rekey, k)
				}
				return true
			})
			for _, k := range rekey {
				mv := mp.Get(k)
				mp.Clear(k)
				mp.Set(protoreflect.ValueOfString(String(k.String())).MapKey(), mv)
				changed = true
			}
		default:
			nv, set, fixed := fixValue(fd, v)
			if set {
				m.Set(fd, nv)
			}
			changed = changed || fixed
		}
		return true
	})
	return changed
}

// fixValue fixes one singular value of field fd: a string is replaced (the
// new value returned, set), a message fixed in place. fixed reports any
// change.
func fixValue(fd protoreflect.FieldDescriptor, v protoreflect.Value) (nv protoreflect.Value, set, fixed bool) {
	switch fd.Kind() {
	case protoreflect.StringKind:
		if s := v.String(); !utf8.ValidString(s) {
			return protoreflect.ValueOfString(String(s)), true, true
		}
	case protoreflect.MessageKind, protoreflect.GroupKind:
		return v, false, fixMessage(v.Message())
	}
	return v, false, false
}

// Value returns v, for structpb.NewValue, with invalid UTF-8 replaced in
// every string it holds, in maps (keys too) and slices of any, which are
// copied when something in them changes (v itself is never modified).
// Other values are returned as they are.
func Value(v any) any {
	fv, _ := value(v)
	return fv
}

// Map is Value for a map.
func Map(m map[string]any) map[string]any {
	fm, _ := mapValue(m)
	return fm
}

func value(v any) (any, bool) {
	switch v := v.(type) {
	case string:
		if !utf8.ValidString(v) {
			return String(v), true
		}
	case map[string]any:
		return mapValue(v)
	case []any:
		var out []any
		for i, e := range v {
			fe, changed := value(e)
			if changed && out == nil {
				out = append(make([]any, 0, len(v)), v[:i]...)
			}
			if out != nil {
				out = append(out, fe)
			}
		}
		if out != nil {
			return out, true
		}
	}
	return v, false
}

func mapValue(m map[string]any) (map[string]any, bool) {
	var out map[string]any
	for k, e := range m {
		fe, changed := value(e)
		fk := String(k)
		if !changed && fk == k {
			continue
		}
		if out == nil {
			out = make(map[string]any, len(m))
			for k2, e2 := range m {
				out[k2] = e2
			}
		}
		delete(out, k)
		out[fk] = fe
	}
	if out == nil {
		return m, false
	}
	return out, true
}

// FixEvent is Fix for a run event, with a fast path for the common case, a
// valid log record of scalar attributes: it is checked without reflection.
func FixEvent(ev *pluginv1.RunEvent) bool {
	if l := ev.GetLog(); l != nil && validLog(l) {
		return false
	}
	return Fix(ev)
}

// validLog reports whether l is valid UTF-8 throughout and holds only
// scalar attribute values; false means "not known to be valid".
func validLog(l *pluginv1.LogRecord) bool {
	if !utf8.ValidString(l.GetMessage()) {
		return false
	}
	for _, a := range l.GetAttrs() {
		if !utf8.ValidString(a.GetKey()) {
			return false
		}
		switch v := a.GetValue().GetKind().(type) {
		case *structpb.Value_StringValue:
			if !utf8.ValidString(v.StringValue) {
				return false
			}
		case *structpb.Value_NumberValue, *structpb.Value_BoolValue, *structpb.Value_NullValue, nil:
		default:
			return false
		}
	}
	return true
}
