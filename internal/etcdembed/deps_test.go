package etcdembed_test

import (
	"os/exec"
	"strings"
	"testing"
)

// The runner and its API are libraries: they reach etcd through its client
// only. etcd's server (some 40 packages) is linked by the binaries that run
// one, through this package (and the fault suite's internal/etcdmember).
func TestRunnerAndAPIDoNotLinkEtcdServer(t *testing.T) {
	cmd := exec.Command("go", "list", "-deps", "github.com/pacerun/pacer/runner", "github.com/pacerun/pacer/runner/api")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("go list -deps: %v", err)
	}
	deps := strings.Fields(string(out))
	client := false
	for _, p := range deps {
		if strings.HasPrefix(p, "go.etcd.io/etcd/server/") || p == "github.com/pacerun/pacer/internal/etcdembed" {
			t.Errorf("runner or runner/api links %s", p)
		}
		client = client || p == "go.etcd.io/etcd/client/v3"
	}
	if !client || len(deps) < 100 {
		t.Errorf("go list -deps listed %d packages without etcd's client: not the runner's dependencies", len(deps))
	}
	// pacer itself still runs an embedded etcd.
	out, err = exec.Command("go", "list", "-deps", "github.com/pacerun/pacer/cmd/pacer").Output()
	if err != nil {
		t.Fatalf("go list -deps ./cmd/pacer: %v", err)
	}
	if !strings.Contains(string(out), "go.etcd.io/etcd/server/v3/embed\n") {
		t.Error("cmd/pacer does not link the embedded etcd server")
	}
}
