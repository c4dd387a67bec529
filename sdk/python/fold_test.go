package python_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
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
