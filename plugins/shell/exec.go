package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/pacerun/pacer/internal/pluginenv"
	"github.com/pacerun/pacer/sdk"
	"github.com/pacerun/pacer/sdk/proctree"
)

// killGrace is how long the command's process tree gets between SIGTERM and
// SIGKILL when the run is cancelled or times out.
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

	// proctree runs the command in a process group of its own, keeps every
	// process it starts (setsid and daemons included) below this plugin,
	// and returns when none of them is left.
	cmd := proctree.Command(ctx, argv[0], argv[1:]...)
	cmd.Dir = p.Dir
	cmd.Env = environment(ctx, p)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Grace = killGrace

	start := time.Now()
	res, err := cmd.Run()
	if res == nil {
		out.Flush()
		resp.Output = out.String()
		resp.Data = map[string]any{"exit_code": -1, "duration_ms": time.Since(start).Milliseconds(), "truncated": out.Truncated()}
		if ctx.Err() != nil {
			return fmt.Errorf("command %q not started: %w", argv[0], context.Cause(ctx))
		}
		if why := dirProblem(p.Dir); why != "" {
			// exec blames the command for a working directory it cannot
			// enter ("fork/exec /usr/bin/echo: no such file or directory").
			return fmt.Errorf("command %q could not run: its working directory (dir) %q %s", argv[0], p.Dir, why)
		}
		return fmt.Errorf("command %q could not run: %w", argv[0], err)
	}
	if len(res.Leftovers) > 0 && !res.Stopped {
		out.Note(fmt.Sprintf("[the command exited, leaving %s running; killed: pids %s]",
			plural(len(res.Leftovers), "process", "processes"), joinInts(res.Leftovers)))
	}
	out.Flush()

	resp.Output = out.String()
	resp.Data = map[string]any{
		"exit_code":   res.ExitCode,
		"duration_ms": time.Since(start).Milliseconds(),
		"truncated":   out.Truncated(),
	}
	if len(res.Leftovers) > 0 {
		resp.Data["leftover_processes"] = len(res.Leftovers)
	}
	var failed error
	switch {
	case res.Stopped:
		failed = fmt.Errorf("command %q stopped: %w", argv[0], context.Cause(ctx))
	case res.ExitCode < 0:
		failed = fmt.Errorf("command %q ended by %s", argv[0], res.State)
	case res.ExitCode > 0:
		failed = fmt.Errorf("command %q exited with status %d", argv[0], res.ExitCode)
	}
	if err != nil { // processes of the tree could not be confirmed dead
		if failed == nil {
			return fmt.Errorf("command %q exited with status 0, but %w", argv[0], err)
		}
		return fmt.Errorf("%w; %w", failed, err)
	}
	return failed
}

// dirProblem says what is wrong with dir as a working directory, or "".
func dirProblem(dir string) string {
	if dir == "" {
		return ""
	}
	info, err := os.Stat(dir)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "does not exist"
	case err != nil:
		return "cannot be used: " + err.Error()
	case !info.IsDir():
		return "is not a directory"
	}
	return ""
}

func plural(n int, one, many string) string {
	if n == 1 {
		return "1 " + one
	}
	return strconv.Itoa(n) + " " + many
}

func joinInts(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, ", ")
}

// environment builds the command's environment, later entries winning: the
// plugin's own variables of the runner's base set (pluginenv.Base: the
// runner starts the plugin with these and little else; not its handshake
// variables), the runner's variables that the job's inherit_env names
// (resolved by the runner, which never includes the API token's or the etcd
// password's), the job's env, then the run's PACER_* variables.
func environment(ctx context.Context, p params) []string {
	env := pluginenv.Select(os.Environ(), pluginenv.Base(), nil)
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
		// RFC 3339 with the fraction of a second when there is one (a
		// manual run's time is the request's, to the millisecond): a
		// manual run and the slot of the same second must not look alike
		// to a command that deduplicates on it. A whole-second slot reads
		// as before.
		"PACER_SCHEDULED_TIME="+info.ScheduledTime.UTC().Format(time.RFC3339Nano),
		"PACER_FENCING_TOKEN="+strconv.FormatInt(info.FencingToken, 10),
		"PACER_NODE="+info.Node,
		"PACER_SHARD="+strconv.Itoa(info.Shard),
	)
}
