package paramschema

import (
	"bytes"
	"encoding/json"
	"os"
	"regexp"
	"slices"
	"testing"
)

// patternCases is testdata/pattern_cases.json: patterns, and for each the
// values (out of Values) that contain a match of it for Go's regexp, which
// the runner checks params with. The Python SDK, which checks them again
// with Python's re, is held to the same file (sdk/python/tests/
// test_pattern.py), so that both accept the same params. Rewrite the
// matches with go test -run TestPatternSharedCases -update-cases.
type patternCases struct {
	Values []string      `json:"values"`
	Cases  []patternCase `json:"cases"`
}

type patternCase struct {
	Pattern string   `json:"pattern"`
	Matches []string `json:"matches"`
}

const patternCasesFile = "testdata/pattern_cases.json"

func TestPatternSharedCases(t *testing.T) {
	raw, err := os.ReadFile(patternCasesFile)
	if err != nil {
		t.Fatal(err)
	}
	var pc patternCases
	if err := json.Unmarshal(raw, &pc); err != nil {
		t.Fatalf("%s: %v", patternCasesFile, err)
	}
	if len(pc.Cases) == 0 || len(pc.Values) == 0 {
		t.Fatalf("%s holds no cases", patternCasesFile)
	}
	for i := range pc.Cases {
		c := &pc.Cases[i]
		re, err := regexp.Compile(c.Pattern)
		if err != nil {
			t.Fatalf("pattern %q: %v", c.Pattern, err)
		}
		got := []string{}
		for _, v := range pc.Values {
			if re.MatchString(v) {
				got = append(got, v)
			}
		}
		if *updateCases {
			c.Matches = got
			continue
		}
		if !slices.Equal(got, c.Matches) {
			t.Errorf("pattern %q matches\n  %q\nwant\n  %q", c.Pattern, got, c.Matches)
		}
	}
	if *updateCases {
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetIndent("", " ")
		enc.SetEscapeHTML(false)
		if err := enc.Encode(pc); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(patternCasesFile, buf.Bytes(), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}
