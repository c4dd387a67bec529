package fxmodule_test

import (
	"io"
	"testing"

	"go.uber.org/fx"
	"go.uber.org/goleak"

	"github.com/pacerun/pacer/runner/config"
	"github.com/pacerun/pacer/runner/fxmodule"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The dependency graph is complete and acyclic. (The app itself runs in the
// end-to-end tests of cmd/pacer.)
func TestGraphIsValid(t *testing.T) {
	opts := fxmodule.Options(fxmodule.Params{Config: config.Default(), Version: "test", LogOutput: io.Discard})
	if err := fx.ValidateApp(opts); err != nil {
		t.Fatal(err)
	}
}

func TestJobsCarryEveryPolicy(t *testing.T) {
	cfg, err := config.Parse("pacer.yaml", []byte(`
jobs:
  - id: a
    plugin: shell
    task: exec
    schedule: "@every 5s"
    timezone: Europe/Berlin
    overlap: allow
    max_concurrency: 3
    delivery: at-least-once
    jitter: 2s
    retries: {max: 2, initial_backoff: 2s, max_backoff: 10s}
    misfire: {policy: all, grace: 30s}
`))
	if err != nil {
		t.Fatal(err)
	}
	j := fxmodule.Jobs(cfg)[0]
	if j.Overlap != "allow" || j.MaxConcurrency != 3 || j.Delivery != "at-least-once" || j.Jitter.Seconds() != 2 ||
		j.Retries.Max != 2 || j.Retries.MaxBackoff.Seconds() != 10 || j.Misfire.Policy != "all" || j.Misfire.Grace.Seconds() != 30 ||
		j.Timezone != "Europe/Berlin" || j.Spec != "@every 5s" || j.Schedule == nil {
		t.Fatalf("job lost a setting: %+v", j)
	}
}
