package paramschema

import (
	"encoding/json"
	"errors"
	"math"
	"reflect"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func f64(v float64) *float64 { return &v }
func boolp(v bool) *bool     { return &v }

func messages(errs []error) []string {
	var out []string
	for _, err := range errs {
		out = append(out, err.Error())
	}
	return out
}

// mustParse parses a schema written as JSON, so the tests also exercise
// Parse on every keyword.
func mustParse(t *testing.T, text string) *Schema {
	t.Helper()
	s, err := Parse(text)
	if err != nil {
		t.Fatalf("Parse(%s): %v", text, err)
	}
	return s
}

func TestValidate(t *testing.T) {
	type named string
	type namedInt int
	stringOrList := `{"oneOf":[{"type":"string"},{"type":"array","items":{"type":"string"}}]}`
	shell := `{
		"type": "object",
		"properties": {
			"command": ` + stringOrList + `,
			"shell": {"type": "boolean"},
			"env": {"type": "object", "additionalProperties": {"type": "string"}},
			"timeout": {"type": "string", "format": "duration"},
			"max_output_bytes": {"type": "integer", "minimum": 1}
		},
		"required": ["command"],
		"additionalProperties": false
	}`
	tests := []struct {
		name   string
		schema string
		value  any
		want   []string // full messages; nil means valid
	}{
		// Any.
		{"empty schema accepts anything", `{}`, map[string]any{"x": []any{1, "a"}}, nil},
		{"empty schema accepts null", `{}`, nil, nil},

		// type: string.
		{"string ok", `{"type":"string"}`, "a", nil},
		{"named string ok", `{"type":"string"}`, named("a"), nil},
		{"string got number", `{"type":"string"}`, 1.5, []string{"params: expected string, got number"}},
		{"string got null", `{"type":"string"}`, nil, []string{"params: expected string, got null"}},
		{"string got bool", `{"type":"string"}`, true, []string{"params: expected string, got boolean"}},

		// type: number.
		{"number float64", `{"type":"number"}`, 1.5, nil},
		{"number int", `{"type":"number"}`, 3, nil},
		{"number int64", `{"type":"number"}`, int64(3), nil},
		{"number uint64", `{"type":"number"}`, uint64(3), nil},
		{"number int32", `{"type":"number"}`, int32(3), nil},
		{"number float32", `{"type":"number"}`, float32(0.5), nil},
		{"number json.Number", `{"type":"number"}`, json.Number("2.5"), nil},
		{"number named int", `{"type":"number"}`, namedInt(2), nil},
		{"number got string", `{"type":"number"}`, "1", []string{"params: expected number, got string"}},
		{"number NaN", `{"type":"number"}`, math.NaN(), []string{"params: expected a finite number, got NaN"}},
		{"number +Inf", `{"type":"number"}`, math.Inf(1), []string{"params: expected a finite number, got +Inf"}},

		// type: integer.
		{"integer int", `{"type":"integer"}`, 7, nil},
		{"integer float64 whole", `{"type":"integer"}`, 7.0, nil},
		{"integer 2^53", `{"type":"integer"}`, float64(1 << 53), nil},
		{"integer int64 -2^53", `{"type":"integer"}`, int64(-1 << 53), nil},
		// Attack 19, P1: beyond ±2^53 a double does not hold every integer,
		// and 1e20 fits no Go int: such a job failed every run.
		{"integer float64 beyond 2^53", `{"type":"integer"}`, 1e20, []string{"params: expected an integer within ±2^53 (9007199254740992), which params carry exactly; got 100000000000000000000"}},
		{"integer float64 huge", `{"type":"integer"}`, -1e300, []string{"params: expected an integer within ±2^53 (9007199254740992), which params carry exactly; got -1e+300"}},
		{"integer int64 2^53+1", `{"type":"integer"}`, int64(1<<53 + 1), []string{"params: expected an integer within ±2^53 (9007199254740992), which params carry exactly; got 9007199254740993"}},
		{"integer uint64 big", `{"type":"integer"}`, uint64(math.MaxUint64), []string{"params: expected an integer within ±2^53 (9007199254740992), which params carry exactly; got 18446744073709551615"}},
		{"integer json.Number 2^53+1", `{"type":"integer"}`, json.Number("-9007199254740993"), []string{"params: expected an integer within ±2^53 (9007199254740992), which params carry exactly; got -9007199254740993"}},
		{"integer named beyond", `{"type":"integer","minimum":0}`, namedInt(-1<<53 - 1), []string{"params: expected an integer within ±2^53 (9007199254740992), which params carry exactly; got -9007199254740993"}},
		{"number beyond 2^53", `{"type":"number"}`, 1e20, nil},
		{"number int64 beyond 2^53 below minimum", `{"type":"number","minimum":0}`, int64(-1<<53 - 1), []string{"params: must be >= 0, got -9007199254740993"}},
		{"untyped beyond 2^53", `{}`, 1e20, nil},
		{"oneOf integer or string beyond 2^53", `{"oneOf":[{"type":"integer"},{"type":"string"}]}`, 1e20, []string{"params: expected an integer within ±2^53 (9007199254740992), which params carry exactly; got 100000000000000000000"}},
		{"oneOf integer or number beyond 2^53", `{"oneOf":[{"type":"integer"},{"type":"number"}]}`, 1e20, nil},
		{"integer int64 negative", `{"type":"integer"}`, int64(-7), nil},
		{"integer fractional", `{"type":"integer"}`, 7.5, []string{"params: expected integer, got number 7.5"}},
		{"integer got string", `{"type":"integer"}`, "7", []string{"params: expected integer, got string"}},

		// type: boolean.
		{"boolean ok", `{"type":"boolean"}`, false, nil},
		{"boolean got string", `{"type":"boolean"}`, "yes", []string{"params: expected boolean, got string"}},

		// type: array and items.
		{"array ok", `{"type":"array","items":{"type":"string"}}`, []any{"a", "b"}, nil},
		{"array typed slice", `{"type":"array","items":{"type":"string"}}`, []string{"a"}, nil},
		{"array empty", `{"type":"array","items":{"type":"string"}}`, []any{}, nil},
		{"array got object", `{"type":"array"}`, map[string]any{}, []string{"params: expected array, got object"}},
		{"array items all reported", `{"type":"array","items":{"type":"string"}}`, []any{"a", 1, true},
			[]string{"params[1]: expected string, got number", "params[2]: expected string, got boolean"}},
		{"array without items", `{"type":"array"}`, []any{1, "a"}, nil},
		{"nested arrays", `{"type":"array","items":{"type":"array","items":{"type":"integer"}}}`, []any{[]any{1}, []any{2, 2.5}},
			[]string{"params[1][1]: expected integer, got number 2.5"}},

		// type: object, properties, required, additionalProperties.
		{"object ok", `{"type":"object","properties":{"a":{"type":"string"}}}`, map[string]any{"a": "x", "b": 1}, nil},
		{"object map[any]any", `{"type":"object","properties":{"a":{"type":"string"}}}`, map[any]any{"a": 1},
			[]string{"params.a: expected string, got number"}},
		{"object non-string key", `{"type":"object"}`, map[any]any{1: "a"}, []string{"params: object key 1 is a int, not a string"}},
		{"object typed map", `{"type":"object","additionalProperties":{"type":"integer"}}`, map[string]int{"a": 1}, nil},
		{"object got array", `{"type":"object"}`, []any{}, []string{"params: expected object, got array"}},
		{"required missing", `{"type":"object","required":["url","method"]}`, map[string]any{"method": "GET"},
			[]string{`params: missing required key "url"`}},
		{"required present as null", `{"type":"object","required":["url"]}`, map[string]any{"url": nil}, nil},
		{"additionalProperties false", `{"type":"object","properties":{"a":{}},"additionalProperties":false}`,
			map[string]any{"a": 1, "zzz": 2}, []string{`params.zzz: unknown key "zzz"`}},
		{"additionalProperties true", `{"type":"object","properties":{"a":{}},"additionalProperties":true}`,
			map[string]any{"a": 1, "zzz": 2}, nil},
		{"additionalProperties schema", `{"type":"object","additionalProperties":{"type":"string"}}`,
			map[string]any{"A": "x", "B": 8080, "MY VAR": false},
			[]string{"params.B: expected string, got number", `params["MY VAR"]: expected string, got boolean`}},
		{"properties win over additionalProperties schema", `{"type":"object","properties":{"n":{"type":"integer"}},"additionalProperties":{"type":"string"}}`,
			map[string]any{"n": 1, "s": "x"}, nil},
		{"object keywords ignore non-objects", `{"required":["a"],"additionalProperties":false}`, "str", nil},

		// Did you mean.
		{"did you mean", shell, map[string]any{"comand": []any{"ls"}},
			[]string{`params: missing required key "command"`, `params.comand: unknown key "comand" (did you mean "command"?)`}},
		{"did you mean transposition", shell, map[string]any{"command": "ls", "shlel": true},
			[]string{`params.shlel: unknown key "shlel" (did you mean "shell"?)`}},
		{"did you mean case", shell, map[string]any{"command": "ls", "Timeout": "1s"},
			[]string{`params.Timeout: unknown key "Timeout" (did you mean "timeout"?)`}},
		{"no suggestion when far", shell, map[string]any{"command": "ls", "frobnicate": 1},
			[]string{`params.frobnicate: unknown key "frobnicate"`}},
		{"no suggestion of keys already present", shell, map[string]any{"command": "ls", "commands": "x"},
			[]string{`params.commands: unknown key "commands"`}},

		// enum.
		{"enum ok", `{"type":"string","enum":["fast","safe"]}`, "safe", nil},
		{"enum bad", `{"type":"string","enum":["fast","safe"]}`, "slow",
			[]string{`params: must be one of "fast", "safe"; got "slow"`}},
		{"enum did you mean", `{"type":"string","enum":["fast","safe"]}`, "fsat",
			[]string{`params: must be one of "fast", "safe"; got "fsat" (did you mean "fast"?)`}},
		{"enum numbers across kinds", `{"enum":[1,2,3]}`, int64(2), nil},
		{"enum number bad", `{"enum":[1,2,3]}`, 4, []string{`params: must be one of 1, 2, 3; got 4`}},
		{"enum mixed", `{"enum":["a",null,true]}`, nil, nil},
		{"enum arrays", `{"enum":[["a","b"]]}`, []string{"a", "b"}, nil},
		{"enum objects", `{"enum":[{"a":1}]}`, map[string]any{"a": 1}, nil},
		{"enum objects differ", `{"enum":[{"a":1}]}`, map[string]any{"a": 2}, []string{`params: must be one of {"a":1}; got object`}},

		// oneOf.
		{"oneOf string", stringOrList, "ls -l", nil},
		{"oneOf list", stringOrList, []any{"ls", "-l"}, nil},
		{"oneOf none of the kinds", stringOrList, 5.0,
			[]string{"params: expected string or array of strings, got number"}},
		{"oneOf picks the alternative of the value's kind", stringOrList, []any{"ls", 2},
			[]string{"params[1]: expected string, got number"}},
		{"oneOf more than one", `{"oneOf":[{"type":"number"},{"type":"integer"}]}`, 3,
			[]string{"params: matches 2 alternatives; expected exactly one of number or integer"}},
		{"oneOf three", `{"oneOf":[{"type":"boolean"},{"type":"integer"},{"enum":["auto"]}]}`, "x",
			[]string{`params: must be one of "auto"; got "x"`}},
		{"oneOf three none", `{"oneOf":[{"type":"boolean"},{"type":"integer"},{"type":"array","items":{"type":"array","items":{"enum":["a"]}}}]}`, map[string]any{},
			[]string{`params: expected boolean, integer or array of arrays of values one of "a", got object`}},

		// minimum and maximum.
		{"minimum ok", `{"type":"integer","minimum":1}`, 1, nil},
		{"minimum bad", `{"type":"integer","minimum":1}`, 0, []string{"params: must be >= 1, got 0"}},
		{"maximum bad", `{"type":"number","maximum":1.5}`, 2, []string{"params: must be <= 1.5, got 2"}},
		{"min and max ignore strings", `{"minimum":1,"maximum":2}`, "x", nil},
		{"large numbers without exponents", `{"type":"integer","maximum":1048576}`, 1 << 30, []string{"params: must be <= 1048576, got 1073741824"}},
		{"huge numbers with exponents", `{"type":"number","maximum":1}`, 1e300, []string{"params: must be <= 1, got 1e+300"}},

		// pattern: a match anywhere in the string, as in JSON Schema.
		{"pattern ok", `{"type":"string","pattern":"^[a-z][a-z0-9-]*$"}`, "web-1", nil},
		{"pattern bad", `{"type":"string","pattern":"^[a-z][a-z0-9-]*$"}`, "Web 1",
			[]string{`params: must match the pattern ^[a-z][a-z0-9-]*$; got "Web 1"`}},
		{"pattern unanchored", `{"type":"string","pattern":"[0-9]"}`, "abc1def", nil},
		{"pattern on items", `{"type":"array","items":{"type":"string","pattern":"^/"}}`, []any{"/a", "b"},
			[]string{`params[1]: must match the pattern ^/; got "b"`}},
		{"pattern ignores non-strings", `{"pattern":"^a"}`, 5, nil},

		// default constrains nothing.
		{"default ignored by validation", `{"type":"object","properties":{"n":{"type":"integer","default":3}}}`, map[string]any{}, nil},

		// format.
		{"duration ok", `{"type":"string","format":"duration"}`, "1h30m", nil},
		{"duration bad", `{"type":"string","format":"duration"}`, "5 minutes", []string{`params: invalid duration "5 minutes"`}},
		{"unknown format ignored", `{"type":"string","format":"email"}`, "not an email", nil},

		// Everything at once, in a realistic params object.
		{"shell ok", shell, map[string]any{"command": []any{"echo", "hi"}, "env": map[string]any{"A": "1"}, "timeout": "30s", "max_output_bytes": 1024}, nil},
		{"shell many problems", shell, map[string]any{
			"command":          []any{"echo", "hi", 3},
			"env":              map[string]any{"PORT": 8080},
			"timeout":          "5 minutes",
			"max_output_bytes": 0,
			"shel":             true,
		}, []string{
			"params.command[2]: expected string, got number",
			"params.env.PORT: expected string, got number",
			"params.max_output_bytes: must be >= 1, got 0",
			`params.shel: unknown key "shel" (did you mean "shell"?)`,
			`params.timeout: invalid duration "5 minutes"`,
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := mustParse(t, tt.schema)
			got := messages(s.Validate(tt.value))
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("Validate(%#v)\n got: %q\nwant: %q", tt.value, got, tt.want)
			}
		})
	}
}

func TestValidateNilSchema(t *testing.T) {
	var s *Schema
	if errs := s.Validate(map[string]any{"anything": 1}); errs != nil {
		t.Fatalf("nil schema: %v", errs)
	}
}

func TestValidateUnsupportedValue(t *testing.T) {
	s := &Schema{}
	got := messages(s.Validate(map[string]any{"c": make(chan int)}))
	if len(got) != 0 {
		t.Fatalf("schema without properties should not look inside: %q", got)
	}
	s = &Schema{Properties: map[string]*Schema{"c": {}}}
	got = messages(s.Validate(map[string]any{"c": make(chan int)}))
	if want := []string{"params.c: unsupported value of Go type chan int"}; !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestValidationErrorType(t *testing.T) {
	s := &Schema{Type: TypeObject, Properties: map[string]*Schema{"n": {Type: TypeInteger}}}
	errs := s.Validate(map[string]any{"n": "x"})
	if len(errs) != 1 {
		t.Fatalf("got %v", errs)
	}
	var ve *ValidationError
	if !errors.As(errs[0], &ve) || ve.Path != "params.n" || ve.Msg != "expected integer, got string" {
		t.Fatalf("got %#v", errs[0])
	}
}

func TestSchemaBuiltInGo(t *testing.T) {
	// The same checks work on a schema built as a Go value.
	s := &Schema{
		Type:                 TypeObject,
		Properties:           map[string]*Schema{"mode": {Type: TypeString, Enum: []any{"a", "b"}}},
		Required:             []string{"mode"},
		AdditionalProperties: boolp(false),
	}
	got := messages(s.Validate(map[string]any{"mode": "c", "mdoe": "a"}))
	// "mode" is present, so "mdoe" gets no suggestion; keys come in sorted order.
	want := []string{`params.mdoe: unknown key "mdoe"`, `params.mode: must be one of "a", "b"; got "c"`}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestJSONRoundTrip(t *testing.T) {
	s := &Schema{
		Type:        TypeObject,
		Description: "params",
		Properties: map[string]*Schema{
			"command": {OneOf: []*Schema{{Type: TypeString}, {Type: TypeArray, Items: &Schema{Type: TypeString}}}},
			"env":     {Type: TypeObject, AdditionalPropertiesSchema: &Schema{Type: TypeString}},
			"labels":  {Type: TypeObject, AdditionalProperties: boolp(true)},
			"mode":    {Type: TypeString, Enum: []any{"fast", "safe"}},
			"n":       {Type: TypeInteger, Minimum: f64(0), Maximum: f64(10)},
			"timeout": {Type: TypeString, Format: FormatDuration, Description: "per attempt"},
		},
		Required:             []string{"command"},
		AdditionalProperties: boolp(false),
	}
	text := s.JSON()
	want := `{"type":"object","description":"params","properties":{` +
		`"command":{"oneOf":[{"type":"string"},{"type":"array","items":{"type":"string"}}]},` +
		`"env":{"type":"object","additionalProperties":{"type":"string"}},` +
		`"labels":{"type":"object","additionalProperties":true},` +
		`"mode":{"type":"string","enum":["fast","safe"]},` +
		`"n":{"type":"integer","minimum":0,"maximum":10},` +
		`"timeout":{"type":"string","description":"per attempt","format":"duration"}},` +
		`"required":["command"],"additionalProperties":false}`
	if text != want {
		t.Fatalf("JSON:\n got %s\nwant %s", text, want)
	}
	back, err := Parse(text)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, s) {
		t.Fatalf("round trip changed the schema:\n got %s\nwant %s", back.JSON(), text)
	}
	if again := back.JSON(); again != text {
		t.Fatalf("second round: %s", again)
	}

	// A value (not pointer) marshals the same way.
	b, err := json.Marshal(*s)
	if err != nil || string(b) != text {
		t.Fatalf("json.Marshal(Schema) = %s, %v", b, err)
	}
}

func TestJSONNil(t *testing.T) {
	var s *Schema
	if s.JSON() != "" {
		t.Fatal(`nil schema should be ""`)
	}
	if got := (&Schema{}).JSON(); got != "{}" {
		t.Fatalf("empty schema: %s", got)
	}
}

func TestJSONAdditionalPropertiesFalseWins(t *testing.T) {
	s := &Schema{AdditionalProperties: boolp(false), AdditionalPropertiesSchema: &Schema{Type: TypeString}}
	if got := s.JSON(); got != `{"additionalProperties":false}` {
		t.Fatalf("got %s", got)
	}
	if errs := s.Validate(map[string]any{"x": "s"}); len(errs) != 1 {
		t.Fatalf("got %v", errs)
	}
}

func TestParse(t *testing.T) {
	for _, text := range []string{"", "  \n\t"} {
		s, err := Parse(text)
		if s != nil || err != nil {
			t.Errorf("Parse(%q) = %v, %v; want nil, nil", text, s, err)
		}
	}

	// Keywords outside the subset are ignored.
	s, err := Parse(`{"$schema":"https://json-schema.org/draft/2020-12/schema","title":"t","type":"string","minLength":3,"examples":["a"]}`)
	if err != nil || s.Type != TypeString {
		t.Fatalf("got %+v, %v", s, err)
	}
	if errs := s.Validate("a"); errs != nil {
		t.Fatalf("an ignored keyword was enforced: %v", errs)
	}
	// null subschemas mean any value.
	s, err = Parse(`{"properties":{"a":null},"additionalProperties":null}`)
	if err != nil || s.AdditionalProperties != nil || s.AdditionalPropertiesSchema != nil {
		t.Fatalf("got %+v, %v", s, err)
	}
	if errs := s.Validate(map[string]any{"a": 1}); errs != nil {
		t.Fatal(errs)
	}

	bad := []struct{ text, want string }{
		{`{`, "unexpected end of JSON input"},
		{`{"type":"string"} x`, "invalid character"},
		{`[]`, "not a JSON object"},
		{`null`, "not a JSON object"},
		{`"string"`, "not a JSON object"},
		{`true`, "not a JSON object"},
		{`{"type":"strnig"}`, `#/type: unsupported type "strnig"`},
		{`{"type":"null"}`, `#/type: unsupported type "null"`},
		{`{"type":["string","null"]}`, "cannot unmarshal array"},
		{`{"required":"a"}`, "cannot unmarshal string"},
		{`{"minimum":"1"}`, "cannot unmarshal string"},
		{`{"enum":[]}`, "#/enum: empty"},
		{`{"oneOf":[]}`, "#/oneOf: empty"},
		{`{"minimum":2,"maximum":1}`, "#: minimum 2 is above maximum 1"},
		{`{"additionalProperties":1}`, "additionalProperties must be a boolean or a schema"},
		{`{"additionalProperties":{"type":7}}`, "cannot unmarshal number"},
		{`{"properties":{"a/b":{"items":{"type":"list"}}}}`, `#/properties/a~1b/items/type: unsupported type "list"`},
		{`{"additionalProperties":{"type":"x"}}`, `#/additionalProperties/type: unsupported type "x"`},
		{`{"oneOf":[{"type":"string"},{"type":"x"}]}`, `#/oneOf/1/type: unsupported type "x"`},
		{`{"type":"string","pattern":"(?=a)"}`, `#/pattern: "(?=a)" is not a regular expression Pacer can use (RE2 syntax)`},
		{`{"properties":{"p":{"pattern":"["}}}`, `#/properties/p/pattern: "[" is not a regular expression`},
		{`{"type":"integer","minimum":1,"default":0}`, `#/default: 0 does not fit the schema: must be >= 1, got 0`},
		{`{"type":"integer","default":"3"}`, `#/default: "3" does not fit the schema: expected integer, got string`},
		{`{"type":"string","pattern":"^a","default":"b"}`, `#/default: "b" does not fit the schema: must match the pattern ^a; got "b"`},
		{`{"enum":["a","b"],"default":"c"}`, `#/default: "c" does not fit the schema: must be one of "a", "b"; got "c"`},
		{`{"type":"object","properties":{"d":{"type":"string","format":"duration","default":"soon"}}}`, `#/properties/d/default: "soon" does not fit the schema: invalid duration "soon"`},
		{`{"type":"array","items":{"type":"integer"},"default":[1,"x"]}`, `#/default: [1,"x"] does not fit the schema: [1]: expected integer, got string`},
	}
	for _, tt := range bad {
		s, err := Parse(tt.text)
		if err == nil {
			t.Errorf("Parse(%s) = %s, want error", tt.text, s.JSON())
			continue
		}
		if !strings.HasPrefix(err.Error(), "params schema: ") || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("Parse(%s) error %q, want it to contain %q", tt.text, err, tt.want)
		}
	}
}

// Each problem carries its location as keys, for a config loader to find its
// line; an unknown key is located at the key itself.
func TestValidationErrorKeys(t *testing.T) {
	s := mustParse(t, `{"type":"object","additionalProperties":false,"required":["command"],"properties":{
		"command":{"type":"array","items":{"type":"string"}},
		"env":{"type":"object","additionalProperties":{"type":"string"}}}}`)
	errs := s.Validate(map[string]any{"comand": 1, "env": map[string]any{"MY VAR": 1}, "command": []any{"a", 2}})
	type loc struct {
		path string
		keys []any
	}
	var got []loc
	for _, err := range errs {
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("%v is not a *ValidationError", err)
		}
		got = append(got, loc{ve.Path, ve.Keys})
	}
	want := []loc{
		{"params.comand", []any{"comand"}},
		{"params.command[1]", []any{"command", 1}},
		{`params.env["MY VAR"]`, []any{"env", "MY VAR"}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v, want %v", got, want)
	}
	var root *ValidationError
	if errs := s.Validate(map[string]any{}); len(errs) != 1 || !errors.As(errs[0], &root) || root.Path != "params" || root.Keys != nil {
		t.Errorf("missing key at the root: %v", errs)
	}
}

// Every message that quotes the value says where (Value), so that a caller
// can show it without the value (MaskValue): the runner does for a param
// named like a secret. One that names only the value's kind quotes none.
func TestValidationErrorMasksTheValueItQuotes(t *testing.T) {
	s := mustParse(t, `{"type":"object","properties":{
		"e":{"type":"string","enum":["one","two"]},
		"p":{"type":"string","pattern":"^x$"},
		"d":{"type":"string","format":"duration"},
		"min":{"type":"number","minimum":5},
		"max":{"type":"number","maximum":5},
		"i":{"type":"integer"},
		"big":{"type":"integer"},
		"ne":{"enum":[1,2]},
		"kind":{"type":"string"},
		"eo":{"enum":["a"]}}}`)
	errs := s.Validate(map[string]any{"e": "onf", "p": "Hunter2", "d": "Hunter2", "min": 3, "max": 35,
		"i": 1.5, "big": int64(1) << 60, "ne": 3, "kind": 7, "eo": map[string]any{}})
	want := map[string][2]string{ // path: value, masked message
		"params.e":    {`"onf"`, `must be one of "one", "two"; got [redacted]`},
		"params.p":    {`"Hunter2"`, `must match the pattern ^x$; got [redacted]`},
		"params.d":    {`"Hunter2"`, `invalid duration [redacted]`},
		"params.min":  {"3", "must be >= 5, got [redacted]"},
		"params.max":  {"35", "must be <= 5, got [redacted]"},
		"params.i":    {"1.5", "expected integer, got number [redacted]"},
		"params.big":  {"1152921504606846976", "expected an integer within ±2^53 (9007199254740992), which params carry exactly; got [redacted]"},
		"params.ne":   {"3", "must be one of 1, 2; got [redacted]"},
		"params.kind": {"", "expected string, got number"},
		"params.eo":   {"", `must be one of "a"; got object`},
	}
	if len(errs) != len(want) {
		t.Fatalf("%d problems, want %d: %v", len(errs), len(want), errs)
	}
	for _, err := range errs {
		var ve *ValidationError
		if !errors.As(err, &ve) {
			t.Fatalf("%v is not a *ValidationError", err)
		}
		w, ok := want[ve.Path]
		if !ok {
			t.Errorf("unexpected %v", err)
			continue
		}
		if ve.Value() != w[0] || ve.MaskValue("[redacted]") != w[1] {
			t.Errorf("%s: Value %q, MaskValue %q; want %q, %q (Msg %q)", ve.Path, ve.Value(), ve.MaskValue("[redacted]"), w[0], w[1], ve.Msg)
		}
		if w[0] != "" && !strings.Contains(ve.Msg, w[0]) {
			t.Errorf("%s: Msg %q does not quote the value %s", ve.Path, ve.Msg, w[0])
		}
	}
}

func TestPatternAndDefaultRoundTrip(t *testing.T) {
	s := mustParse(t, `{"type":"object","properties":{
		"name":{"type":"string","pattern":"^[a-z]+$","default":"ada"},
		"n":{"type":"integer","minimum":1,"maximum":10,"default":3},
		"on":{"type":"boolean","default":false},
		"tags":{"type":"array","items":{"type":"string"},"default":["a"]}}}`)
	back := mustParse(t, s.JSON())
	if !reflect.DeepEqual(back.JSON(), s.JSON()) {
		t.Fatalf("round trip changed the schema:\n%s\n%s", s.JSON(), back.JSON())
	}
	for _, k := range []string{`"pattern":"^[a-z]+$"`, `"default":"ada"`, `"default":3`, `"default":false`, `"default":["a"]`, `"minimum":1`, `"maximum":10`} {
		if !strings.Contains(s.JSON(), k) {
			t.Errorf("%s lacks %s", s.JSON(), k)
		}
	}
	// A Schema built in Go, never parsed, still checks its pattern.
	built := &Schema{Type: TypeString, Pattern: "^x"}
	if errs := messages(built.Validate("y")); !reflect.DeepEqual(errs, []string{`params: must match the pattern ^x; got "y"`}) {
		t.Errorf("built schema: %q", errs)
	}
	if errs := messages((&Schema{Type: TypeString, Pattern: "("}).Validate("y")); len(errs) != 1 || !strings.Contains(errs[0], "does not compile") {
		t.Errorf("built schema with a bad pattern: %q", errs)
	}
}

func TestApplyDefaults(t *testing.T) {
	s := mustParse(t, `{"type":"object","properties":{
		"greeting":{"type":"string","default":"hello"},
		"count":{"type":"integer","default":3},
		"verbose":{"type":"boolean","default":false},
		"nothing":{"type":"string"},
		"tags":{"type":"array","default":["a","b"]},
		"retry":{"type":"object","properties":{"max":{"type":"integer","default":2},"backoff":{"type":"string","default":"1s"}}},
		"targets":{"type":"array","items":{"type":"object","properties":{"port":{"type":"integer","default":80}}}},
		"env":{"type":"object","additionalProperties":{"type":"object","properties":{"export":{"type":"boolean","default":true}}}},
		"limits":{"type":"object","default":{},"properties":{"n":{"type":"integer","default":1}}}}}`)
	in := map[string]any{
		"count":   0,   // present: kept, even if zero
		"verbose": nil, // present as null: kept
		"retry":   map[string]any{"max": 5},
		"targets": []any{map[string]any{"host": "a"}, map[string]any{"port": 8080}, "not an object"},
		"env":     map[string]any{"A": map[string]any{}},
	}
	orig := copyJSON(in)
	got := s.ApplyDefaults(in)
	want := map[string]any{
		"greeting": "hello",
		"count":    0,
		"verbose":  nil,
		"tags":     []any{"a", "b"},
		"retry":    map[string]any{"max": 5, "backoff": "1s"},
		"targets":  []any{map[string]any{"host": "a", "port": 80.0}, map[string]any{"port": 8080}, "not an object"},
		"env":      map[string]any{"A": map[string]any{"export": true}},
		"limits":   map[string]any{"n": 1.0}, // a default object gets its keys' defaults
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("ApplyDefaults:\n got %#v\nwant %#v", got, want)
	}
	if !reflect.DeepEqual(in, orig) {
		t.Errorf("ApplyDefaults changed its input: %#v", in)
	}
	// The defaults handed out are copies: changing one changes no other.
	got.(map[string]any)["tags"].([]any)[0] = "changed"
	if again := s.ApplyDefaults(map[string]any{}).(map[string]any)["tags"]; !reflect.DeepEqual(again, []any{"a", "b"}) {
		t.Errorf("a default was shared: %v", again)
	}
	// Nothing to fill: the very same value comes back.
	full := map[string]any{"greeting": "hi", "count": 1, "verbose": true, "tags": []any{}, "retry": map[string]any{"max": 1, "backoff": "2s"}, "limits": map[string]any{"n": 2}}
	if got := s.ApplyDefaults(full); reflect.ValueOf(got).UnsafePointer() != reflect.ValueOf(full).UnsafePointer() {
		t.Error("ApplyDefaults copied a value it did not change")
	}
	var nilSchema *Schema
	if got := nilSchema.ApplyDefaults("x"); got != "x" {
		t.Errorf("nil schema: %v", got)
	}
}

// Any schema text a plugin may publish and any params a job may hold: Parse,
// Validate and ApplyDefaults never panic, a parsed schema's JSON parses back
// the same, and ApplyDefaults leaves its input as it was.
func FuzzSchema(f *testing.F) {
	for _, seed := range []struct{ schema, params string }{
		{`{"type":"object","properties":{"a":{"type":"integer","minimum":1,"default":2}},"required":["b"]}`, `{"b":1}`},
		{`{"type":"object","additionalProperties":{"type":"object","properties":{"x":{"default":[1,{"y":null}]}}}}`, `{"k":{}}`},
		{`{"type":"array","items":{"type":"string","pattern":"^a+$","enum":["a","aa"]}}`, `["a","b",3]`},
		{`{"oneOf":[{"type":"string","format":"duration"},{"type":"object","default":{}}]}`, `"5s"`},
		{`{"properties":{"a":null},"default":{"a":1}}`, `{}`},
	} {
		f.Add(seed.schema, seed.params)
	}
	f.Fuzz(func(t *testing.T, schemaText, paramsText string) {
		s, err := Parse(schemaText)
		if err != nil || s == nil {
			return
		}
		back, err := Parse(s.JSON())
		if err != nil || back.JSON() != s.JSON() {
			t.Fatalf("%s does not parse back the same: %v", s.JSON(), err)
		}
		var params any
		if json.Unmarshal([]byte(paramsText), &params) != nil {
			return
		}
		before, _ := json.Marshal(params)
		filled := s.ApplyDefaults(params)
		after, _ := json.Marshal(params)
		if string(before) != string(after) {
			t.Fatalf("ApplyDefaults changed its input from %s to %s", before, after)
		}
		_ = s.Validate(params)
		_ = s.Validate(filled)
	})
}
