// Package paramschema is the schema of a task's params: the subset of JSON
// Schema that a plugin publishes for each task and that both sides check
// params against. The runner checks every job's params when it loads its
// config, naming each problem; the SDK checks them again before a task runs.
//
// Plugin authors rarely use it directly: sdk.Typed derives a Schema from a
// Go struct. A param type with its own JSON decoding describes itself with
// sdk.JSONSchemer, whose JSON text Parse reads.
package paramschema

import (
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"math"
	"reflect"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/pacerun/pacer/internal/didyoumean"
)

// Schema is the subset of JSON Schema (draft 2020-12 keywords) Pacer uses for
// task params. It travels as TaskInfo.params_schema_json and is serialised as
// real JSON Schema, so other tools can read it.
//
// Keywords outside this subset are ignored by Parse (and so not
// enforced); the plugin still checks its params when it runs.
//
// Every keyword applies to the value independently, as in JSON Schema:
// Properties, Required and AdditionalProperties only constrain objects, Items
// only arrays, Minimum and Maximum only numbers, Pattern and Format only
// strings. Default constrains nothing: it is the value a plugin uses for an
// absent key (see ApplyDefaults). A nil *Schema accepts any value.
type Schema struct {
	// Type is one of object, string, number, integer, boolean and array, or
	// "" for any type.
	Type        string `json:"type,omitempty"`
	Description string `json:"description,omitempty"`
	// Properties are the schemas of an object's known keys.
	Properties map[string]*Schema `json:"properties,omitempty"`
	// Required lists the keys an object must have.
	Required []string `json:"required,omitempty"`
	// AdditionalProperties false makes keys not in Properties errors.
	AdditionalProperties *bool `json:"additionalProperties,omitempty"`
	// AdditionalPropertiesSchema, if set, is the schema every key not in
	// Properties must match: the schema form of JSON Schema's
	// additionalProperties (e.g. a map[string]string is
	// {"type":"object","additionalProperties":{"type":"string"}}). It is
	// serialised as "additionalProperties" and ignored when
	// AdditionalProperties is false.
	AdditionalPropertiesSchema *Schema `json:"-"`
	// Items is the schema of every element of an array.
	Items *Schema `json:"items,omitempty"`
	// Enum lists the allowed values (JSON values: string, float64, bool, nil,
	// []any, map[string]any).
	Enum []any `json:"enum,omitempty"`
	// OneOf lists alternatives, exactly one of which the value must match,
	// e.g. "a string or a list of strings".
	OneOf []*Schema `json:"oneOf,omitempty"`
	// Minimum and Maximum bound a number, inclusively.
	Minimum *float64 `json:"minimum,omitempty"`
	Maximum *float64 `json:"maximum,omitempty"`
	// Pattern is a regular expression a string must contain a match of, as
	// in JSON Schema (anchor it with ^ and $ to match the whole string). It
	// is compiled with Go's regexp (RE2 syntax and meaning: \d \w \s \b
	// are ASCII). The Python SDK checks it with that meaning too, but
	// refuses Unicode classes (\pL, \p{Greek}), which Python's re lacks.
	Pattern string `json:"pattern,omitempty"`
	// Format "duration" (a Go duration string such as "90s") is checked;
	// other formats are ignored.
	Format string `json:"format,omitempty"`
	// Default is the value of an absent object key, filled in by the plugin
	// before its task runs (JSON values, as Enum). Parse checks that it
	// fits the rest of the schema.
	Default any `json:"default,omitempty"`

	// pattern is Pattern compiled, by Parse.
	pattern *regexp.Regexp
}

// Types allowed in Schema.Type.
const (
	TypeObject  = "object"
	TypeString  = "string"
	TypeNumber  = "number"
	TypeInteger = "integer"
	TypeBoolean = "boolean"
	TypeArray   = "array"
)

// FormatDuration marks a string holding a Go duration ("90s", "1h30m").
const FormatDuration = "duration"

// schemaFields has Schema's fields and none of its methods, so that the
// (un)marshalling methods can use the default encoding for all but one field.
type schemaFields Schema

// MarshalJSON implements json.Marshaler. It writes additionalProperties as a
// boolean or, for AdditionalPropertiesSchema, as a schema.
func (s Schema) MarshalJSON() ([]byte, error) {
	aux := struct {
		schemaFields
		AdditionalProperties any `json:"additionalProperties,omitempty"`
	}{schemaFields: schemaFields(s)}
	switch {
	case s.AdditionalProperties != nil && !*s.AdditionalProperties:
		aux.AdditionalProperties = false
	case s.AdditionalPropertiesSchema != nil:
		aux.AdditionalProperties = s.AdditionalPropertiesSchema
	case s.AdditionalProperties != nil:
		aux.AdditionalProperties = true
	}
	return json.Marshal(aux)
}

// UnmarshalJSON implements json.Unmarshaler. additionalProperties may be a
// boolean or a schema.
func (s *Schema) UnmarshalJSON(b []byte) error {
	var aux struct {
		schemaFields
		AdditionalProperties json.RawMessage `json:"additionalProperties"`
	}
	if err := json.Unmarshal(b, &aux); err != nil {
		return err
	}
	*s = Schema(aux.schemaFields)
	s.AdditionalProperties, s.AdditionalPropertiesSchema = nil, nil
	switch raw := strings.TrimSpace(string(aux.AdditionalProperties)); {
	case raw == "" || raw == "null":
	case raw == "true" || raw == "false":
		v := raw == "true"
		s.AdditionalProperties = &v
	case strings.HasPrefix(raw, "{"):
		var sub Schema
		if err := json.Unmarshal(aux.AdditionalProperties, &sub); err != nil {
			return err
		}
		s.AdditionalPropertiesSchema = &sub
	default:
		return fmt.Errorf("additionalProperties must be a boolean or a schema, got %s", raw)
	}
	return nil
}

// Parse parses a params schema as sent in TaskInfo.params_schema_json.
// An empty (or all-blank) text means any params and yields nil, nil.
// Keywords outside Schema's subset are ignored; a keyword of the subset with
// a value Pacer cannot use (an unknown type, an empty enum, minimum above
// maximum) is an error.
func Parse(jsonText string) (*Schema, error) {
	text := strings.TrimSpace(jsonText)
	if text == "" {
		return nil, nil
	}
	if !strings.HasPrefix(text, "{") {
		return nil, errors.New("params schema: not a JSON object")
	}
	var s Schema
	if err := json.Unmarshal([]byte(text), &s); err != nil {
		return nil, fmt.Errorf("params schema: %w", err)
	}
	if err := s.check("#"); err != nil {
		return nil, fmt.Errorf("params schema: %w", err)
	}
	return &s, nil
}

// check reports the first keyword with a value Pacer cannot use. path is a
// JSON pointer into the schema document.
func (s *Schema) check(path string) error {
	if s == nil {
		return nil
	}
	switch s.Type {
	case "", TypeObject, TypeString, TypeNumber, TypeInteger, TypeBoolean, TypeArray:
	default:
		return fmt.Errorf("%s/type: unsupported type %q", path, s.Type)
	}
	if s.Enum != nil && len(s.Enum) == 0 {
		return fmt.Errorf("%s/enum: empty", path)
	}
	if s.OneOf != nil && len(s.OneOf) == 0 {
		return fmt.Errorf("%s/oneOf: empty", path)
	}
	if s.Minimum != nil && s.Maximum != nil && *s.Minimum > *s.Maximum {
		return fmt.Errorf("%s: minimum %v is above maximum %v", path, *s.Minimum, *s.Maximum)
	}
	if s.Pattern != "" {
		re, err := regexp.Compile(s.Pattern)
		if err != nil {
			return fmt.Errorf("%s/pattern: %q is not a regular expression Pacer can use (RE2 syntax): %v", path, s.Pattern, err)
		}
		s.pattern = re
	}
	for _, name := range sortedKeys(s.Properties) {
		if err := s.Properties[name].check(path + "/properties/" + pointerEscape(name)); err != nil {
			return err
		}
	}
	if err := s.AdditionalPropertiesSchema.check(path + "/additionalProperties"); err != nil {
		return err
	}
	if err := s.Items.check(path + "/items"); err != nil {
		return err
	}
	for i, alt := range s.OneOf {
		if err := alt.check(path + "/oneOf/" + strconv.Itoa(i)); err != nil {
			return err
		}
	}
	if s.Default != nil {
		// Checked last, once the sub-schemas' patterns are compiled.
		if errs := s.Validate(s.Default); len(errs) > 0 {
			msgs := make([]string, len(errs))
			for i, err := range errs {
				msgs[i] = strings.TrimPrefix(strings.TrimPrefix(err.Error(), "params"), ": ")
			}
			return fmt.Errorf("%s/default: %s does not fit the schema: %s", path, formatEnum([]any{s.Default}), strings.Join(msgs, "; "))
		}
	}
	return nil
}

func pointerEscape(s string) string {
	return strings.ReplaceAll(strings.ReplaceAll(s, "~", "~0"), "/", "~1")
}

// JSON returns s as JSON Schema text; "" for a nil schema, matching
// Parse. It panics if Enum holds a value that is not JSON-compatible,
// which only a Schema built by hand can.
func (s *Schema) JSON() string {
	if s == nil {
		return ""
	}
	b, err := json.Marshal(s)
	if err != nil {
		panic(fmt.Sprintf("paramschema.Schema.JSON: %v", err))
	}
	return string(b)
}

// ApplyDefaults returns v with the Default of every absent object key filled
// in, in v itself and in the objects and arrays it holds, as far as the
// schema describes them through properties, additionalProperties and items
// (not inside oneOf alternatives). It copies what it changes and leaves v as
// it is.
// A key present with any value, null included, is kept; a key with no
// Default stays absent. A nil schema returns v.
func (s *Schema) ApplyDefaults(v any) any {
	out, _ := s.applyDefaults(v)
	return out
}

// applyDefaults is ApplyDefaults, also reporting whether it changed v.
func (s *Schema) applyDefaults(v any) (any, bool) {
	if s == nil {
		return v, false
	}
	switch x := v.(type) {
	case map[string]any:
		var out map[string]any
		set := func(k string, e any) {
			if out == nil {
				out = maps.Clone(x)
			}
			out[k] = e
		}
		for _, k := range sortedKeys(s.Properties) {
			ps := s.Properties[k]
			if e, ok := x[k]; ok {
				if d, changed := ps.applyDefaults(e); changed {
					set(k, d)
				}
			} else if ps != nil && ps.Default != nil {
				// A default object gets its own keys' defaults too.
				d, _ := ps.applyDefaults(copyJSON(ps.Default))
				set(k, d)
			}
		}
		if ap := s.AdditionalPropertiesSchema; ap != nil {
			for k, e := range x {
				if _, known := s.Properties[k]; !known {
					if d, changed := ap.applyDefaults(e); changed {
						set(k, d)
					}
				}
			}
		}
		if out != nil {
			return out, true
		}
	case []any:
		var out []any
		for i, e := range x {
			if d, changed := s.Items.applyDefaults(e); changed {
				if out == nil {
					out = slices.Clone(x)
				}
				out[i] = d
			}
		}
		if out != nil {
			return out, true
		}
	}
	return v, false
}

// copyJSON deep-copies a JSON value, so that a task that changes a default
// it was given cannot change the schema's.
func copyJSON(v any) any {
	switch x := v.(type) {
	case map[string]any:
		out := make(map[string]any, len(x))
		for k, e := range x {
			out[k] = copyJSON(e)
		}
		return out
	case []any:
		out := make([]any, len(x))
		for i, e := range x {
			out[i] = copyJSON(e)
		}
		return out
	}
	return v
}

// ValidationError is one problem found by Schema.Validate.
type ValidationError struct {
	// Path locates the value within the params: "params", "params.command[2]",
	// `params.env["MY VAR"]`. An unknown key's path is the key's own.
	Path string
	// Keys is Path as the object keys (string) and array indexes (int)
	// below the params: ["command", 2] for "params.command[2]", nil for
	// "params". A config loader uses it to find the offending line.
	Keys []any
	// Msg says what is wrong with it.
	Msg string

	// Msg[valueAt:valueEnd] is the value Msg quotes; valueEnd 0: none.
	valueAt, valueEnd int
}

func (e *ValidationError) Error() string { return e.Path + ": " + e.Msg }

// Value returns the params value as Msg quotes it (`"Hunter2"` in
// `must be one of "a", "b"; got "Hunter2"`), or "" if Msg quotes none
// (one that names only the value's kind, or a key).
func (e *ValidationError) Value() string { return e.Msg[e.valueAt:e.valueEnd] }

// MaskValue returns Msg with the value it quotes replaced by mask, and
// without what follows the value (a did-you-mean hint drawn from it): what
// a caller shows of a value that must not be shown, such as one under a
// key named like a secret. Msg as it is if it quotes no value.
func (e *ValidationError) MaskValue(mask string) string {
	if e.valueEnd == 0 {
		return e.Msg
	}
	return e.Msg[:e.valueAt] + mask
}

// Validate checks v, a task's params as decoded from YAML or JSON
// (map[string]any, []any, string, any Go number kind, bool, nil; other maps,
// slices and named types are accepted by kind), and returns every problem
// found as a *ValidationError, in a deterministic order. The root of the
// paths is "params". A nil schema accepts anything.
func (s *Schema) Validate(v any) []error {
	var errs []error
	s.validate(&location{}, v, &errs)
	return errs
}

// location is where a value sits in the params: a chain of keys and indexes
// up to the root, turned into a path only when a problem is reported, so
// that checking good params builds no strings.
type location struct {
	parent *location // nil at the root
	name   string    // an object key
	index  int       // an array index, if isElem
	isElem bool
}

func (l *location) key(k string) *location { return &location{parent: l, name: k} }

func (l *location) elem(i int) *location { return &location{parent: l, index: i, isElem: true} }

// valueProblem is a problem whose message quotes the value: before, the
// value as shown, and after it.
func (l *location) valueProblem(before, shown, after string) *ValidationError {
	e := l.problem("%s", before+shown+after)
	e.valueAt, e.valueEnd = len(before), len(before)+len(shown)
	return e
}

func (l *location) problem(format string, args ...any) *ValidationError {
	n := 0
	for x := l; x.parent != nil; x = x.parent {
		n++
	}
	var keys []any
	if n > 0 {
		keys = make([]any, n)
	}
	for x, i := l, n-1; x.parent != nil; x, i = x.parent, i-1 {
		if x.isElem {
			keys[i] = x.index
		} else {
			keys[i] = x.name
		}
	}
	path := "params"
	for _, k := range keys {
		if i, ok := k.(int); ok {
			path += "[" + strconv.Itoa(i) + "]"
		} else {
			path = joinKey(path, k.(string))
		}
	}
	return &ValidationError{Path: path, Keys: keys, Msg: fmt.Sprintf(format, args...)}
}

// Value kinds, named as in JSON Schema.
const (
	kindObject  = "object"
	kindArray   = "array"
	kindString  = "string"
	kindNumber  = "number"
	kindBoolean = "boolean"
	kindNull    = "null"
)

// maxExactInteger is 2^53: params travel as JSON's numbers, doubles, which
// hold every integer up to it and only some beyond (9007199254740993
// arrives as ...992; 1e20 does not fit a Go int). A value for an
// "integer" is refused beyond it (attack 19, P1).
const maxExactInteger = 1 << 53

// value is a params value sorted into its JSON kind.
type value struct {
	kind string
	str  string
	num  float64
	// digits writes out a Go integer beyond ±2^53, which num may have
	// rounded (2^53+1 to 2^53); "" for any other value.
	digits string
	b      bool
	obj    map[string]any
	arr    []any
}

func intValue(x int64) value {
	v := value{kind: kindNumber, num: float64(x)}
	if x > maxExactInteger || x < -maxExactInteger {
		v.digits = strconv.FormatInt(x, 10)
	}
	return v
}

func uintValue(x uint64) value {
	v := value{kind: kindNumber, num: float64(x)}
	if x > maxExactInteger {
		v.digits = strconv.FormatUint(x, 10)
	}
	return v
}

// beyondExact reports whether v is a number beyond ±2^53.
func (v value) beyondExact() bool {
	return v.kind == kindNumber && (v.digits != "" || math.Abs(v.num) > maxExactInteger)
}

// number writes the number v for messages.
func (v value) number() string {
	if v.digits != "" {
		return v.digits
	}
	return formatNumber(v.num)
}

func (v value) isInteger() bool {
	return v.kind == kindNumber && !math.IsInf(v.num, 0) && v.num == math.Trunc(v.num)
}

func (v value) short() string {
	switch v.kind {
	case kindString:
		return strconv.Quote(v.str)
	case kindNumber:
		return v.number()
	case kindBoolean:
		return strconv.FormatBool(v.b)
	}
	return v.kind
}

// formatNumber writes a number as people do (1048576, 0.5), switching to an
// exponent only for the very large and the very small.
func formatNumber(f float64) string {
	if a := math.Abs(f); a == 0 || (a >= 1e-6 && a < 1e21) {
		return strconv.FormatFloat(f, 'f', -1, 64)
	}
	return strconv.FormatFloat(f, 'g', -1, 64)
}

// classify sorts v into its JSON kind; the message is non-empty if v is not
// a JSON-like value.
func classify(v any) (value, string) {
	switch x := v.(type) {
	case nil:
		return value{kind: kindNull}, ""
	case map[string]any:
		return value{kind: kindObject, obj: x}, ""
	case []any:
		return value{kind: kindArray, arr: x}, ""
	case string:
		return value{kind: kindString, str: x}, ""
	case bool:
		return value{kind: kindBoolean, b: x}, ""
	case float64:
		return value{kind: kindNumber, num: x}, ""
	case int:
		return intValue(int64(x)), ""
	case int64:
		return intValue(x), ""
	case uint64:
		return uintValue(x), ""
	case json.Number:
		if i, err := x.Int64(); err == nil && intValue(i).digits != "" {
			return intValue(i), "" // beyond ±2^53: Float64 would round it
		}
		f, err := x.Float64()
		if err != nil {
			return value{}, fmt.Sprintf("invalid number %q", string(x))
		}
		return value{kind: kindNumber, num: f}, ""
	case map[any]any: // gopkg.in/yaml.v2
		obj := make(map[string]any, len(x))
		for k, e := range x {
			ks, ok := k.(string)
			if !ok {
				return value{}, fmt.Sprintf("object key %v is a %T, not a string", k, k)
			}
			obj[ks] = e
		}
		return value{kind: kindObject, obj: obj}, ""
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.String:
		return value{kind: kindString, str: rv.String()}, ""
	case reflect.Bool:
		return value{kind: kindBoolean, b: rv.Bool()}, ""
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return intValue(rv.Int()), ""
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return uintValue(rv.Uint()), ""
	case reflect.Float32, reflect.Float64:
		return value{kind: kindNumber, num: rv.Float()}, ""
	case reflect.Pointer, reflect.Interface:
		if rv.IsNil() {
			return value{kind: kindNull}, ""
		}
		return classify(rv.Elem().Interface())
	case reflect.Slice:
		if rv.IsNil() {
			return value{kind: kindNull}, ""
		}
		fallthrough
	case reflect.Array:
		arr := make([]any, rv.Len())
		for i := range arr {
			arr[i] = rv.Index(i).Interface()
		}
		return value{kind: kindArray, arr: arr}, ""
	case reflect.Map:
		if rv.IsNil() {
			return value{kind: kindNull}, ""
		}
		obj := make(map[string]any, rv.Len())
		for it := rv.MapRange(); it.Next(); {
			k := it.Key()
			if k.Kind() == reflect.Interface {
				k = k.Elem()
			}
			if k.Kind() != reflect.String {
				return value{}, fmt.Sprintf("object key %v is a %s, not a string", it.Key().Interface(), k.Kind())
			}
			obj[k.String()] = it.Value().Interface()
		}
		return value{kind: kindObject, obj: obj}, ""
	}
	return value{}, fmt.Sprintf("unsupported value of Go type %T", v)
}

// typeMatches reports whether a value of kind v has type t. Integers are
// numbers without a fractional part.
func typeMatches(t string, v value) bool {
	switch t {
	case "":
		return true
	case TypeInteger:
		return v.isInteger()
	}
	return t == v.kind
}

// loosely reports whether v is of t's kind, counting any number as an
// integer: it picks the oneOf alternative a value was presumably meant for.
func loosely(s *Schema, v value) bool {
	if s == nil || s.Type == "" {
		return true
	}
	if s.Type == TypeInteger {
		return v.kind == kindNumber
	}
	return s.Type == v.kind
}

func (s *Schema) validate(at *location, v any, errs *[]error) {
	if s == nil {
		return
	}
	add := func(format string, args ...any) { *errs = append(*errs, at.problem(format, args...)) }
	addValue := func(before, shown, after string) { *errs = append(*errs, at.valueProblem(before, shown, after)) }
	val, bad := classify(v)
	if bad != "" {
		add("%s", bad)
		return
	}
	if val.kind == kindNumber && (math.IsNaN(val.num) || math.IsInf(val.num, 0)) {
		if s.Type == TypeNumber || s.Type == TypeInteger {
			add("expected a finite %s, got %s", s.Type, formatNumber(val.num))
			return
		}
	}
	if !typeMatches(s.Type, val) {
		if s.Type == TypeInteger && val.kind == kindNumber {
			addValue(fmt.Sprintf("expected %s, got number ", s.Type), val.number(), "")
		} else {
			add("expected %s, got %s", s.Type, val.kind)
		}
		return
	}
	if s.Type == TypeInteger && val.beyondExact() {
		addValue(fmt.Sprintf("expected an integer within ±2^53 (%d), which params carry exactly; got ", maxExactInteger), val.number(), "")
		return
	}

	if len(s.Enum) > 0 && !s.inEnum(val) {
		before := fmt.Sprintf("must be one of %s; got ", formatEnum(s.Enum))
		hint := ""
		if val.kind == kindString {
			var names []string
			for _, e := range s.Enum {
				if es, ok := e.(string); ok {
					names = append(names, es)
				}
			}
			if h := didyoumean.Closest(val.str, names); h != "" {
				hint = fmt.Sprintf(" (did you mean %q?)", h)
			}
		}
		if val.kind == kindString || val.kind == kindNumber || val.kind == kindBoolean {
			addValue(before, val.short(), hint)
		} else {
			add("%s%s", before, val.kind) // an object, array or null: its kind, not its value
		}
	}

	if len(s.OneOf) > 0 {
		s.validateOneOf(at, v, val, errs)
	}

	switch val.kind {
	case kindString:
		if s.Format == FormatDuration {
			if _, err := time.ParseDuration(val.str); err != nil {
				addValue("invalid duration ", strconv.Quote(val.str), "")
			}
		}
		if s.Pattern != "" {
			re := s.pattern
			if re == nil { // a Schema built in Go rather than parsed
				var err error
				if re, err = regexp.Compile(s.Pattern); err != nil {
					add("the schema's pattern %q does not compile: %v", s.Pattern, err)
					break
				}
			}
			if !re.MatchString(val.str) {
				addValue("must match the pattern "+s.Pattern+"; got ", strconv.Quote(val.str), "")
			}
		}
	case kindNumber:
		if s.Minimum != nil && val.num < *s.Minimum {
			addValue("must be >= "+formatNumber(*s.Minimum)+", got ", val.number(), "")
		}
		if s.Maximum != nil && val.num > *s.Maximum {
			addValue("must be <= "+formatNumber(*s.Maximum)+", got ", val.number(), "")
		}
	case kindArray:
		if s.Items != nil {
			for i, e := range val.arr {
				s.Items.validate(at.elem(i), e, errs)
			}
		}
	case kindObject:
		s.validateObject(at, val.obj, errs)
	}
}

func (s *Schema) validateObject(at *location, obj map[string]any, errs *[]error) {
	add := func(format string, args ...any) { *errs = append(*errs, at.problem(format, args...)) }
	for _, name := range s.Required {
		if _, ok := obj[name]; !ok {
			add("missing required key %q", name)
		}
	}
	closed := s.AdditionalProperties != nil && !*s.AdditionalProperties
	var unused []string // known keys the object lacks: did-you-mean candidates
	if closed {
		for name := range s.Properties {
			if _, ok := obj[name]; !ok {
				unused = append(unused, name)
			}
		}
		sort.Strings(unused)
	}
	for _, key := range sortedKeys(obj) {
		if ps, ok := s.Properties[key]; ok {
			ps.validate(at.key(key), obj[key], errs)
			continue
		}
		switch {
		case closed:
			// Reported at the key itself, so that it points at its line.
			msg := fmt.Sprintf("unknown key %q", key)
			if hint := didyoumean.Closest(key, unused); hint != "" {
				msg += fmt.Sprintf(" (did you mean %q?)", hint)
			}
			*errs = append(*errs, at.key(key).problem("%s", msg))
		case s.AdditionalPropertiesSchema != nil:
			s.AdditionalPropertiesSchema.validate(at.key(key), obj[key], errs)
		}
	}
}

func (s *Schema) validateOneOf(at *location, v any, val value, errs *[]error) {
	var matched int
	altErrs := make([][]error, len(s.OneOf))
	for i, alt := range s.OneOf {
		alt.validate(at, v, &altErrs[i])
		if len(altErrs[i]) == 0 {
			matched++
		}
	}
	switch {
	case matched == 1:
		return
	case matched > 1:
		*errs = append(*errs, at.problem("matches %d alternatives; expected exactly one of %s", matched, describeAlternatives(s.OneOf)))
		return
	}
	// Nothing matched. If only one alternative is of the value's kind, the
	// value was presumably meant for it: its problems say the most.
	only := -1
	for i, alt := range s.OneOf {
		if loosely(alt, val) {
			if only >= 0 {
				only = -1
				break
			}
			only = i
		}
	}
	if only >= 0 {
		*errs = append(*errs, altErrs[only]...)
		return
	}
	*errs = append(*errs, at.problem("expected %s, got %s", describeAlternatives(s.OneOf), val.kind))
}

// describeSchema names the values s accepts, as a noun: "string", "array of
// strings".
func describeSchema(s *Schema) string {
	switch {
	case s == nil:
		return "any value"
	case s.Type == "" && len(s.Enum) > 0:
		return "one of " + formatEnum(s.Enum)
	case s.Type == "" && len(s.OneOf) > 0:
		return describeAlternatives(s.OneOf)
	case s.Type == "":
		return "any value"
	case s.Type == TypeArray && s.Items != nil && (s.Items.Type != "" || len(s.Items.Enum) > 0):
		return "array of " + plural(describeSchema(s.Items))
	}
	return s.Type
}

func plural(noun string) string {
	switch {
	case strings.HasPrefix(noun, "one of "):
		return "values " + noun
	case strings.HasPrefix(noun, "array of "):
		return "arrays" + strings.TrimPrefix(noun, "array")
	}
	return noun + "s"
}

func describeAlternatives(alts []*Schema) string {
	names := make([]string, len(alts))
	for i, alt := range alts {
		names[i] = describeSchema(alt)
	}
	if len(names) <= 2 {
		return strings.Join(names, " or ")
	}
	return strings.Join(names[:len(names)-1], ", ") + " or " + names[len(names)-1]
}

func formatEnum(enum []any) string {
	parts := make([]string, len(enum))
	for i, e := range enum {
		b, err := json.Marshal(e)
		if err != nil {
			b = []byte(fmt.Sprint(e))
		}
		parts[i] = string(b)
	}
	return strings.Join(parts, ", ")
}

func (s *Schema) inEnum(val value) bool {
	for _, e := range s.Enum {
		ev, bad := classify(e)
		if bad == "" && jsonEqual(val, ev) {
			return true
		}
	}
	return false
}

// jsonEqual compares two values as JSON values: 1, int64(1) and 1.0 are equal.
func jsonEqual(a, b value) bool {
	if a.kind != b.kind {
		return false
	}
	switch a.kind {
	case kindNull:
		return true
	case kindString:
		return a.str == b.str
	case kindNumber:
		return a.num == b.num
	case kindBoolean:
		return a.b == b.b
	case kindArray:
		if len(a.arr) != len(b.arr) {
			return false
		}
		for i := range a.arr {
			if !anyEqual(a.arr[i], b.arr[i]) {
				return false
			}
		}
		return true
	case kindObject:
		if len(a.obj) != len(b.obj) {
			return false
		}
		for k, x := range a.obj {
			y, ok := b.obj[k]
			if !ok || !anyEqual(x, y) {
				return false
			}
		}
		return true
	}
	return false
}

func anyEqual(x, y any) bool {
	a, badA := classify(x)
	b, badB := classify(y)
	return badA == "" && badB == "" && jsonEqual(a, b)
}

// joinKey appends an object key to a path: ".key" for identifier-like keys,
// `["a key"]` for others.
func joinKey(path, key string) string {
	if isIdent(key) {
		return path + "." + key
	}
	return path + "[" + strconv.Quote(key) + "]"
}

func isIdent(s string) bool {
	if s == "" {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_' || r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z':
		case i > 0 && (r == '-' || r >= '0' && r <= '9'):
		default:
			return false
		}
	}
	return true
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
