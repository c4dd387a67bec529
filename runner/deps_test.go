package runner_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The plugin protocol stays behind the plugin host: the runner works with
// pluginhost's own types (Call, RunInfo, LogRecord, Progress, Result), which
// the host converts to and from sdk/pluginv1's messages at its edge. Only the
// host and the conformance checker (plugincheck), which speak the protocol,
// import it; the runner, its tests and the rest of runner/... and cmd/pacer
// never build or read a wire message.
func TestOnlyThePluginHostSpeaksTheWireProtocol(t *testing.T) {
	const wire = "github.com/pacerun/pacer/sdk/pluginv1"
	out, err := exec.Command("go", "list", "-f",
		`{{.ImportPath}}:{{join .Imports " "}} {{if eq .Name "runner"}}{{join .TestImports " "}} {{join .XTestImports " "}}{{end}}`,
		"github.com/pacerun/pacer/runner/...", "github.com/pacerun/pacer/cmd/pacer").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	speakers := map[string]bool{}
	sawRunner := false
	for line := range strings.Lines(string(out)) {
		pkg, imports, _ := strings.Cut(strings.TrimSpace(line), ":")
		for _, p := range strings.Fields(imports) {
			if p == wire || strings.HasPrefix(p, "google.golang.org/protobuf/") {
				speakers[pkg] = true
			}
			sawRunner = sawRunner || (pkg == "github.com/pacerun/pacer/runner" && p == "github.com/pacerun/pacer/runner/pluginhost")
		}
	}
	if !sawRunner {
		t.Fatalf("go list did not show the runner importing pluginhost: not the runner's imports\n%s", out)
	}
	for pkg := range speakers {
		switch pkg {
		case "github.com/pacerun/pacer/runner/pluginhost", "github.com/pacerun/pacer/runner/plugincheck":
		default:
			t.Errorf("%s imports the plugin protocol (%s or protobuf): convert in pluginhost instead", pkg, wire)
		}
	}
	if !speakers["github.com/pacerun/pacer/runner/pluginhost"] {
		t.Error("pluginhost does not import the protocol: the test no longer looks at the right packages")
	}
}
