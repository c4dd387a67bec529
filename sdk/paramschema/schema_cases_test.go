package paramschema

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"slices"
	"testing"
)

var updateCases = flag.Bool("update-cases", false, "rewrite the problems in testdata/validate_cases.json from this implementation")

// validateCase is one entry of testdata/validate_cases.json: a schema, a
// value and the problems the runner reports for it, in order. The Python
// SDK's checker (sdk/python/pacer_sdk/_schema.py) is held to the same file,
// so a plugin written in Python rejects what the runner rejects, in the same
// words.
type validateCase struct {
	Name     string          `json:"name"`
	Schema   json.RawMessage `json:"schema"`
	Value    any             `json:"value"`
	Problems []string        `json:"problems"`
}

const casesFile = "testdata/validate_cases.json"

func TestValidateSharedCases(t *testing.T) {
	raw, err := os.ReadFile(casesFile)
	if err != nil {
		t.Fatal(err)
	}
	var cases []validateCase
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatalf("%s: %v", casesFile, err)
	}
	if len(cases) == 0 {
		t.Fatalf("%s holds no cases", casesFile)
	}
	for i := range cases {
		c := &cases[i]
		text := string(c.Schema)
		if text == "null" {
			text = ""
		}
		s, err := Parse(text)
		if err != nil {
			t.Fatalf("case %q: %v", c.Name, err)
		}
		got := messages(s.Validate(c.Value))
		if *updateCases {
			c.Problems = got
			continue
		}
		if !slices.Equal(got, c.Problems) && !(len(got) == 0 && len(c.Problems) == 0) {
			t.Errorf("case %q: problems\n  %q\nwant\n  %q", c.Name, got, c.Problems)
		}
	}
	if *updateCases {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", " ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(cases); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(casesFile, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
