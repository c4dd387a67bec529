package plugincheck

import (
	"encoding/json"
	"reflect"
	"strings"
	"testing"

	"github.com/pacerun/pacer/sdk/paramschema"
)

func TestParseHandshake(t *testing.T) {
	for _, tc := range []struct{ line, want string }{
		{"", "got none"},
		{"starting\n", `got "starting" (print nothing before the handshake)`},
		{"2|1|unix|/s|grpc|x", `core protocol version 1 (field 1); got "2"`},
		{"1|3|unix|/s|grpc|x", `Pacer protocol version 1 (field 2); got "3"`},
		{"1|1|pipe|/s|grpc|x", `network unix or tcp (field 3); got "pipe"`},
		{"1|1|unix|/s|netrpc", `protocol grpc (field 5); got "netrpc"`},
		{"1|1|unix|/s", `protocol grpc (field 5); got ""`},
	} {
		if _, err := parseHandshake(tc.line); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("parseHandshake(%q) = %v, want %q", tc.line, err, tc.want)
		}
	}
	h, err := parseHandshake("1|1|tcp|127.0.0.1:1234|grpc|CERT\n")
	if err != nil || h != (handshake{"tcp", "127.0.0.1:1234", "CERT"}) {
		t.Fatalf("%+v, %v", h, err)
	}
}

func TestKeywordsFollowTheRunnersSchema(t *testing.T) {
	got := Keywords()
	for _, k := range []string{"type", "properties", "required", "additionalProperties", "items", "enum", "oneOf", "minimum", "maximum", "pattern", "format", "default", "description"} {
		found := false
		for _, g := range got {
			found = found || g == k
		}
		if !found {
			t.Errorf("Keywords() = %v lacks %q", got, k)
		}
	}
	if u := unknownKeywords(`{"type":"object","properties":{"a":{"type":"string","pattern":"x","minLength":1},"b":{"items":{"$ref":"#"}}},"oneOf":[{"title":"t"}]}`); !reflect.DeepEqual(u,
		[]string{`"title" at #/oneOf/0`, `"minLength" at #/properties/a`, `"$ref" at #/properties/b/items`}) {
		t.Errorf("unknownKeywords = %q", u)
	}
}

func TestExampleAndInvalidParams(t *testing.T) {
	s, err := paramschema.Parse(`{"type":"object","additionalProperties":false,"required":["n","d","e","c","l"],"properties":{
		"n":{"type":"integer","minimum":2.5},"d":{"type":"string","format":"duration"},"e":{"type":"string","enum":["x","y"]},
		"c":{"oneOf":[{"type":"string"},{"type":"array","items":{"type":"string"}}]},"l":{"type":"array"},"opt":{"type":"boolean"}}}`)
	if err != nil {
		t.Fatal(err)
	}
	ex := example(s)
	b, _ := json.Marshal(ex)
	if string(b) != `{"c":"","d":"1s","e":"x","l":[],"n":3}` {
		t.Errorf("example = %s", b)
	}
	if errs := s.Validate(ex); len(errs) > 0 {
		t.Errorf("the example fails its schema: %v", errs)
	}
	bad, why := invalidParams(s)
	if bad["pacer_check_unknown_key"] != true || !strings.Contains(why, `unknown key "pacer_check_unknown_key"`) {
		t.Errorf("invalidParams = %v, %q", bad, why)
	}
	open, _ := paramschema.Parse(`{"type":"object","properties":{"n":{"type":"integer"}}}`)
	if bad, why := invalidParams(open); bad["n"] != "pacer-check-wrong-type" || !strings.Contains(why, "expected integer") {
		t.Errorf("invalidParams(open) = %v, %q", bad, why)
	}
	if bad, _ := invalidParams(nil); bad != nil {
		t.Errorf("invalidParams(nil) = %v, want nil: any params are valid", bad)
	}
}
