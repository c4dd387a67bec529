// Tests of the documentation: what README.md, docs/*.md and the sdk package
// doc show is what the code does.
//   - Every Go snippet is a piece of a compiled and tested file (the example
//     plugin, the SDK's runnable examples), so a snippet cannot drift from
//     code that works.
//   - Every YAML snippet is a config that loads, and a problem listing shown
//     after one is exactly what the runner says about it, with the real
//     example plugin.
//   - The commands of docs/plugin-authoring.md's first step make a module
//     outside the repository in which the example plugin builds and its tests
//     pass, quietly, both with a replace directive and with a workspace.
//   - The docs agree with the code on the default trace exporter.
//   - Nothing in the repository cites a document outside it, every fault
//     scenario cited by number is listed in docs/chaos-results.md, and
//     docs/architecture.md's package map lists every package (refs_test.go).
//
// Run them with:
//
//	go test -count=1 ./docs/          # everything (builds plugins; a minute)
//	go test -short ./docs/            # no builds
package docs_test

import (
	"bufio"
	"context"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/pacerun/pacer/runner/config"
	"github.com/pacerun/pacer/runner/fxmodule"
	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/sdk/sdktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// root is the repository, seen from this package's directory.
const root = ".."

// block is a code block of a document.
type block struct {
	where string // file:line of its first line
	lang  string // the fence's language, or go/yaml for a doc comment's
	lines []string
}

func (b block) text() string { return strings.Join(b.lines, "\n") + "\n" }

// markdownDocs are the documents whose code blocks are checked.
func markdownDocs(t *testing.T) []string {
	docs, err := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	if err != nil {
		t.Fatal(err)
	}
	return append(docs, filepath.Join(root, "README.md"))
}

// fencedBlocks returns the ``` blocks of a Markdown file.
func fencedBlocks(t *testing.T, path string) []block {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []block
	var cur *block
	for i, line := range strings.Split(string(data), "\n") {
		switch {
		case cur == nil && strings.HasPrefix(line, "```"):
			cur = &block{where: rel(path) + ":" + strconv.Itoa(i+2), lang: strings.TrimSpace(strings.TrimPrefix(line, "```"))}
		case cur != nil && strings.HasPrefix(line, "```"):
			out = append(out, *cur)
			cur = nil
		case cur != nil:
			cur.lines = append(cur.lines, line)
		}
	}
	return out
}

var yamlStart = regexp.MustCompile(`^[a-z_]+:( |$)`)

// docCommentBlocks returns the code blocks (tab-indented lines) of the
// package comment of a doc.go written as one /* */ comment; a block whose
// first line is a YAML key counts as YAML, the others as Go.
func docCommentBlocks(t *testing.T, path string) []block {
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	text, _, ok := strings.Cut(string(data), "*/")
	if !ok || !strings.HasPrefix(text, "/*") {
		t.Fatalf("%s: the package comment is not one /* */ comment", path)
	}
	var out []block
	var cur *block
	flush := func() {
		if cur != nil {
			for len(cur.lines) > 0 && cur.lines[len(cur.lines)-1] == "" {
				cur.lines = cur.lines[:len(cur.lines)-1]
			}
			cur.lang = "go"
			if yamlStart.MatchString(cur.lines[0]) {
				cur.lang = "yaml"
			}
			out = append(out, *cur)
			cur = nil
		}
	}
	for i, line := range strings.Split(text, "\n") {
		switch {
		case strings.HasPrefix(line, "\t"):
			if cur == nil {
				cur = &block{where: rel(path) + ":" + strconv.Itoa(i+1)}
			}
			cur.lines = append(cur.lines, strings.TrimPrefix(line, "\t"))
		case line == "" && cur != nil:
			cur.lines = append(cur.lines, "")
		default:
			flush()
		}
	}
	flush()
	return out
}

func rel(path string) string {
	r, err := filepath.Rel(root, path)
	if err != nil {
		return path
	}
	return r
}

// allBlocks are the code blocks of every checked document.
func allBlocks(t *testing.T) []block {
	var out []block
	for _, doc := range markdownDocs(t) {
		out = append(out, fencedBlocks(t, doc)...)
	}
	return append(out, docCommentBlocks(t, filepath.Join(root, "sdk", "doc.go"))...)
}

// excerptOf reports whether snippet is a run of consecutive lines of file,
// indented alike: every snippet line is the file's line minus one common
// indentation, blank lines matching blank lines.
func excerptOf(snippet, file []string) bool {
	if len(snippet) == 0 {
		return false
	}
	for i := range file {
		indent, ok := strings.CutSuffix(file[i], snippet[0])
		if !ok || strings.TrimLeft(indent, "\t ") != "" || i+len(snippet) > len(file) {
			continue
		}
		match := true
		for j, s := range snippet {
			f := file[i+j]
			if s == "" && strings.TrimSpace(f) == "" {
				continue
			}
			if f != indent+s {
				match = false
				break
			}
		}
		if match {
			return true
		}
	}
	return false
}

// testedGoFiles are the Go files snippets may quote: the example plugin and
// the SDK, tests and examples included, all built and run by go test.
func testedGoFiles(t *testing.T) map[string][]string {
	files := map[string][]string{}
	for _, dir := range []string{"examples", "sdk"} {
		err := filepath.WalkDir(filepath.Join(root, dir), func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.Contains(path, string(filepath.Separator)+"testdata"+string(filepath.Separator)) {
				return err
			}
			data, err := os.ReadFile(path)
			files[rel(path)] = strings.Split(string(data), "\n")
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return files
}

func TestGoSnippetsAreTestedCode(t *testing.T) {
	t.Parallel()
	files := testedGoFiles(t)
	var n int
	for _, b := range allBlocks(t) {
		if b.lang != "go" {
			continue
		}
		n++
		found := ""
		for name, lines := range files {
			if excerptOf(b.lines, lines) {
				found = name
				break
			}
		}
		if found == "" {
			t.Errorf("%s: this Go snippet is not a piece of any tested file under examples/ or sdk/; copy it from one, or add it to one:\n%s", b.where, b.text())
		}
	}
	if n < 8 {
		t.Fatalf("found only %d Go snippets; is the block parser broken?", n)
	}
}

// placeholders are the parts of YAML snippets a reader fills in.
var placeholders = strings.NewReplacer(`sha256:<output of sha256sum>`, "sha256:"+strings.Repeat("0", 64))

func TestYAMLSnippetsLoad(t *testing.T) {
	t.Parallel()
	var n int
	for _, b := range allBlocks(t) {
		if b.lang != "yaml" {
			continue
		}
		n++
		if _, err := config.Parse("pacer.yaml", []byte(placeholders.Replace(b.text()))); err != nil {
			t.Errorf("%s: this config snippet does not load:\n%v\n%s", b.where, err, b.text())
		}
	}
	if n < 5 {
		t.Fatalf("found only %d YAML snippets; is the block parser broken?", n)
	}
}

// A ```text block of problems ("pacer.yaml:6: ...") right after a ```yaml
// block is what the runner says about that config, checked here against
// the real example plugin.
func TestShownProblemsAreTheRunners(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and starts examples/hello-plugin; skipped with -short")
	}
	dir := t.TempDir()
	sdktest.Build(t, dir, filepath.Join(root, "examples", "hello-plugin"))
	var n int
	for _, doc := range markdownDocs(t) {
		blocks := fencedBlocks(t, doc)
		for i, b := range blocks {
			if b.lang != "text" || len(b.lines) == 0 || !strings.HasPrefix(b.lines[0], "pacer.yaml:") {
				continue
			}
			n++
			if i == 0 || blocks[i-1].lang != "yaml" {
				t.Errorf("%s: a problem listing without the config it is about just before it", b.where)
				continue
			}
			// Appended, so that the lines shown stay the lines checked.
			src := blocks[i-1].text() + "plugins: {dir: " + dir + "}\n"
			cfg, err := config.Parse("pacer.yaml", []byte(src))
			if err != nil {
				t.Errorf("%s: %v", blocks[i-1].where, err)
				continue
			}
			h := pluginhost.New(fxmodule.PluginHostOptions(cfg))
			err = h.CheckTasks(context.Background(), fxmodule.TaskRefs("pacer.yaml", cfg))
			h.Close()
			got := "(no problems)"
			if err != nil {
				got = err.Error()
			}
			if want := strings.TrimSpace(b.text()); got != want {
				t.Errorf("%s: the runner says\n%s\nbut the doc shows\n%s", b.where, got, want)
			}
		}
	}
	if n == 0 {
		t.Fatal("found no problem listing; docs/plugin-authoring.md shows one")
	}
}

func TestDefaultTraceExporterAgrees(t *testing.T) {
	t.Parallel()
	def := config.Default().Observability.Tracing.Exporter
	read := func(name string) string {
		data, err := os.ReadFile(filepath.Join(root, "docs", name))
		if err != nil {
			t.Fatal(err)
		}
		return string(data)
	}
	if row := "| `observability.tracing.exporter` | `" + def + "` |"; !strings.Contains(read("operations.md"), row) {
		t.Errorf("docs/operations.md's configuration table lacks %q", row)
	}
	if s := "`" + def + "` (the default"; !strings.Contains(read("observability.md"), s) {
		t.Errorf("docs/observability.md does not name %q as the default exporter (want %q)", def, s)
	}
	if s := "`observability.tracing.exporter: " + def + "`"; !strings.Contains(read("plugin-authoring.md"), s) {
		t.Errorf("docs/plugin-authoring.md does not name %q as the default exporter (want %q)", def, s)
	}
}

// shBlock returns the lines of the first ```sh block of doc that contains
// marker.
func shBlock(t *testing.T, doc, marker string) []string {
	for _, b := range fencedBlocks(t, doc) {
		if b.lang == "sh" && strings.Contains(b.text(), marker) {
			return b.lines
		}
	}
	t.Fatalf("%s has no sh block with %q", rel(doc), marker)
	return nil
}

// A module outside the repository, made by the commands of
// docs/plugin-authoring.md's first step, depends on the unpublished SDK
// through a replace directive or a workspace; the example plugin builds
// there and "go test -v" passes, printing only the tests' own lines.
func TestOutsideModule(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("makes modules outside the repository and runs go test in them; skipped with -short")
	}
	doc := filepath.Join(root, "docs", "plugin-authoring.md")
	start := shBlock(t, doc, "go mod init")
	repo, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, marker string
		after        []string // commands the doc says to run once the code is written
	}{
		{"replace", "go mod edit -replace", []string{"go mod tidy"}},
		{"workspace", "go work init", nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			top := t.TempDir()
			// The doc's ../pacer: a checkout of Pacer next to the module.
			if err := os.Symlink(repo, filepath.Join(top, "pacer")); err != nil {
				t.Fatal(err)
			}
			sh(t, top, start)
			mod := filepath.Join(top, "hello-plugin")
			for _, f := range []string{"main.go", "main_test.go"} {
				data, err := os.ReadFile(filepath.Join(root, "examples", "hello-plugin", f))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(filepath.Join(mod, f), data, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			sh(t, mod, shBlock(t, doc, tc.marker))
			sh(t, mod, tc.after)
			out := sh(t, mod, []string{"go test -v -count=1 ."})
			sc := bufio.NewScanner(strings.NewReader(out))
			var passed int
			for sc.Scan() {
				line := sc.Text()
				switch {
				case strings.HasPrefix(line, "--- PASS: "):
					passed++
				case strings.HasPrefix(line, "=== "), line == "PASS", strings.HasPrefix(line, "ok  \texample.com/hello-plugin"):
				default:
					t.Errorf("go test -v printed %q, which is no test's; all of it:\n%s", line, out)
				}
			}
			if passed != 3 {
				t.Errorf("want 3 passing tests:\n%s", out)
			}
		})
	}
}

// sh runs shell command lines in dir, as a reader would type them, and
// returns their output. Comment-only lines are skipped.
func sh(t *testing.T, dir string, lines []string) string {
	t.Helper()
	var script []string
	for _, l := range lines {
		if l = strings.TrimSpace(l); l != "" && !strings.HasPrefix(l, "#") {
			script = append(script, l)
		}
	}
	if len(script) == 0 {
		return ""
	}
	cmd := exec.Command("sh", "-ec", strings.Join(script, "\n"))
	cmd.Dir = dir
	// A reader's environment: no workspace, flags or toolchain switch
	// inherited from this test's own go command.
	cmd.Env = append(os.Environ(), "GOFLAGS=", "GOWORK=", "GOTOOLCHAIN=local")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("in %s:\n%s\n%v\n%s", dir, strings.Join(script, "\n"), err, out)
	}
	return string(out)
}
