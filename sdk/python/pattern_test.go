package python_test

import (
	"encoding/json"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// foldCheck runs in Python: for each letter Go folds, the texts of one
// character that (?i) and the letter match in the SDK must be exactly the
// letter's orbit under Go's unicode.SimpleFold, out of every character
// either side folds with it.
const foldCheck = `
import json, sys
from pacer_sdk import _re2
orbits = {int(c): set(o) for c, o in json.load(open(sys.argv[1])).items()}
cands = set(orbits)
cands.update(c for c in range(0x110000) if chr(c).lower() != chr(c) or chr(c).upper() != chr(c))
buckets = {}
for d in cands:
    for k in {chr(d).lower(), chr(d).upper(), chr(d).casefold()}:
        buckets.setdefault(k, set()).add(d)
bad = []
for c in sorted(cands):
    near = set(orbits.get(c, {c}))
    for k in {chr(c).lower(), chr(c).upper(), chr(c).casefold()}:
        near |= buckets[k]
    rx = _re2.compile("(?i)\\x{%x}" % c)
    got = {d for d in near if rx.fullmatch(chr(d))}
    if got != orbits.get(c, {c}):
        bad.append("U+%04X matches %s, Go %s" % (c, sorted(map(hex, got)), sorted(map(hex, orbits.get(c, {c})))))
print("\n".join(bad))
sys.exit(1 if bad else 0)
`

// Under (?i) the SDK folds every letter as Go's regexp does (Python's
// re.IGNORECASE alone would also fold i with ı and İ).
func TestPythonFoldsAsGo(t *testing.T) {
	t.Parallel()
	orbits := map[rune][]rune{}
	for r := rune(0); r <= unicode.MaxRune; r++ {
		if unicode.SimpleFold(r) == r {
			continue
		}
		o := []rune{r}
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			o = append(o, f)
		}
		orbits[r] = o
	}
	raw, err := json.Marshal(orbits)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "orbits.json")
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(Python(t), "-c", foldCheck, file)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the Python SDK folds letters otherwise than Go (%v):\n%s", err, strings.TrimSpace(string(out)))
	}
}

// Pieces of random patterns: RE2 syntax whose meaning Python's re reads
// otherwise, letters that fold differently, classes, flags and groups.
var (
	patternAtoms = []string{"a", "b", "k", "s", "i", "I", "é", "É", "ı", "İ", "K", "ſ", "1", "_", " ", `\n`, "-", ".",
		`\w`, `\W`, `\d`, `\D`, `\s`, `\S`, `\b`, `\B`, `\A`, `\z`, `\.`, "^", "$", `\x{e9}`, `\v`, `\Qa.\E`, "{,2}", "{", `\101`}
	patternClassItems = []string{"a", "b-k", "é", "K", "ſ", "i", "ı", `\w`, `\W`, `\d`, `\D`, `\s`, `\S`,
		"[:alpha:]", "[:^alpha:]", "[:space:]", "[:punct:]", "-", `\-`, "]", "^", `\x{100}-\x{17f}`, "A-Z", ".", `\n`}
	patternGroups  = []string{"(?i)", "(?m)", "(?s)", "(?-i)", "(?U)", "(?i:", "(?m:", "(?s:", "(?-i:", "(?:", "(", "(?P<n>"}
	patternRepeats = []string{"*", "+", "?", "{1,2}", "{2}", "*?", "{0,}"}
	valueRunes     = []rune("abksiIéÉıİKſSA1٣_ \n\v-.{,2}[]:ß")
)

func randomPattern(r *rand.Rand, depth int) string {
	var b strings.Builder
	for range 1 + r.IntN(4) {
		switch x := r.IntN(10); {
		case x < 5:
			b.WriteString(patternAtoms[r.IntN(len(patternAtoms))])
		case x < 7:
			b.WriteString("[")
			if r.IntN(3) == 0 {
				b.WriteString("^")
			}
			for range 1 + r.IntN(3) {
				b.WriteString(patternClassItems[r.IntN(len(patternClassItems))])
			}
			b.WriteString("]")
		case x < 9 && depth < 2:
			g := patternGroups[r.IntN(len(patternGroups))]
			b.WriteString(g)
			if strings.HasSuffix(g, ")") {
				continue
			}
			b.WriteString(randomPattern(r, depth+1))
			if r.IntN(3) == 0 {
				b.WriteString("|" + randomPattern(r, depth+1))
			}
			b.WriteString(")")
		default:
			b.WriteString("|")
		}
		if r.IntN(3) == 0 {
			b.WriteString(patternRepeats[r.IntN(len(patternRepeats))])
		}
	}
	return b.String()
}

// patternCheck runs in Python: every pattern must compile in the SDK and
// find a match in exactly the values Go's regexp does.
const patternCheck = `
import json, sys
from pacer_sdk import _re2
bad = []
for c in json.load(open(sys.argv[1])):
    try:
        rx = _re2.compile(c["pattern"])
    except ValueError as e:
        bad.append("%r: refused: %s" % (c["pattern"], e))
        continue
    for v, want in zip(c["values"], c["matches"]):
        if bool(rx.search(v)) != want:
            bad.append("%r on %r: %s, Go %s (as %r)" % (c["pattern"], v, not want, want, _re2.translate(c["pattern"])))
print("\n".join(bad[:20]))
sys.exit(1 if bad else 0)
`

// Random patterns (a fixed seed, so a failure repeats) match in the Python
// SDK exactly the values they match in Go's regexp: what the fixed cases of
// sdk/paramschema/testdata/pattern_cases.json check, on combinations no
// one wrote down.
func TestPythonPatternsMatchAsGo(t *testing.T) {
	t.Parallel()
	type patternValues struct {
		Pattern string   `json:"pattern"`
		Values  []string `json:"values"`
		Matches []bool   `json:"matches"`
	}
	r := rand.New(rand.NewPCG(17, 2))
	var cases []patternValues
	for len(cases) < 1500 {
		p := randomPattern(r, 0)
		re, err := regexp.Compile(p)
		if err != nil {
			continue // not a pattern the runner accepts
		}
		c := patternValues{Pattern: p}
		for range 20 {
			v := make([]rune, r.IntN(5))
			for i := range v {
				v[i] = valueRunes[r.IntN(len(valueRunes))]
			}
			c.Values = append(c.Values, string(v))
			c.Matches = append(c.Matches, re.MatchString(string(v)))
		}
		cases = append(cases, c)
	}
	raw, err := json.Marshal(cases)
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "patterns.json")
	if err := os.WriteFile(file, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(Python(t), "-c", patternCheck, file)
	cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the Python SDK matches otherwise than Go (%v), first differences:\n%s", err, strings.TrimSpace(string(out)))
	}
}
