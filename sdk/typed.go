package sdk

import (
	"bytes"
	"context"
	"encoding"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pacerun/pacer/sdk/paramschema"
)

// Typed returns a Task whose params are decoded into P (a struct with json
// tags) before fn runs.
//
// Its schema, derived from P, is sent to the runner, which rejects a job with
// bad params when the config is loaded. At run time the task fills in the
// defaults of absent keys, checks the params against the same schema
// (reporting every problem at once, wrapped with ErrInvalidParams), decodes
// them into a P (unknown keys are errors), and then calls fn.
//
// The schema follows P's fields as encoding/json sees them (json tag names,
// "-" and unexported fields skipped, embedded structs promoted):
//
//   - A field is required unless its json tag has omitempty (or omitzero) or
//     its type is a pointer. The tag pacer:"optional" or pacer:"required"
//     overrides that.
//   - The tag desc:"..." describes the field to operators.
//   - The tag enum:"a,b,c" restricts a string field (or the elements of a
//     []string) to the listed values.
//   - The tag default:"..." is the value of an absent key, so that the task
//     needs no pointer to tell "absent" from "zero": a key present with a
//     zero value keeps it. A field with a default is optional. The text is
//     the value itself for a string (and a time.Duration, "1m30s"), is
//     parsed for a number or a boolean ("3", "true"), and is JSON for
//     anything else ("[80,443]"; "{}" for a nested struct, whose fields then
//     get their own defaults). It must pass the field's other checks.
//   - The tags minimum:"n" and maximum:"n" bound a number field (or the
//     elements of a slice of numbers), inclusively.
//   - The tag pattern:"re" requires a string field (or the elements of a
//     []string) to contain a match of the regular expression: anchor it
//     with ^ and $ to match the whole string. Use RE2 syntax without
//     lookaround or backreferences.
//   - time.Duration fields are Go duration strings such as "90s" or "1h30m",
//     and are decoded from them.
//   - Strings, booleans, integers (unsigned ones at least 0), floats, slices,
//     arrays, maps with string (or integer) keys and nested structs map to
//     the matching JSON Schema types; a nested struct also rejects unknown
//     keys, a map accepts any key. Interface fields accept any value.
//   - A type implementing JSONSchemer describes itself. Otherwise a type
//     implementing json.Unmarshaler accepts any value (it checks its own
//     input when decoded), and one implementing encoding.TextUnmarshaler
//     accepts strings.
//
// Typed panics on programmer errors only, when it is called (typically while
// the plugin's Tasks map is built, so the plugin fails at start-up and never
// at run time): when P is not a struct type, fn is nil, a field has a type
// that JSON cannot carry (chan, func, complex, a map with other keys), or a
// field's tags or JSONSchema are malformed: an unknown pacer option, an enum,
// minimum, maximum or pattern on a field of another kind, a bound beyond what
// the Go type holds, a pattern that does not compile, a default that does not
// parse or fails the field's checks, a default on a required field, or a
// misspelled tag such as min:"1".
func Typed[P any](description string, fn func(ctx context.Context, params P, resp *Response) error) Task {
	t := reflect.TypeFor[P]()
	if t.Kind() != reflect.Struct {
		panic(fmt.Sprintf("sdk.Typed: params type %v is not a struct", t))
	}
	if fn == nil {
		panic("sdk.Typed: fn is nil")
	}
	built := (&schemaBuilder{building: map[reflect.Type]bool{}}).schemaOf(t, t.String())
	text := built.JSON()
	// What the runner will read: parse it back, which also compiles the
	// patterns for the checks at run time.
	schema, err := paramschema.Parse(text)
	if err != nil {
		panic(fmt.Sprintf("sdk.Typed: %v: the derived %v", t, err))
	}
	return &typedTask[P]{
		fn:     fn,
		schema: schema,
		info:   TaskInfo{Description: description, ParamsSchema: text},
	}
}

// JSONSchemer is implemented by param types that tell the runner which values
// they accept, typically types with their own UnmarshalJSON. JSONSchema
// returns a JSON Schema (the subset described by package paramschema), such as
//
//	{"oneOf":[{"type":"string"},{"type":"array","items":{"type":"string"}}]}
//
// for a command that is a string or a list of strings. Typed calls it once,
// on the zero value, and panics if the schema does not parse.
type JSONSchemer interface {
	JSONSchema() string
}

type typedTask[P any] struct {
	fn     func(ctx context.Context, params P, resp *Response) error
	schema *paramschema.Schema
	info   TaskInfo
}

func (t *typedTask[P]) Describe() TaskInfo { return t.info }

func (t *typedTask[P]) Run(ctx context.Context, req *Request, resp *Response) error {
	params := map[string]any{}
	if req != nil && req.Params != nil {
		params = req.Params
	}
	params, _ = t.schema.ApplyDefaults(params).(map[string]any)
	if errs := t.schema.Validate(params); len(errs) > 0 {
		return &paramsError{problems: errs}
	}
	var p P
	if err := decodeParams(params, &p); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidParams, err)
	}
	return t.fn(ctx, p, resp)
}

// paramsError lists every problem with a run's params. It matches
// ErrInvalidParams and each problem (a *paramschema.ValidationError) with
// errors.Is and errors.As.
type paramsError struct{ problems []error }

func (e *paramsError) Error() string {
	msgs := make([]string, len(e.problems))
	for i, p := range e.problems {
		msgs[i] = p.Error()
	}
	return ErrInvalidParams.Error() + ": " + strings.Join(msgs, "; ")
}

func (e *paramsError) Unwrap() []error {
	return append([]error{ErrInvalidParams}, e.problems...)
}

// decodeParams decodes params into out, a pointer to a struct, turning
// duration strings into time.Duration values on the way.
func decodeParams(params map[string]any, out any) error {
	return decode(params, out)
}

// decodeInto decodes v into a new value of type t, as decodeParams would.
func decodeInto(v any, t reflect.Type) error {
	return decode(v, reflect.New(t).Interface())
}

func decode(v any, out any) error {
	v = convertDurations(v, reflect.TypeOf(out).Elem())
	raw, err := json.Marshal(v)
	if err != nil {
		return err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	return dec.Decode(out)
}

var (
	durationType        = reflect.TypeFor[time.Duration]()
	jsonUnmarshalerType = reflect.TypeFor[json.Unmarshaler]()
	textUnmarshalerType = reflect.TypeFor[encoding.TextUnmarshaler]()
	jsonSchemerType     = reflect.TypeFor[JSONSchemer]()
)

// implements reports whether t or *t implements the interface it.
func implements(t, it reflect.Type) bool {
	return t.Implements(it) || (t.Kind() != reflect.Pointer && t.Kind() != reflect.Interface && reflect.PointerTo(t).Implements(it))
}

// convertDurations returns a copy of v, a params value to be decoded into a
// t, in which the strings meant for time.Duration values are replaced by
// their nanosecond counts, which is what encoding/json decodes a Duration
// from. Everything else is left as it is.
func convertDurations(v any, t reflect.Type) any {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		if s, ok := v.(string); ok {
			if d, err := time.ParseDuration(s); err == nil {
				return int64(d)
			}
		}
		return v
	}
	if implements(t, jsonUnmarshalerType) || implements(t, textUnmarshalerType) {
		return v
	}
	switch t.Kind() {
	case reflect.Struct:
		m, ok := v.(map[string]any)
		if !ok {
			return v
		}
		fields := fieldsByName(t)
		out := make(map[string]any, len(m))
		for k, x := range m {
			if f, ok := fields[k]; ok {
				x = convertDurations(x, f.typ)
			}
			out[k] = x
		}
		return out
	case reflect.Map:
		m, ok := v.(map[string]any)
		if !ok {
			return v
		}
		out := make(map[string]any, len(m))
		for k, x := range m {
			out[k] = convertDurations(x, t.Elem())
		}
		return out
	case reflect.Slice, reflect.Array:
		a, ok := v.([]any)
		if !ok {
			return v
		}
		out := make([]any, len(a))
		for i, x := range a {
			out[i] = convertDurations(x, t.Elem())
		}
		return out
	}
	return v
}

// schemaBuilder derives schemas from Go types.
type schemaBuilder struct {
	// building holds the struct types being derived, to stop recursion.
	building map[reflect.Type]bool
}

// schemaOf returns a fresh schema for values of type t. where names the
// field for panic messages.
func (b *schemaBuilder) schemaOf(t reflect.Type, where string) *paramschema.Schema {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if t == durationType {
		return &paramschema.Schema{Type: paramschema.TypeString, Format: paramschema.FormatDuration}
	}
	if implements(t, jsonSchemerType) {
		return schemerSchema(t, where)
	}
	if implements(t, jsonUnmarshalerType) {
		return &paramschema.Schema{}
	}
	if implements(t, textUnmarshalerType) {
		return &paramschema.Schema{Type: paramschema.TypeString}
	}
	switch t.Kind() {
	case reflect.String:
		return &paramschema.Schema{Type: paramschema.TypeString}
	case reflect.Bool:
		return &paramschema.Schema{Type: paramschema.TypeBoolean}
	case reflect.Int, reflect.Int64:
		return &paramschema.Schema{Type: paramschema.TypeInteger}
	case reflect.Int8, reflect.Int16, reflect.Int32:
		bits := t.Bits()
		return &paramschema.Schema{Type: paramschema.TypeInteger,
			Minimum: ptr(-math.Pow(2, float64(bits-1))), Maximum: ptr(math.Pow(2, float64(bits-1)) - 1)}
	case reflect.Uint, reflect.Uint64, reflect.Uintptr:
		return &paramschema.Schema{Type: paramschema.TypeInteger, Minimum: ptr(0.0)}
	case reflect.Uint8, reflect.Uint16, reflect.Uint32:
		return &paramschema.Schema{Type: paramschema.TypeInteger,
			Minimum: ptr(0.0), Maximum: ptr(math.Pow(2, float64(t.Bits())) - 1)}
	case reflect.Float32, reflect.Float64:
		return &paramschema.Schema{Type: paramschema.TypeNumber}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.Uint8 && !implements(t.Elem(), jsonUnmarshalerType) && !implements(t.Elem(), textUnmarshalerType) {
			// encoding/json carries []byte as a base64 string.
			return &paramschema.Schema{Type: paramschema.TypeString}
		}
		return &paramschema.Schema{Type: paramschema.TypeArray, Items: b.schemaOf(t.Elem(), where+"[]")}
	case reflect.Array:
		return &paramschema.Schema{Type: paramschema.TypeArray, Items: b.schemaOf(t.Elem(), where+"[]")}
	case reflect.Map:
		switch k := t.Key(); {
		case k.Kind() == reflect.String, implements(k, textUnmarshalerType),
			k.Kind() >= reflect.Int && k.Kind() <= reflect.Uintptr:
		default:
			panic(fmt.Sprintf("sdk.Typed: %s: map key type %v cannot come from JSON", where, k))
		}
		return &paramschema.Schema{Type: paramschema.TypeObject, AdditionalPropertiesSchema: b.schemaOf(t.Elem(), where+"[]")}
	case reflect.Struct:
		return b.structSchema(t, where)
	case reflect.Interface:
		return &paramschema.Schema{}
	}
	panic(fmt.Sprintf("sdk.Typed: %s: type %v cannot come from JSON", where, t))
}

func schemerSchema(t reflect.Type, where string) *paramschema.Schema {
	var v reflect.Value
	if t.Implements(jsonSchemerType) {
		v = reflect.Zero(t)
	} else {
		v = reflect.New(t)
	}
	text := v.Interface().(JSONSchemer).JSONSchema()
	s, err := paramschema.Parse(text)
	if err != nil {
		panic(fmt.Sprintf("sdk.Typed: %s: %v.JSONSchema: %v", where, t, err))
	}
	if s == nil {
		s = &paramschema.Schema{}
	}
	return s
}

func (b *schemaBuilder) structSchema(t reflect.Type, where string) *paramschema.Schema {
	s := &paramschema.Schema{Type: paramschema.TypeObject, AdditionalProperties: ptr(false)}
	if b.building[t] {
		// A recursive type: its inner occurrences are only checked to be
		// objects; decoding checks the rest.
		s.AdditionalProperties = nil
		return s
	}
	b.building[t] = true
	defer delete(b.building, t)

	for _, f := range structFields(t) {
		fwhere := where + "." + f.goName
		ps := b.schemaOf(f.typ, fwhere)
		if f.quoted {
			switch ps.Type {
			case paramschema.TypeInteger, paramschema.TypeNumber, paramschema.TypeBoolean:
				// With the ",string" option the value is a quoted scalar.
				ps = &paramschema.Schema{Type: paramschema.TypeString}
			}
		}
		checkTagKeys(f.tag, fwhere)
		if desc, ok := f.tag.Lookup("desc"); ok {
			ps.Description = desc
		}
		if enum, ok := f.tag.Lookup("enum"); ok {
			setEnum(ps, enum, fwhere)
		}
		for _, key := range []string{"minimum", "maximum"} {
			if v, ok := f.tag.Lookup(key); ok {
				setBound(ps, key, v, fwhere)
			}
		}
		if pattern, ok := f.tag.Lookup("pattern"); ok {
			setPattern(ps, pattern, fwhere)
		}
		def, hasDefault := f.tag.Lookup("default")
		if hasDefault {
			setDefault(ps, def, fwhere)
			// It must also decode into the field, as the params will.
			if err := decodeInto(ps.Default, f.typ); err != nil {
				panic(fmt.Sprintf("sdk.Typed: %s: default %q does not decode into a %v: %v", fwhere, def, f.typ, err))
			}
		}
		required := !f.omitempty && f.typ.Kind() != reflect.Pointer && !hasDefault
		if opts, ok := f.tag.Lookup("pacer"); ok {
			for opt := range strings.SplitSeq(opts, ",") {
				switch strings.TrimSpace(opt) {
				case "optional":
					required = false
				case "required":
					if hasDefault {
						panic(fmt.Sprintf("sdk.Typed: %s: a field with a default cannot be required", fwhere))
					}
					required = true
				case "":
				default:
					panic(fmt.Sprintf("sdk.Typed: %s: unknown pacer tag option %q (want optional or required)", fwhere, opt))
				}
			}
		}
		if s.Properties == nil {
			s.Properties = map[string]*paramschema.Schema{}
		}
		s.Properties[f.name] = ps
		if required {
			s.Required = append(s.Required, f.name)
		}
	}
	return s
}

func setEnum(s *paramschema.Schema, tag, where string) {
	var values []any
	for v := range strings.SplitSeq(tag, ",") {
		if v = strings.TrimSpace(v); v != "" {
			values = append(values, v)
		}
	}
	if len(values) == 0 {
		panic(fmt.Sprintf("sdk.Typed: %s: empty enum tag", where))
	}
	switch {
	case s.Type == paramschema.TypeString && s.Format == "":
		s.Enum = values
	case s.Type == paramschema.TypeArray && s.Items != nil && s.Items.Type == paramschema.TypeString && s.Items.Format == "":
		s.Items.Enum = values
	default:
		panic(fmt.Sprintf("sdk.Typed: %s: enum tag on a field that is not a string or a list of strings", where))
	}
}

// scalarTarget returns the schema a scalar tag (minimum, maximum, pattern)
// constrains: s if it is of one of the types, else the items of an array of
// them, else nil.
func scalarTarget(s *paramschema.Schema, types ...string) *paramschema.Schema {
	switch {
	case slices.Contains(types, s.Type):
		return s
	case s.Type == paramschema.TypeArray && s.Items != nil && slices.Contains(types, s.Items.Type):
		return s.Items
	}
	return nil
}

// setBound applies a minimum or maximum tag. A bound looser than the Go type
// allows (minimum:"-1" on a uint) is a mistake, not a no-op.
func setBound(s *paramschema.Schema, key, tag, where string) {
	t := scalarTarget(s, paramschema.TypeInteger, paramschema.TypeNumber)
	if t == nil {
		panic(fmt.Sprintf("sdk.Typed: %s: %s tag on a field that is not a number or a list of numbers", where, key))
	}
	v, err := strconv.ParseFloat(strings.TrimSpace(tag), 64)
	if err != nil || math.IsInf(v, 0) || math.IsNaN(v) {
		panic(fmt.Sprintf("sdk.Typed: %s: %s tag %q is not a number", where, key, tag))
	}
	if key == "minimum" {
		if t.Minimum != nil && v < *t.Minimum {
			panic(fmt.Sprintf("sdk.Typed: %s: minimum %v is below the least value the field's type holds (%v)", where, v, *t.Minimum))
		}
		t.Minimum = &v
	} else {
		if t.Maximum != nil && v > *t.Maximum {
			panic(fmt.Sprintf("sdk.Typed: %s: maximum %v is above the greatest value the field's type holds (%v)", where, v, *t.Maximum))
		}
		t.Maximum = &v
	}
	if t.Minimum != nil && t.Maximum != nil && *t.Minimum > *t.Maximum {
		panic(fmt.Sprintf("sdk.Typed: %s: minimum %v is above maximum %v", where, *t.Minimum, *t.Maximum))
	}
}

func setPattern(s *paramschema.Schema, tag, where string) {
	t := scalarTarget(s, paramschema.TypeString)
	if t == nil {
		panic(fmt.Sprintf("sdk.Typed: %s: pattern tag on a field that is not a string or a list of strings", where))
	}
	if _, err := regexp.Compile(tag); err != nil {
		panic(fmt.Sprintf("sdk.Typed: %s: pattern %q: %v", where, tag, err))
	}
	t.Pattern = tag
}

// setDefault applies a default tag: the text itself for a string field
// (durations included), a number or boolean parsed from it, JSON for
// anything else. The default must pass the field's own checks.
func setDefault(s *paramschema.Schema, tag, where string) {
	var v any
	var err error
	switch s.Type {
	case paramschema.TypeString:
		v = tag
	case paramschema.TypeInteger, paramschema.TypeNumber:
		v, err = strconv.ParseFloat(strings.TrimSpace(tag), 64)
	case paramschema.TypeBoolean:
		v, err = strconv.ParseBool(strings.TrimSpace(tag))
	default:
		if err = json.Unmarshal([]byte(tag), &v); err != nil {
			err = fmt.Errorf("a field of this type takes a JSON value as its default (a string in quotes, a list in brackets): %w", err)
		} else if v == nil {
			err = errors.New("null is no default; leave the tag out")
		}
	}
	if err != nil {
		panic(fmt.Sprintf("sdk.Typed: %s: default %q: %v", where, tag, err))
	}
	if errs := s.Validate(v); len(errs) > 0 {
		msgs := make([]string, len(errs))
		for i, e := range errs {
			msgs[i] = strings.TrimPrefix(strings.TrimPrefix(e.Error(), "params"), ": ")
		}
		panic(fmt.Sprintf("sdk.Typed: %s: default %q does not fit the field: %s", where, tag, strings.Join(msgs, "; ")))
	}
	s.Default = v
}

// misspelledTags maps tag keys that look like Typed's to the right ones, so
// that min:"1" fails loudly instead of checking nothing.
var misspelledTags = map[string]string{
	"min": "minimum", "max": "maximum", "regex": "pattern", "regexp": "pattern", "defaults": "default", "description": "desc",
}

func checkTagKeys(tag reflect.StructTag, where string) {
	for _, key := range tagKeys(tag) {
		if right, ok := misspelledTags[key]; ok {
			panic(fmt.Sprintf("sdk.Typed: %s: unknown tag %s (did you mean %s?)", where, key, right))
		}
	}
}

// tagKeys lists the keys of a conventional struct tag (key:"value" ...).
func tagKeys(tag reflect.StructTag) []string {
	var keys []string
	s := string(tag)
	for {
		s = strings.TrimLeft(s, " ")
		i := strings.Index(s, `:"`)
		if i <= 0 || strings.ContainsAny(s[:i], " \t\"") {
			return keys
		}
		keys = append(keys, s[:i])
		s = s[i+2:]
		// Skip the quoted value, escapes included.
		for j := 0; ; j++ {
			if j >= len(s) {
				return keys
			}
			if s[j] == '\\' {
				j++
				continue
			}
			if s[j] == '"' {
				s = s[j+1:]
				break
			}
		}
	}
}

func ptr[T any](v T) *T { return &v }

// field is a struct field as encoding/json sees it.
type field struct {
	name      string // JSON key
	goName    string
	typ       reflect.Type
	tag       reflect.StructTag
	index     []int
	omitempty bool // omitempty or omitzero
	quoted    bool // the ",string" option
	tagged    bool // the json tag names it
}

var fieldCache sync.Map // reflect.Type -> []field

// structFields returns the fields encoding/json decodes into a struct of
// type t, embedded structs' fields promoted, in field order. It follows
// encoding/json's rules: a shallower field hides deeper ones of the same
// name, and among fields at the same depth a tagged one wins; other
// conflicts drop the name.
func structFields(t reflect.Type) []field {
	if fs, ok := fieldCache.Load(t); ok {
		return fs.([]field)
	}
	var all []field
	collectFields(t, nil, map[reflect.Type]bool{t: true}, &all)

	byName := map[string][]field{}
	for _, f := range all {
		byName[f.name] = append(byName[f.name], f)
	}
	var fields []field
	for _, group := range byName {
		depth := len(group[0].index)
		for _, f := range group[1:] {
			depth = min(depth, len(f.index))
		}
		var shallow, tagged []field
		for _, f := range group {
			if len(f.index) == depth {
				shallow = append(shallow, f)
				if f.tagged {
					tagged = append(tagged, f)
				}
			}
		}
		switch {
		case len(shallow) == 1:
			fields = append(fields, shallow[0])
		case len(tagged) == 1:
			fields = append(fields, tagged[0])
		}
	}
	slices.SortFunc(fields, func(a, b field) int { return slices.Compare(a.index, b.index) })
	fs, _ := fieldCache.LoadOrStore(t, fields)
	return fs.([]field)
}

func collectFields(t reflect.Type, index []int, seen map[reflect.Type]bool, out *[]field) {
	for i := range t.NumField() {
		sf := t.Field(i)
		tag := sf.Tag.Get("json")
		if tag == "-" {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		idx := append(slices.Clone(index), i)
		if sf.Anonymous {
			ft := sf.Type
			if ft.Kind() == reflect.Pointer {
				ft = ft.Elem()
			}
			if !sf.IsExported() && ft.Kind() != reflect.Struct {
				continue
			}
			if name == "" && ft.Kind() == reflect.Struct {
				if !seen[ft] {
					seen[ft] = true
					collectFields(ft, idx, seen, out)
					delete(seen, ft)
				}
				continue
			}
		} else if !sf.IsExported() {
			continue
		}
		f := field{name: name, goName: sf.Name, typ: sf.Type, tag: sf.Tag, index: idx, tagged: name != ""}
		if f.name == "" {
			f.name = sf.Name
		}
		for opt := range strings.SplitSeq(opts, ",") {
			switch opt {
			case "omitempty", "omitzero":
				f.omitempty = true
			case "string":
				f.quoted = true
			}
		}
		*out = append(*out, f)
	}
}

func fieldsByName(t reflect.Type) map[string]field {
	fs := structFields(t)
	m := make(map[string]field, len(fs))
	for _, f := range fs {
		m[f.name] = f
	}
	return m
}
