package sdk_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/pacerun/pacer/sdk"
	"github.com/pacerun/pacer/sdk/paramschema"
)

// tagged uses every value tag: no pointers and no range checks in the task.
type tagged struct {
	Name     string        `json:"name" pattern:"^[a-z][a-z0-9-]*$"`
	Greeting string        `json:"greeting" enum:"hello,hi" default:"hello"`
	Count    int           `json:"count" default:"3" minimum:"1" maximum:"10"`
	Ratio    float64       `json:"ratio,omitempty" minimum:"0" maximum:"1" default:"0.5"`
	Verbose  bool          `json:"verbose" default:"true"`
	Timeout  time.Duration `json:"timeout" default:"1m30s"`
	Ports    []int         `json:"ports" default:"[80,443]" minimum:"1" maximum:"65535"`
	Paths    []string      `json:"paths,omitempty" pattern:"^/"`
	Retry    struct {
		Max int `json:"max" default:"2" minimum:"0"`
	} `json:"retry" default:"{}"`
}

func runTagged(t *testing.T, params map[string]any) (tagged, error) {
	t.Helper()
	var got tagged
	task := sdk.Typed("", func(_ context.Context, p tagged, _ *sdk.Response) error { got = p; return nil })
	err := task.Run(context.Background(), &sdk.Request{Params: params}, &sdk.Response{})
	return got, err
}

func TestTypedTagsInSchema(t *testing.T) {
	task := sdk.Typed("", func(context.Context, tagged, *sdk.Response) error { return nil })
	s, err := paramschema.Parse(describe(t, task).ParamsSchema)
	if err != nil {
		t.Fatal(err)
	}
	p := s.Properties
	f := func(v float64) *float64 { return &v }
	checks := []struct {
		name      string
		got, want any
	}{
		{"name.pattern", p["name"].Pattern, "^[a-z][a-z0-9-]*$"},
		{"greeting.default", p["greeting"].Default, "hello"},
		{"count.default", p["count"].Default, 3.0},
		{"count.minimum", p["count"].Minimum, f(1)},
		{"count.maximum", p["count"].Maximum, f(10)},
		{"ratio.default", p["ratio"].Default, 0.5},
		{"verbose.default", p["verbose"].Default, true},
		{"timeout.default", p["timeout"].Default, "1m30s"},
		{"ports.default", p["ports"].Default, []any{80.0, 443.0}},
		{"ports.items.minimum", p["ports"].Items.Minimum, f(1)},
		{"ports.items.maximum", p["ports"].Items.Maximum, f(65535)},
		{"paths.items.pattern", p["paths"].Items.Pattern, "^/"},
		{"retry.default", p["retry"].Default, map[string]any{}},
		{"retry.max.default", p["retry"].Properties["max"].Default, 2.0},
		// A field with a default is optional; only name is required.
		{"required", s.Required, []string{"name"}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s = %#v, want %#v", c.name, c.got, c.want)
		}
	}
	// The keywords are JSON Schema's own.
	text := describe(t, task).ParamsSchema
	for _, kw := range []string{`"default":"hello"`, `"minimum":1`, `"maximum":10`, `"pattern":"^/"`} {
		if !strings.Contains(text, kw) {
			t.Errorf("schema lacks %s: %s", kw, text)
		}
	}
}

func TestTypedDefaultOfSelfDecodingType(t *testing.T) {
	type runParams struct {
		Command argv `json:"command" default:"\"ls -l\""`
	}
	var got argv
	task := sdk.Typed("", func(_ context.Context, p runParams, _ *sdk.Response) error { got = p.Command; return nil })
	if err := task.Run(context.Background(), &sdk.Request{}, &sdk.Response{}); err != nil || !reflect.DeepEqual(got, argv{"ls", "-l"}) {
		t.Fatalf("got %q, %v", got, err)
	}
}

func TestTypedTagsDefaults(t *testing.T) {
	got, err := runTagged(t, map[string]any{"name": "ada"})
	if err != nil {
		t.Fatal(err)
	}
	want := tagged{Name: "ada", Greeting: "hello", Count: 3, Ratio: 0.5, Verbose: true, Timeout: 90 * time.Second, Ports: []int{80, 443}}
	want.Retry.Max = 2
	if !reflect.DeepEqual(got, want) {
		t.Errorf("defaults:\n got %+v\nwant %+v", got, want)
	}

	// Keys that are present keep their values, zero ones included.
	got, err = runTagged(t, map[string]any{
		"name": "ada", "greeting": "hi", "count": 1, "ratio": 0, "verbose": false,
		"timeout": "0s", "ports": []any{}, "retry": map[string]any{"max": 0},
	})
	if err != nil {
		t.Fatal(err)
	}
	want = tagged{Name: "ada", Greeting: "hi", Count: 1, Verbose: false, Ports: []int{}}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("explicit values:\n got %+v\nwant %+v", got, want)
	}

	// A nested object that is present gets its own defaults.
	got, err = runTagged(t, map[string]any{"name": "ada", "retry": map[string]any{}})
	if err != nil || got.Retry.Max != 2 {
		t.Errorf("nested default: %+v, %v", got.Retry, err)
	}
}

func TestTypedTagsChecked(t *testing.T) {
	_, err := runTagged(t, map[string]any{
		"name": "Ada Lovelace", "count": 0, "ratio": 1.5, "ports": []any{80, 70000}, "paths": []any{"/ok", "relative"},
		"retry": map[string]any{"max": -1},
	})
	if !errors.Is(err, sdk.ErrInvalidParams) {
		t.Fatalf("err = %v, want ErrInvalidParams", err)
	}
	for _, want := range []string{
		`params.count: must be >= 1, got 0`,
		`params.name: must match the pattern ^[a-z][a-z0-9-]*$; got "Ada Lovelace"`,
		`params.paths[1]: must match the pattern ^/; got "relative"`,
		`params.ports[1]: must be <= 65535, got 70000`,
		`params.ratio: must be <= 1, got 1.5`,
		`params.retry.max: must be >= 0, got -1`,
	} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
}

func TestTypedTagPanics(t *testing.T) {
	cases := []struct {
		want string
		f    func()
	}{
		{`minimum tag on a field that is not a number`, func() {
			sdk.Typed("", func(context.Context, struct {
				S string `json:"s" minimum:"1"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`maximum tag "ten" is not a number`, func() {
			sdk.Typed("", func(context.Context, struct {
				N int `json:"n" maximum:"ten"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`minimum -1 is below the least value the field's type holds (0)`, func() {
			sdk.Typed("", func(context.Context, struct {
				N uint8 `json:"n" minimum:"-1"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`maximum 1000 is above the greatest value the field's type holds (127)`, func() {
			sdk.Typed("", func(context.Context, struct {
				N int8 `json:"n" maximum:"1000"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`minimum 5 is above maximum 1`, func() {
			sdk.Typed("", func(context.Context, struct {
				N int `json:"n" minimum:"5" maximum:"1"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`minimum tag on a field that is not a number`, func() {
			sdk.Typed("", func(context.Context, struct {
				D time.Duration `json:"d" minimum:"1"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`pattern tag on a field that is not a string`, func() {
			sdk.Typed("", func(context.Context, struct {
				N int `json:"n" pattern:"^1"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`pattern "(?=x)"`, func() {
			sdk.Typed("", func(context.Context, struct {
				S string `json:"s" pattern:"(?=x)"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`default "0" does not fit the field: must be >= 1, got 0`, func() {
			sdk.Typed("", func(context.Context, struct {
				N int `json:"n" minimum:"1" default:"0"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`default "salut" does not fit the field: must be one of "hello", "hi"; got "salut"`, func() {
			sdk.Typed("", func(context.Context, struct {
				S string `json:"s" enum:"hello,hi" default:"salut"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`default "soon" does not fit the field: invalid duration "soon"`, func() {
			sdk.Typed("", func(context.Context, struct {
				D time.Duration `json:"d" default:"soon"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`default "1.5" does not fit the field: expected integer, got number 1.5`, func() {
			sdk.Typed("", func(context.Context, struct {
				N int `json:"n" default:"1.5"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`default "yes please"`, func() {
			sdk.Typed("", func(context.Context, struct {
				B bool `json:"b" default:"yes please"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`default "[1,"`, func() {
			sdk.Typed("", func(context.Context, struct {
				L []int `json:"l" default:"[1,"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`null is no default`, func() {
			sdk.Typed("", func(context.Context, struct {
				L []int `json:"l" default:"null"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`default "AQ" does not decode into a []uint8`, func() {
			sdk.Typed("", func(context.Context, struct {
				B []byte `json:"b" default:"AQ"` // base64 needs padding: "AQ=="
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`default "ls -l": a field of this type takes a JSON value`, func() {
			sdk.Typed("", func(context.Context, struct {
				C argv `json:"c" default:"ls -l"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`a field with a default cannot be required`, func() {
			sdk.Typed("", func(context.Context, struct {
				S string `json:"s" default:"x" pacer:"required"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`unknown tag min (did you mean minimum?)`, func() {
			sdk.Typed("", func(context.Context, struct {
				N int `json:"n" min:"1"`
			}, *sdk.Response) error {
				return nil
			})
		}},
		{`unknown tag regexp (did you mean pattern?)`, func() {
			sdk.Typed("", func(context.Context, struct {
				S string `json:"s" regexp:"^a"`
			}, *sdk.Response) error {
				return nil
			})
		}},
	}
	for _, c := range cases {
		expectPanic(t, c.want, c.f)
	}
}
