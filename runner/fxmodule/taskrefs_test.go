package fxmodule_test

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/pacerun/pacer/runner/config"
	"github.com/pacerun/pacer/runner/fxmodule"
	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/sdk/paramschema"
	"github.com/pacerun/pacer/sdk/sdktest"
)

// A job's params are checked against the schema the real shell plugin
// publishes, and every problem points at the line of the offending key, in
// block and flow YAML alike, not at the job's "- id:" line.
func TestTaskRefsPointAtTheOffendingKey(t *testing.T) {
	t.Parallel()
	if testing.Short() {
		t.Skip("builds and starts the shell plugin; skipped with -short")
	}
	dir := t.TempDir()
	sdktest.Build(t, dir, "github.com/pacerun/pacer/plugins/shell")
	src := strings.Join([]string{
		"plugins: {dir: " + dir + "}",
		"jobs:",
		"  - id: block",
		"    plugin: shell",
		"    task: exec",
		`    schedule: "@every 1s"`,
		"    params:",
		"      comand: [echo, hi]",
		"      max_output_bytes: lots",
		"      env:",
		"        PORT: 8080",
		`  - {id: flow, plugin: shell, task: exec, schedule: "@every 1s", params: {command: [echo, 3], shel: true}}`,
		"  - id: multi-line-flow",
		"    plugin: shell",
		"    task: exec",
		`    schedule: "@every 1s"`,
		"    params: {",
		"      command: [echo,",
		"        {not: a string}]}",
		"  - id: typo-task",
		"    plugin: shell",
		"    task: exce",
		`    schedule: "@every 1s"`,
		"  - id: no-such-plugin",
		"    plugin: sehll",
		"    task: exec",
		`    schedule: "@every 1s"`,
	}, "\n") + "\n"
	cfg, err := config.Parse("pacer.yaml", []byte(src))
	if err != nil {
		t.Fatal(err)
	}
	h := pluginhost.New(fxmodule.PluginHostOptions(cfg))
	defer h.Close()
	err = h.CheckTasks(context.Background(), fxmodule.TaskRefs("pacer.yaml", cfg))
	want := []string{
		`pacer.yaml:7: jobs[0].params: missing required key "command"`,
		`pacer.yaml:8: jobs[0].params.comand: unknown key "comand" (did you mean "command"?)`,
		`pacer.yaml:11: jobs[0].params.env.PORT: expected string, got number`,
		`pacer.yaml:9: jobs[0].params.max_output_bytes: expected integer, got string`,
		`pacer.yaml:12: jobs[1].params.command[1]: expected string, got number`,
		`pacer.yaml:12: jobs[1].params.shel: unknown key "shel" (did you mean "shell"?)`,
		`pacer.yaml:19: jobs[2].params.command[1]: expected string, got object`,
		`pacer.yaml:22: jobs[3].task: unknown task: plugin "shell" has no task "exce" (it has: exec)`,
		`pacer.yaml:25: jobs[4].plugin: plugin "sehll": plugin not found: "sehll" has no binary at ` + dir + `/sehll (build it, or set plugins.dir or plugins.paths)`,
	}
	if err == nil {
		t.Fatal("CheckTasks accepted bad jobs")
	}
	if got := strings.Split(err.Error(), "\n"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	// Each params problem keeps its identity.
	var ve *paramschema.ValidationError
	if !errors.As(err, &ve) || ve.Path != "params" {
		t.Errorf("errors.As(*paramschema.ValidationError) = %v", ve)
	}
	if !errors.Is(err, pluginhost.ErrTaskNotFound) || !errors.Is(err, pluginhost.ErrPluginNotFound) {
		t.Errorf("lost the sentinel errors: %v", err)
	}
}
