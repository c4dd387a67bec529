package sdk_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pacerun/pacer/sdk"
	"github.com/pacerun/pacer/sdk/paramschema"
)

// commandParam is a list of arguments or a single string, like the shell
// plugin's command; it describes itself with JSONSchema.
type commandParam []string

func (c *commandParam) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*c = commandParam{s}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return errors.New("command must be a list of strings or a string")
	}
	*c = list
	return nil
}

func (commandParam) JSONSchema() string {
	return `{"oneOf":[{"type":"string"},{"type":"array","items":{"type":"string"}}]}`
}

// rawParam decodes itself and says nothing about its shape.
type rawParam struct{ v any }

func (r *rawParam) UnmarshalJSON(b []byte) error { return json.Unmarshal(b, &r.v) }

type limits struct {
	CPU     float64       `json:"cpu" desc:"cores"`
	Memory  int64         `json:"memory,omitempty"`
	Timeout time.Duration `json:"timeout,omitempty"`
}

type shellParams struct {
	Command        []string                 `json:"command" desc:"program and arguments"`
	Shell          bool                     `json:"shell" pacer:"optional" desc:"run command[0] with /bin/sh -c"`
	Dir            string                   `json:",omitempty"`
	Env            map[string]string        `json:"env,omitempty"`
	InheritEnv     []string                 `json:"inherit_env,omitempty"`
	Timeout        time.Duration            `json:"timeout" pacer:"optional"`
	Mode           string                   `json:"mode,omitempty" enum:"fast, safe"`
	MaxOutputBytes *int                     `json:"max_output_bytes"`
	Retries        uint8                    `json:"retries,omitzero"`
	Limits         limits                   `json:"limits,omitempty"`
	Steps          []limits                 `json:"steps,omitempty"`
	Grace          map[string]time.Duration `json:"grace,omitempty"`
	Backoff        *time.Duration           `json:"backoff"`
	Extra          any                      `json:"extra,omitempty"`
	Raw            rawParam                 `json:"raw,omitempty"`
	Addr           netip.Addr               `json:"addr,omitempty"` // an encoding.TextUnmarshaler
	Tags           []string                 `json:"tags,omitempty" enum:"a,b"`
	Strict         bool                     `json:"strict,omitempty" pacer:"required"`
	Ignored        string                   `json:"-"`
	//lint:ignore U1000 an unexported field, which the schema must leave out
	internal int
}

func compact(t *testing.T, s string) string {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, []byte(s)); err != nil {
		t.Fatalf("bad expected JSON: %v\n%s", err, s)
	}
	return buf.String()
}

func describe(t *testing.T, task sdk.Task) sdk.TaskInfo {
	t.Helper()
	d, ok := task.(sdk.Describer)
	if !ok {
		t.Fatalf("%T does not implement sdk.Describer", task)
	}
	return d.Describe()
}

func TestTypedSchema(t *testing.T) {
	task := sdk.Typed("Runs a command.", func(context.Context, shellParams, *sdk.Response) error { return nil })
	info := describe(t, task)
	if info.Description != "Runs a command." {
		t.Errorf("Description = %q", info.Description)
	}
	want := compact(t, `{
		"type": "object",
		"properties": {
			"Dir": {"type": "string"},
			"addr": {"type": "string"},
			"backoff": {"type": "string", "format": "duration"},
			"command": {"type": "array", "description": "program and arguments", "items": {"type": "string"}},
			"env": {"type": "object", "additionalProperties": {"type": "string"}},
			"extra": {},
			"grace": {"type": "object", "additionalProperties": {"type": "string", "format": "duration"}},
			"inherit_env": {"type": "array", "items": {"type": "string"}},
			"limits": {
				"type": "object",
				"properties": {
					"cpu": {"type": "number", "description": "cores"},
					"memory": {"type": "integer"},
					"timeout": {"type": "string", "format": "duration"}
				},
				"required": ["cpu"],
				"additionalProperties": false
			},
			"max_output_bytes": {"type": "integer"},
			"mode": {"type": "string", "enum": ["fast", "safe"]},
			"raw": {},
			"retries": {"type": "integer", "minimum": 0, "maximum": 255},
			"shell": {"type": "boolean", "description": "run command[0] with /bin/sh -c"},
			"steps": {
				"type": "array",
				"items": {
					"type": "object",
					"properties": {
						"cpu": {"type": "number", "description": "cores"},
						"memory": {"type": "integer"},
						"timeout": {"type": "string", "format": "duration"}
					},
					"required": ["cpu"],
					"additionalProperties": false
				}
			},
			"strict": {"type": "boolean"},
			"tags": {"type": "array", "items": {"type": "string", "enum": ["a", "b"]}},
			"timeout": {"type": "string", "format": "duration"}
		},
		"required": ["command", "strict"],
		"additionalProperties": false
	}`)
	if info.ParamsSchema != want {
		t.Errorf("schema:\n got %s\nwant %s", info.ParamsSchema, want)
	}
	// The runner parses what the plugin sends.
	if _, err := paramschema.Parse(info.ParamsSchema); err != nil {
		t.Fatal(err)
	}
}

func TestTypedSchemaSpecialFields(t *testing.T) {
	type Base struct {
		Name  string `json:"name"`
		Shade string `json:"shade,omitempty"`
		Level int
	}
	type Other struct {
		Level string
	}
	type node struct {
		Value    int     `json:"value"`
		Children []*node `json:"children,omitempty"`
	}
	type params struct {
		Base                 // promoted: shade; Level clashes with Other's...
		Other                // ...at the same depth, so encoding/json drops it.
		Name    string       `json:"name,omitempty"` // shallower: hides Base.Name
		Command commandParam `json:"command"`
		Data    []byte       `json:"data,omitempty"`
		Count   int          `json:"count,string,omitempty"`
		Tree    node         `json:"tree,omitempty"`
		Small   int8         `json:"small,omitempty"`
		Ptr     **string     `json:"ptr"`
		When    time.Time    `json:"when,omitempty"`
		Default int
	}
	info := describe(t, sdk.Typed("", func(context.Context, params, *sdk.Response) error { return nil }))
	want := compact(t, `{
		"type": "object",
		"properties": {
			"Default": {"type": "integer"},
			"command": {"oneOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}}]},
			"count": {"type": "string"},
			"data": {"type": "string"},
			"name": {"type": "string"},
			"ptr": {"type": "string"},
			"shade": {"type": "string"},
			"small": {"type": "integer", "minimum": -128, "maximum": 127},
			"tree": {
				"type": "object",
				"properties": {
					"children": {"type": "array", "items": {"type": "object"}},
					"value": {"type": "integer"}
				},
				"required": ["value"],
				"additionalProperties": false
			},
			"when": {}
		},
		"required": ["command", "Default"],
		"additionalProperties": false
	}`)
	if info.ParamsSchema != want {
		t.Errorf("schema:\n got %s\nwant %s", info.ParamsSchema, want)
	}
}

func TestTypedEmptyStruct(t *testing.T) {
	task := sdk.Typed("", func(context.Context, struct{}, *sdk.Response) error { return nil })
	if got := describe(t, task).ParamsSchema; got != `{"type":"object","additionalProperties":false}` {
		t.Errorf("schema: %s", got)
	}
	if err := task.Run(context.Background(), &sdk.Request{}, &sdk.Response{}); err != nil {
		t.Errorf("no params: %v", err)
	}
	err := task.Run(context.Background(), &sdk.Request{Params: map[string]any{"x": 1}}, &sdk.Response{})
	if !errors.Is(err, sdk.ErrInvalidParams) {
		t.Errorf("unknown key: %v", err)
	}
}

type runParams struct {
	Command []string                 `json:"command"`
	Shell   bool                     `json:"shell" pacer:"optional"`
	Dir     string                   `json:"dir,omitempty"`
	Env     map[string]string        `json:"env,omitempty"`
	Timeout time.Duration            `json:"timeout,omitempty"`
	Backoff *time.Duration           `json:"backoff,omitempty"`
	Mode    string                   `json:"mode,omitempty" enum:"fast,safe"`
	Steps   []limits                 `json:"steps,omitempty"`
	Grace   map[string]time.Duration `json:"grace,omitempty"`
	Every   []time.Duration          `json:"every,omitempty"`
	Max     int                      `json:"max,omitempty"`
	Cmd     commandParam             `json:"cmd,omitempty"`
}

func TestTypedRun(t *testing.T) {
	var got runParams
	calls := 0
	task := sdk.Typed("", func(ctx context.Context, p runParams, resp *sdk.Response) error {
		calls++
		got = p
		resp.Output = "ran " + strings.Join(p.Command, " ")
		return nil
	})
	// Params as the runner sends them: decoded from a protobuf Struct, so
	// numbers are float64.
	params := map[string]any{
		"command": []any{"echo", "hi"},
		"shell":   true,
		"env":     map[string]any{"A": "1"},
		"timeout": "1m30s",
		"backoff": "250ms",
		"mode":    "safe",
		"steps":   []any{map[string]any{"cpu": 0.5, "timeout": "2s"}, map[string]any{"cpu": 2.0, "memory": 1024.0}},
		"grace":   map[string]any{"term": "5s"},
		"every":   []any{"1s", "1h"},
		"max":     float64(10),
		"cmd":     "ls -l",
	}
	var resp sdk.Response
	if err := task.Run(context.Background(), &sdk.Request{Task: "exec", Params: params}, &resp); err != nil {
		t.Fatal(err)
	}
	backoff := 250 * time.Millisecond
	want := runParams{
		Command: []string{"echo", "hi"},
		Shell:   true,
		Env:     map[string]string{"A": "1"},
		Timeout: 90 * time.Second,
		Backoff: &backoff,
		Mode:    "safe",
		Steps:   []limits{{CPU: 0.5, Timeout: 2 * time.Second}, {CPU: 2, Memory: 1024}},
		Grace:   map[string]time.Duration{"term": 5 * time.Second},
		Every:   []time.Duration{time.Second, time.Hour},
		Max:     10,
		Cmd:     commandParam{"ls -l"},
	}
	if calls != 1 || !reflect.DeepEqual(got, want) {
		t.Fatalf("fn called %d times with\n%+v\nwant\n%+v", calls, got, want)
	}
	if resp.Output != "ran echo hi" {
		t.Errorf("Output = %q", resp.Output)
	}
	// The request's params are not modified.
	if params["timeout"] != "1m30s" || params["steps"].([]any)[0].(map[string]any)["timeout"] != "2s" {
		t.Errorf("params were modified: %v", params)
	}

	// YAML-style integers are numbers too.
	if err := task.Run(context.Background(), &sdk.Request{Params: map[string]any{"command": []any{"x"}, "max": 3}}, &resp); err != nil {
		t.Fatal(err)
	}
	if got.Max != 3 || got.Timeout != 0 || got.Backoff != nil {
		t.Errorf("got %+v", got)
	}
}

func TestTypedRunBadParams(t *testing.T) {
	called := false
	task := sdk.Typed("", func(context.Context, runParams, *sdk.Response) error {
		called = true
		return nil
	})
	params := map[string]any{
		"comand":  []any{"echo"},
		"env":     map[string]any{"PORT": 8080.0},
		"timeout": "5 minutes",
		"mode":    "fsat",
		"steps":   []any{map[string]any{"cpu": "lots"}, map[string]any{}},
		"max":     1.5,
		"cmd":     3.0,
	}
	err := task.Run(context.Background(), &sdk.Request{Params: params}, &sdk.Response{})
	if called {
		t.Fatal("fn was called with bad params")
	}
	if !errors.Is(err, sdk.ErrInvalidParams) {
		t.Fatalf("error %v does not match ErrInvalidParams", err)
	}
	want := []string{
		`params: missing required key "command"`,
		`params.cmd: expected string or array of strings, got number`,
		`params.comand: unknown key "comand" (did you mean "command"?)`,
		`params.env.PORT: expected string, got number`,
		`params.max: expected integer, got number 1.5`,
		`params.mode: must be one of "fast", "safe"; got "fsat" (did you mean "fast"?)`,
		`params.steps[0].cpu: expected number, got string`,
		`params.steps[1]: missing required key "cpu"`,
		`params.timeout: invalid duration "5 minutes"`,
	}
	if got, w := err.Error(), "invalid params: "+strings.Join(want, "; "); got != w {
		t.Errorf("error:\n got %s\nwant %s", got, w)
	}
	var ve *paramschema.ValidationError
	if !errors.As(err, &ve) || ve.Path != "params" || ve.Msg != `missing required key "command"` {
		t.Errorf("errors.As ValidationError: %#v", ve)
	}

	// The runner, checking the config with the schema the plugin sent,
	// finds the same problems.
	schema, perr := paramschema.Parse(describe(t, task).ParamsSchema)
	if perr != nil {
		t.Fatal(perr)
	}
	var runner []string
	for _, e := range schema.Validate(params) {
		runner = append(runner, e.Error())
	}
	if !reflect.DeepEqual(runner, want) {
		t.Errorf("runner-side validation:\n got %q\nwant %q", runner, want)
	}
}

func TestTypedRunMissingParams(t *testing.T) {
	task := sdk.Typed("", func(context.Context, runParams, *sdk.Response) error { return nil })
	for _, req := range []*sdk.Request{nil, {}, {Params: map[string]any{}}} {
		err := task.Run(context.Background(), req, &sdk.Response{})
		if !errors.Is(err, sdk.ErrInvalidParams) || err.Error() != `invalid params: params: missing required key "command"` {
			t.Errorf("Run(%+v) = %v", req, err)
		}
	}
}

// Attack 19, P1: 1e20 is a whole number, but no Go int holds it: the
// schema check passed it (the runner's too, so the job loaded) and every
// run failed to decode it. Beyond ±2^53 an integer is refused as what
// params cannot carry exactly, by the same check on both sides.
func TestTypedRunIntegerBeyondDouble(t *testing.T) {
	type counted struct {
		Count int `json:"count"`
	}
	task := sdk.Typed("", func(context.Context, counted, *sdk.Response) error { return nil })
	const want = "params.count: expected an integer within ±2^53 (9007199254740992), which params carry exactly; got 100000000000000000000"
	err := task.Run(context.Background(), &sdk.Request{Params: map[string]any{"count": 1e20}}, &sdk.Response{})
	if !errors.Is(err, sdk.ErrInvalidParams) || err.Error() != "invalid params: "+want {
		t.Errorf("Run: %v, want invalid params: %s", err, want)
	}
	if err := task.Run(context.Background(), &sdk.Request{Params: map[string]any{"count": float64(1 << 53)}}, &sdk.Response{}); err != nil {
		t.Errorf("Run with 2^53: %v", err)
	}
}

func TestTypedRunDecodeError(t *testing.T) {
	// strictRaw is a json.Unmarshaler but no JSONSchemer, so the schema
	// accepts any value and only decoding catches a bad one.
	type loose struct {
		Raw strictRaw `json:"raw"`
	}
	task := sdk.Typed("", func(context.Context, loose, *sdk.Response) error { return nil })
	err := task.Run(context.Background(), &sdk.Request{Params: map[string]any{"raw": 1.0}}, &sdk.Response{})
	if !errors.Is(err, sdk.ErrInvalidParams) || !strings.Contains(err.Error(), "raw must be a string") {
		t.Errorf("got %v", err)
	}
}

type strictRaw string

func (s *strictRaw) UnmarshalJSON(b []byte) error {
	var v string
	if err := json.Unmarshal(b, &v); err != nil {
		return errors.New("raw must be a string")
	}
	*s = strictRaw(v)
	return nil
}

func TestTypedRunTaskError(t *testing.T) {
	boom := errors.New("boom")
	task := sdk.Typed("", func(ctx context.Context, p struct{}, resp *sdk.Response) error { return boom })
	if err := task.Run(context.Background(), &sdk.Request{}, &sdk.Response{}); err != boom {
		t.Fatalf("got %v, want the task's own error", err)
	}
}

func TestTypedConcurrentRuns(t *testing.T) {
	task := sdk.Typed("", func(ctx context.Context, p runParams, resp *sdk.Response) error {
		resp.Output = p.Timeout.String()
		return nil
	})
	done := make(chan string)
	for i := range 8 {
		go func() {
			var resp sdk.Response
			err := task.Run(context.Background(), &sdk.Request{Params: map[string]any{
				"command": []any{"x"}, "timeout": fmt.Sprintf("%ds", i),
			}}, &resp)
			if err != nil {
				done <- err.Error()
				return
			}
			done <- resp.Output
		}()
	}
	for range 8 {
		if out := <-done; !strings.HasSuffix(out, "s") {
			t.Error(out)
		}
	}
}

func expectPanic(t *testing.T, want string, f func()) {
	t.Helper()
	defer func() {
		t.Helper()
		r := recover()
		if r == nil {
			t.Errorf("no panic; want one containing %q", want)
			return
		}
		if msg := fmt.Sprint(r); !strings.Contains(msg, want) {
			t.Errorf("panic %q, want it to contain %q", msg, want)
		}
	}()
	f()
}

type badSchemer string

func (badSchemer) JSONSchema() string { return `{"type":"text"}` }

func TestTypedPanics(t *testing.T) {
	expectPanic(t, "params type string is not a struct", func() {
		sdk.Typed("", func(context.Context, string, *sdk.Response) error { return nil })
	})
	expectPanic(t, "is not a struct", func() {
		sdk.Typed("", func(context.Context, *runParams, *sdk.Response) error { return nil })
	})
	expectPanic(t, "fn is nil", func() { sdk.Typed[runParams]("", nil) })
	expectPanic(t, ".C: type chan int cannot come from JSON", func() {
		type p struct {
			C chan int `json:"c"`
		}
		sdk.Typed("", func(context.Context, p, *sdk.Response) error { return nil })
	})
	expectPanic(t, "map key type bool cannot come from JSON", func() {
		type p struct {
			M map[bool]string `json:"m"`
		}
		sdk.Typed("", func(context.Context, p, *sdk.Response) error { return nil })
	})
	expectPanic(t, `unknown pacer tag option "optinal"`, func() {
		type p struct {
			S string `json:"s" pacer:"optinal"`
		}
		sdk.Typed("", func(context.Context, p, *sdk.Response) error { return nil })
	})
	expectPanic(t, "enum tag on a field that is not a string", func() {
		type p struct {
			N int `json:"n" enum:"1,2"`
		}
		sdk.Typed("", func(context.Context, p, *sdk.Response) error { return nil })
	})
	expectPanic(t, "empty enum tag", func() {
		type p struct {
			S string `json:"s" enum:" , "`
		}
		sdk.Typed("", func(context.Context, p, *sdk.Response) error { return nil })
	})
	expectPanic(t, `unsupported type "text"`, func() {
		type p struct {
			B badSchemer `json:"b"`
		}
		sdk.Typed("", func(context.Context, p, *sdk.Response) error { return nil })
	})
}
