package docs_test

import (
	"bytes"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
)

// repoFiles returns the repository's text files (slash paths relative to
// root), without build output and caches.
func repoFiles(t *testing.T) map[string][]byte {
	t.Helper()
	skip := map[string]bool{".git": true, "bin": true, "data": true, "node_modules": true, "__pycache__": true}
	files := map[string][]byte{}
	err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if skip[d.Name()] {
				return filepath.SkipDir
			}
			return nil
		}
		if !d.Type().IsRegular() || strings.HasSuffix(path, "go.sum") {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.IndexByte(data, 0) >= 0 { // binary
			return nil
		}
		files[rel(path)] = data
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return files
}

var (
	// mdCitation is a Markdown file named in text: README.md,
	// docs/guarantees.md, ../docs/operations.md.
	mdCitation = regexp.MustCompile(`(?:^|[^\w/.:-])((?:\.\.?/)*[\w./-]*?[\w-]+\.md)\b`)
	urlText    = regexp.MustCompile(`\w+://\S+`)
)

// Nothing in the repository cites a document that is not in it (such as
// the design notes kept beside the repository while it was built): every
// *.md a file names is a file of the repository, relative to the citing
// file, to the root, or as the tail of a path (docs/ files cite each other
// by name).
func TestCitedDocumentsAreInTheRepository(t *testing.T) {
	files := repoFiles(t)
	exists := func(from, cited string) bool {
		if _, ok := files[filepath.ToSlash(filepath.Join(filepath.Dir(from), cited))]; ok {
			return true
		}
		if _, ok := files[filepath.ToSlash(filepath.Clean(cited))]; ok {
			return true
		}
		tail := "/" + strings.TrimLeft(cited, "./")
		for f := range files {
			if strings.HasSuffix(f, tail) {
				return true
			}
		}
		return false
	}
	names := make([]string, 0, len(files))
	for f := range files {
		names = append(names, f)
	}
	slices.Sort(names)
	for _, f := range names {
		if f == "docs/refs_test.go" { // its own patterns
			continue
		}
		for i, line := range strings.Split(string(files[f]), "\n") {
			line = urlText.ReplaceAllString(line, "")
			for _, m := range mdCitation.FindAllStringSubmatch(line, -1) {
				if !exists(f, m[1]) {
					t.Errorf("%s:%d cites %s, which is not in the repository: bring what it needs into docs/ and cite that", f, i+1, m[1])
				}
			}
			if strings.Contains(line, "../shared/") {
				t.Errorf("%s:%d cites ../shared/, which is outside the repository", f, i+1)
			}
		}
	}
}

// docSection returns the section "## heading" of a Markdown file, up to the
// next section of that level.
func docSection(t *testing.T, files map[string][]byte, path, heading string) string {
	t.Helper()
	doc := string(files[path])
	start := strings.Index(doc, "\n## "+heading+"\n")
	if start < 0 {
		t.Fatalf("%s has no section \"## %s\"", path, heading)
	}
	section := doc[start+1:]
	if end := strings.Index(section[3:], "\n## "); end >= 0 {
		section = section[:end+3]
	}
	return section
}

var (
	scenarioRow  = regexp.MustCompile(`^\| (\d+) \|`)
	scenarioRefs = regexp.MustCompile(`[Ss]cenarios? (\d+(?:(?:–|-|, | and | or )\d+)*)|chaosResult\{scenario: (\d+)\}`)
	number       = regexp.MustCompile(`\d+`)
)

// Every fault scenario a file cites by number ("scenario 5", "scenarios 13–16",
// chaosResult{scenario: 19}) is a row of the scenario list in
// docs/chaos-results.md.
func TestCitedFaultScenariosAreListed(t *testing.T) {
	files := repoFiles(t)
	section := docSection(t, files, "docs/chaos-results.md", "The scenarios")
	listed := map[int]bool{}
	for _, line := range strings.Split(section, "\n") {
		if m := scenarioRow.FindStringSubmatch(line); m != nil {
			n, _ := strconv.Atoi(m[1])
			listed[n] = true
		}
	}
	if len(listed) < 20 {
		t.Fatalf("docs/chaos-results.md lists %d scenarios; the table was not found whole", len(listed))
	}
	cited := 0
	for f, data := range files {
		if !strings.HasSuffix(f, ".go") && !strings.HasSuffix(f, ".md") {
			continue
		}
		for i, line := range strings.Split(string(data), "\n") {
			for _, m := range scenarioRefs.FindAllStringSubmatch(line, -1) {
				for _, s := range number.FindAllString(m[1]+" "+m[2], -1) {
					n, _ := strconv.Atoi(s)
					cited++
					if !listed[n] {
						t.Errorf("%s:%d cites fault scenario %d, which docs/chaos-results.md does not list", f, i+1, n)
					}
				}
			}
		}
	}
	if cited < 10 {
		t.Errorf("found only %d citations of fault scenarios; the pattern no longer matches how the code cites them", cited)
	}
}

// The package map of docs/architecture.md is the code's: every package of
// the module has a row, and every row names a directory of the repository.
func TestArchitecturePackageMapMatchesTheCode(t *testing.T) {
	section := docSection(t, repoFiles(t), "docs/architecture.md", "Packages")
	rows := map[string]bool{}
	for _, m := range regexp.MustCompile("(?m)^\\| `([^`]+)` \\|").FindAllStringSubmatch(section, -1) {
		rows[m[1]] = true
		if fi, err := os.Stat(filepath.Join(root, m[1])); err != nil || !fi.IsDir() {
			t.Errorf("docs/architecture.md lists %s, which is not a directory of the repository", m[1])
		}
	}
	cmd := exec.Command("go", "list", "-f", "{{.Dir}}", "./...")
	cmd.Dir = root
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list ./...: %v", err)
	}
	abs, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	pkgs := strings.Fields(string(out))
	for _, dir := range pkgs {
		r, err := filepath.Rel(abs, dir)
		if err != nil {
			t.Fatal(err)
		}
		if r = filepath.ToSlash(r); !rows[r] {
			t.Errorf("package %s has no row in docs/architecture.md's package map", r)
		}
	}
	if len(pkgs) < 20 {
		t.Errorf("go list found %d packages; expected the whole module", len(pkgs))
	}
}

// plugins/ holds only the plugins that ship: each is one the Makefile
// builds into bin/plugins (test-only plugins live in internal/testplugins).
func TestPluginsDirectoryHoldsShippedPluginsOnly(t *testing.T) {
	mk := string(repoFiles(t)["Makefile"])
	m := regexp.MustCompile(`(?m)^PLUGINS\s*:=\s*(.*)$`).FindStringSubmatch(mk)
	if m == nil {
		t.Fatal("the Makefile has no PLUGINS := line")
	}
	shipped := strings.Fields(m[1])
	entries, err := os.ReadDir(filepath.Join(root, "plugins"))
	if err != nil {
		t.Fatal(err)
	}
	var dirs []string
	for _, e := range entries {
		if e.IsDir() {
			dirs = append(dirs, e.Name())
		}
	}
	slices.Sort(shipped)
	if !slices.Equal(dirs, shipped) {
		t.Errorf("plugins/ holds %q, the Makefile ships %q: a plugin that does not ship belongs in internal/testplugins", dirs, shipped)
	}
}
