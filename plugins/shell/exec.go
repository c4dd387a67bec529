package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pacerun/pacer/sdk"
)

// killGrace is how long the process group gets between SIGTERM and SIGKILL.
const killGrace = 2 * time.Second

// params are the task's params. The SDK derives the schema the runner checks
// jobs against from this struct (see sdk.Typed).
type params struct {
	Command        commandParam      `json:"command" desc:"argv list, or one string (with shell: true, a shell script)"`
	Shell          bool              `json:"shell,omitempty" desc:"run command through /bin/sh -c"`
	Dir            string            `json:"dir,omitempty" desc:"working directory"`
	Env            map[string]string `json:"env,omitempty" desc:"extra environment variables"`
	InheritEnv     []string          `json:"inherit_env,omitempty" desc:"runner variables passed to the command (NAME or PREFIX_*), besides PATH, HOME, LANG, LC_*, TZ, TMPDIR and USER; resolved by the runner, never the API token's or etcd password's"`
	MaxOutputBytes int               `json:"max_output_bytes" default:"65536" minimum:"1" desc:"output bytes kept"`
}

// commandParam accepts a list of arguments, or a single string.
type commandParam []string

// JSONSchema implements sdk.JSONSchemer.
func (commandParam) JSONSchema() string {
	return `{"oneOf":[{"type":"string"},{"type":"array","items":{"type":"string"}}]}`
}

func (c *commandParam) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*c = commandParam{s}
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return errors.New("command must be a list of strings or a string")
	}
	*c = list
	return nil
}

func (p *params) validate() error {
	switch {
	case len(p.Command) == 0 || p.Command[0] == "":
		return fmt.Errorf("%w: command is required, e.g. command: [echo, hello]", sdk.ErrInvalidParams)
	case p.Shell && len(p.Command) != 1:
		return fmt.Errorf("%w: with shell: true, command must be one string", sdk.ErrInvalidParams)
	}
	for k := range p.Env {
		if k == "" || strings.ContainsAny(k, "=\x00") {
			return fmt.Errorf("%w: env: invalid variable name %q", sdk.ErrInvalidParams, k)
		}
	}
	return nil
}

func execTask(ctx context.Context, p params, resp *sdk.Response) error {
	if err := p.validate(); err != nil {
		return err
	}
	argv := []string(p.Command)
	if p.Shell {
		argv = []string{"/bin/sh", "-c", p.Command[0]}
	}

	log := sdk.Logger(ctx)
	out := newOutput(p.MaxOutputBytes, func(line string) { log.Info(line, "stream", "output") })

	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	cmd.Dir = p.Dir
	cmd.Env = environment(ctx, p)
	cmd.Stdout = out
	cmd.Stderr = out
	// A process group of its own, so cancellation reaches every descendant.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	cmd.Cancel = func() error { return syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM) }
	cmd.WaitDelay = killGrace

	start := time.Now()
	err := cmd.Run()
	// Whatever happened, make sure nothing of the group is left.
	if cmd.Process != nil {
		_ = syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
	}
	out.Flush()

	resp.Output = out.String()
	resp.Data = map[string]any{
		"exit_code":   exitCode(cmd),
		"duration_ms": time.Since(start).Milliseconds(),
		"truncated":   out.Truncated(),
	}
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return fmt.Errorf("command %q stopped: %w", argv[0], context.Cause(ctx))
	default:
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("command %q exited with status %d", argv[0], exitCode(cmd))
		}
		return fmt.Errorf("command %q could not run: %w", argv[0], err)
	}
}

func exitCode(cmd *exec.Cmd) int {
	if cmd.ProcessState == nil {
		return -1
	}
	return cmd.ProcessState.ExitCode()
}

// baseEnv names the variables of the plugin's own environment a command
// gets: the runner starts the plugin with these and little else ("LC_*": all
// starting with LC_). Not the plugin's handshake variables.
var baseEnv = []string{"PATH", "HOME", "LANG", "LC_*", "TZ", "TMPDIR", "USER"}

// environment builds the command's environment, later entries winning: the
// base variables, the runner's variables that the job's inherit_env names
// (resolved by the runner, which never includes the API token's or the etcd
// password's), the job's env, then the run's PACER_* variables.
func environment(ctx context.Context, p params) []string {
	var env []string
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		for _, b := range baseEnv {
			if prefix, ok := strings.CutSuffix(b, "*"); ok && strings.HasPrefix(name, prefix) || name == b {
				env = append(env, kv)
				break
			}
		}
	}
	info := sdk.Info(ctx)
	for k, v := range info.Env {
		env = append(env, k+"="+v)
	}
	for k, v := range p.Env {
		env = append(env, k+"="+v)
	}
	return append(env,
		"PACER_JOB_ID="+info.JobID,
		"PACER_RUN_ID="+info.RunID,
		"PACER_CORRELATION_ID="+info.CorrelationID,
		"PACER_ATTEMPT="+strconv.Itoa(info.Attempt),
		"PACER_SCHEDULED_TIME="+info.ScheduledTime.UTC().Format(time.RFC3339),
		"PACER_FENCING_TOKEN="+strconv.FormatInt(info.FencingToken, 10),
		"PACER_NODE="+info.Node,
	)
}
