/*
Package sdk is how a Pacer plugin is written: a Go program whose main calls
[Serve] with the plugin's tasks. Pacer starts the binary, talks to it over
gRPC, supervises it and stops it; the plugin sees none of protobuf,
go-plugin or etcd. docs/plugin-authoring.md in the repository walks through
one from "go mod init" to a scheduled job.

# A first plugin

A task is a function of typed params. The struct is the schema:

	type greetParams struct {
		Name     string `json:"name" desc:"who to greet"`
		Greeting string `json:"greeting" enum:"hello,hi" default:"hello"`
	}

	func greet(ctx context.Context, p greetParams, resp *sdk.Response) error {
		sdk.Logger(ctx).Info("greeting", "name", p.Name)
		resp.Output = p.Greeting + ", " + p.Name
		return nil
	}

The plugin names its tasks, and its main serves them:

	sdk.Serve(sdk.Plugin{
		Name:    "hello",
		Version: "1.0.0",
		Tasks:   map[string]sdk.Task{"greet": sdk.Typed("Greet someone.", greet)},
	})

A job then runs it every ten seconds:

	jobs:
	  - id: greet-ada
	    plugin: hello
	    task: greet
	    schedule: "@every 10s"
	    params: {name: Ada}

# Params

[Typed] derives a JSON Schema from the params struct and publishes it.
The runner checks every job's params against it when it loads its config,
so a typo fails "pacer validate" and "pacer run" with the file, line, key
and a suggestion, long before the job fires; the task checks them again
before it runs. Tags say what the struct's types cannot:

	type probeParams struct {
		URL     string        `json:"url" pattern:"^https?://" desc:"address to request"`
		Method  string        `json:"method" enum:"GET,HEAD" default:"GET"`
		Tries   int           `json:"tries" default:"1" minimum:"1" maximum:"5"`
		Timeout time.Duration `json:"timeout" default:"5s" desc:"per try"`
	}

A field is required unless it has a default, omitempty or a pointer type;
default fills in an absent key (so no pointer is needed to tell it from a
zero); minimum and maximum bound numbers; pattern and enum restrict
strings; time.Duration fields take "90s". [Typed] lists every rule. A type
that decodes itself describes its values with [JSONSchemer]; package
paramschema holds the schema language.

Params that fail the checks at run time come back as an error matching
[ErrInvalidParams], which the runner reports as a configuration problem
rather than a task failure.

# What a task gets

The context carries the run. It ends at the attempt's deadline or when the
runner cancels the run: return promptly then, or the process is killed
after plugins.cancel_grace (5 s by default) and the run is reported as
killed. [Info] is the run's identity (job, run ID, attempt, the slot's
scheduled time, the fencing token); [Logger] is a *slog.Logger whose lines
reach the runner's log tagged with the run; [ReportProgress] reports
progress; spans started from the context with otel's global tracer join the
run's trace and are exported by the runner, with no exporter to configure
in the plugin:

	ctx, span := otel.Tracer("report").Start(ctx, "render")
	sdk.ReportProgress(ctx, 50, "rendered")
	span.End()

A task returns its output in [Response] and fails by returning an error,
whose message operators see. A panic fails the run, not the plugin. Runs of
a plugin share its process and may run concurrently.

# Testing

Package sdktest serves a plugin in the test process, or starts its binary,
and calls it as the runner does, showing the result and what the task
logged, reported and traced:

	h := sdktest.Serve(&testing.T{}, plugin)
	defer h.Close()

	res := h.Run(context.Background(), sdktest.Call{Task: "greet", Params: map[string]any{"name": "Ada"}})

# The process

Nothing may write to stdout before [Serve] runs, not even an init function:
stdout carries go-plugin's handshake, and the runner refuses a plugin that
corrupts it. Once Serve runs, stray writes to stdout reach the runner's log.
The plugin exits on its own when the runner stops it or dies.

# Versions

[Version] is this SDK's version, which every plugin reports to the runner
(sdk_version in "pacer plugins -o json"). The plugin and the runner agree on the wire
protocol's version in the handshake, so a plugin built with any SDK
release speaking the same protocol runs under any such runner.
*/
package sdk
