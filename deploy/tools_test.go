package deploy_test

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"
)

// Third-party tools the tests run, each built from the Go module proxy in a
// module of its own under tools/ (so that their dependencies stay out of
// Pacer's go.mod), as the Jaeger of the end-to-end trace test is:
//
//	tools/prometheus   promtool 3.x, and dashlint (dashboard-linter's rules)
//	tools/kube         helm, and kubecheck (strict decoding with client-go)
//	tools/kubescore    kube-score (it needs older k8s.io modules than helm)
//
// `make deploy-tools` compiles them into Go's build cache ahead of the tests.
const (
	promtoolPkg  = "github.com/prometheus/prometheus/cmd/promtool"
	dashlintPkg  = "github.com/pacerun/pacer/tools/prometheus/dashlint"
	helmPkg      = "helm.sh/helm/v4/cmd/helm"
	kubecheckPkg = "github.com/pacerun/pacer/tools/kube/kubecheck"
	kubescorePkg = "github.com/zegl/kube-score/cmd/kube-score"
)

var (
	toolMu    sync.Mutex // one build at a time: the machine has two cores
	toolPaths = map[string]string{}
)

// tool builds pkg in the tools module dir (relative to tools/) once per
// content of that module and returns the binary's path. Binaries are kept
// under os.UserCacheDir()/pacer-test, keyed by a hash of the module's go.mod,
// go.sum and Go files, so later runs skip the build.
func tool(t *testing.T, dir, pkg string) string {
	t.Helper()
	toolMu.Lock()
	defer toolMu.Unlock()
	if p, ok := toolPaths[pkg]; ok {
		return p
	}
	modDir, err := filepath.Abs(filepath.Join("..", "tools", dir))
	if err != nil {
		t.Fatal(err)
	}
	h := sha256.New()
	var files []string
	err = filepath.WalkDir(modDir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if n := d.Name(); !d.IsDir() && (n == "go.mod" || n == "go.sum" || strings.HasSuffix(n, ".go")) {
			files = append(files, p)
		}
		return nil
	})
	if err != nil {
		t.Fatalf("tools/%s: %v", dir, err)
	}
	sort.Strings(files)
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s %d\n", strings.TrimPrefix(f, modDir), len(b))
		h.Write(b)
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = os.TempDir()
	}
	name := path.Base(pkg)
	out := filepath.Join(cache, "pacer-test", fmt.Sprintf("%s-%s-%s", dir, name, hex.EncodeToString(h.Sum(nil)[:6])), name)
	if fi, err := os.Stat(out); err == nil && fi.Mode().IsRegular() {
		toolPaths[pkg] = out
		return out
	}
	if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
		t.Fatal(err)
	}
	// Build next to the target, then rename: a concurrent or interrupted
	// run never sees a partial binary.
	tmp := fmt.Sprintf("%s.%d.tmp", out, os.Getpid())
	defer os.Remove(tmp)
	start := time.Now()
	t.Logf("building %s in tools/%s (minutes when Go's build cache is cold; `make deploy-tools` warms it)", pkg, dir)
	cmd := exec.Command("go", "build", "-o", tmp, pkg)
	cmd.Dir = modDir
	cmd.Env = append(os.Environ(), "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build %s in tools/%s: %v\n%s", pkg, dir, err, b)
	}
	if err := os.Rename(tmp, out); err != nil {
		t.Fatal(err)
	}
	t.Logf("built %s in %s", name, time.Since(start).Round(time.Second))
	// Drop binaries of earlier contents of the same tool.
	old, _ := filepath.Glob(filepath.Join(cache, "pacer-test", fmt.Sprintf("%s-%s-*", dir, name)))
	for _, d := range old {
		if d != filepath.Dir(out) {
			_ = os.RemoveAll(d)
		}
	}
	toolPaths[pkg] = out
	return out
}

// run runs a tool and returns its combined output, failing the test (with
// the output) when it exits non-zero.
func run(t *testing.T, bin string, args ...string) string {
	t.Helper()
	out, err := exec.Command(bin, args...).CombinedOutput()
	if err != nil {
		t.Errorf("%s %s: %v\n%s", filepath.Base(bin), strings.Join(args, " "), err, out)
	}
	return string(out)
}
