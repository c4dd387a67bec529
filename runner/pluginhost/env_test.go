package pluginhost_test

import (
	"context"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/pacerun/pacer/runner/pluginhost"
)

// TestPluginProcessAndTaskEnvironment: a plugin process starts with BaseEnv,
// what Options.InheritEnv names and go-plugin's handshake, not the runner's
// whole environment; a task gets in RunContext.env exactly the variables its
// InheritEnv names; a DenyEnv variable reaches neither, even when a pattern
// or the base set would match it.
func TestPluginProcessAndTaskEnvironment(t *testing.T) {
	// Not parallel: it sets the test process's (the runner's) environment.
	t.Setenv("PATH", os.Getenv("PATH"))
	t.Setenv("PACERT_API_TOKEN", "tok-must-not-leak")
	t.Setenv("PACERT_ETCD_PASSWORD", "pw-must-not-leak")
	t.Setenv("PACERT_VISIBLE", "v1")
	t.Setenv("PACERT_OTHER", "v2")
	t.Setenv("MYAPP_URL", "http://x")
	t.Setenv("UNLISTED_SECRET", "s-must-not-leak")
	t.Setenv("LC_TIME", "C")
	for _, tr := range transports { // one after the other: t.Setenv rules out parallel subtests
		t.Run(tr.name, func(t *testing.T) { testEnvironment(t, tr) })
	}
}

func testEnvironment(t *testing.T, tr transport) {
	b := setup(t, tr.opts(pluginhost.Options{
		InheritEnv: []string{"MYAPP_*", "PACERT_*"},
		DenyEnv:    []string{"PACERT_API_TOKEN", "PACERT_ETCD_PASSWORD"},
	}))
	c := call("env", nil)
	c.InheritEnv = []string{"PACERT_VIS*", "PACERT_API_TOKEN", "UNLISTED_SECRET", "NOT_SET"}
	res, err := b.host.Run(context.Background(), c)
	if err != nil {
		t.Fatal(err)
	}

	var names []string
	for _, kv := range res.Data["environ"].([]any) {
		name, _, _ := strings.Cut(kv.(string), "=")
		names = append(names, name)
	}
	for _, want := range []string{"PATH", "LC_TIME", "MYAPP_URL", "PACERT_VISIBLE", "PACERT_OTHER", "PACER_PLUGIN_COOKIE"} {
		if !slices.Contains(names, want) {
			t.Errorf("plugin process lacks %s: %v", want, names)
		}
	}
	for _, name := range names {
		switch {
		case name == "PACERT_API_TOKEN", name == "PACERT_ETCD_PASSWORD", name == "UNLISTED_SECRET":
			t.Errorf("plugin process got %s", name)
		case slices.Contains(pluginhost.BaseEnv, name), strings.HasPrefix(name, "LC_"),
			strings.HasPrefix(name, "MYAPP_"), strings.HasPrefix(name, "PACERT_"),
			strings.HasPrefix(name, "PLUGIN_"), name == "PACER_PLUGIN_COOKIE":
		default:
			t.Errorf("plugin process got %s, which nothing asked for", name)
		}
	}

	env := res.Data["env"].(map[string]any)
	if len(env) != 2 || env["PACERT_VISIBLE"] != "v1" || env["UNLISTED_SECRET"] != "s-must-not-leak" {
		// UNLISTED_SECRET is listed by the task: it is the job's choice.
		t.Fatalf("task env = %v, want PACERT_VISIBLE and UNLISTED_SECRET only", env)
	}
}

// A variable a job inherits whose value is not UTF-8 reaches the task with
// U+FFFD for the bad bytes; the run is not refused. (The request could not
// be marshaled: "string field contains invalid UTF-8".)
func TestInheritedVariableThatIsNotUTF8(t *testing.T) {
	t.Setenv("PACERT_LATIN1", "caf\xe9")
	for _, tr := range transports { // one after the other: t.Setenv rules out parallel subtests
		t.Run(tr.name, func(t *testing.T) {
			b := setup(t, tr.opts(pluginhost.Options{}))
			c := shellCall(`printf '%s' "$PACERT_LATIN1"`)
			c.InheritEnv = []string{"PACERT_LATIN1"}
			res, err := b.host.Run(context.Background(), c)
			if err != nil {
				t.Fatal(err)
			}
			if res.Output != "caf\uFFFD" {
				t.Fatalf("output %q, want %q", res.Output, "caf\uFFFD")
			}
		})
	}
}
