// Command testplugin is a plugin for Pacer's own tests: each task misbehaves
// in one specific way. It is not shipped in bin/plugins.
//
//	noop    does nothing (for benchmarks)
//	echo    returns params.message; logs it; reports progress
//	sleep   sleeps params.duration (Go duration), honouring cancellation
//	hang    sleeps params.duration, ignoring cancellation
//	fail    returns an error with params.message
//	crash   exits the process mid-run
//	panic   panics inside the task
//	stdout  writes params.message to stdout, then succeeds
//	env     returns the run's identity as seen through the SDK
//	stamp   appends one JSON line per run to params.path: the job, the slot's
//	        scheduled time and the time the task started, both in Unix ns, the
//	        run ID, the attempt and the pid (for cmd/pacer's BenchmarkE2EJobs)
//	flood   logs params.count lines as fast as it can
//	big     returns an output of params.count bytes
//	bigtext reports progress, then fails, each with a text of params.count bytes
//	span    starts a child span (params.message as an attribute and in an event) through
//	        otel's global tracer, logs the message and returns it as output
//	attrs   logs params.message with params.attrs as its attributes, finishes a
//	        span with them (as text) and writes params.line to file descriptor 2,
//	        the process's stderr below the SDK (a child process's or a C
//	        library's output)
//	daemon  starts, with plain os/exec (this plugin is no subreaper), a shell that
//	        leaves a setsid'd sleep behind and exits; the sleep writes its pid to
//	        params.path and carries PACER_RUN_ID unless params.message is "anonymous";
//	        with params.message "crash" the plugin then exits (status 3)
//	secrets does nothing; its params schema (secretParams) refuses most
//	        values of params named like secrets, for the runner's check of
//	        a job's params, which must not quote them
package main

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/trace"

	"github.com/pacerun/pacer/internal/testplugins/jsonl"
	"github.com/pacerun/pacer/sdk"
)

type params struct {
	Message  string         `json:"message"`
	Duration string         `json:"duration"`
	Count    int            `json:"count"`
	Path     string         `json:"path"`
	Attrs    map[string]any `json:"attrs"`
	Line     string         `json:"line"`
}

// secretParams are the secrets task's params: keys named like secrets (and
// one that is not, and one a config's redact_keys may name) whose schema
// refuses most values, so that a params problem quotes the value.
type secretParams struct {
	DBPassword string `json:"db_password,omitempty" enum:"one,two"`
	Token      string `json:"token,omitempty" pattern:"^x$"`
	Secret     int    `json:"secret,omitempty" maximum:"5"`
	Creds      struct {
		Password string `json:"password,omitempty" pattern:"^x$"`
	} `json:"creds,omitzero"`
	Account string `json:"account,omitempty" pattern:"^x$"`
	Name    string `json:"name,omitempty" pattern:"^x$"`
}

func decode(req *sdk.Request) (params, time.Duration, error) {
	var p params
	if err := req.DecodeParams(&p); err != nil {
		return p, 0, err
	}
	var d time.Duration
	if p.Duration != "" {
		var err error
		if d, err = time.ParseDuration(p.Duration); err != nil {
			return p, 0, fmt.Errorf("%w: duration: %v", sdk.ErrInvalidParams, err)
		}
	}
	return p, d, nil
}

func task(fn func(ctx context.Context, p params, d time.Duration, resp *sdk.Response) error) sdk.Task {
	return sdk.TaskFunc(func(ctx context.Context, req *sdk.Request, resp *sdk.Response) error {
		p, d, err := decode(req)
		if err != nil {
			return err
		}
		return fn(ctx, p, d, resp)
	})
}

// stamp is the stamp task: it reads the clock first, so that the recorded
// start is as close as the plugin gets to the moment the run reached it. The
// line goes out in one write to a file opened with O_APPEND, so on a local
// Linux file system concurrent runs do not interleave and need no lock.
func stamp(ctx context.Context, req *sdk.Request, _ *sdk.Response) error {
	start := time.Now()
	p, _, err := decode(req)
	if err != nil {
		return err
	}
	if p.Path == "" {
		return fmt.Errorf("%w: path is required", sdk.ErrInvalidParams)
	}
	info := sdk.Info(ctx)
	return jsonl.Append(p.Path, struct {
		Job     string `json:"job"`
		SlotNS  int64  `json:"slot_ns"`
		StartNS int64  `json:"start_ns"`
		RunID   string `json:"run_id"`
		Attempt int    `json:"attempt"`
		PID     int    `json:"pid"`
	}{info.JobID, info.ScheduledTime.UnixNano(), start.UnixNano(), info.RunID, info.Attempt, os.Getpid()})
}

func main() {
	sdk.Serve(sdk.Plugin{
		Name:    "testplugin",
		Version: "test",
		Tasks: map[string]sdk.Task{
			"noop": sdk.TaskFunc(func(context.Context, *sdk.Request, *sdk.Response) error { return nil }),
			"echo": task(func(ctx context.Context, p params, _ time.Duration, resp *sdk.Response) error {
				sdk.Logger(ctx).Info("echo", "message", p.Message)
				sdk.ReportProgress(ctx, 100, "echoed")
				resp.Output = p.Message
				return nil
			}),
			"sleep": task(func(ctx context.Context, _ params, d time.Duration, resp *sdk.Response) error {
				select {
				case <-time.After(d):
					resp.Output = "slept " + d.String()
					return nil
				case <-ctx.Done():
					return fmt.Errorf("interrupted: %w", ctx.Err())
				}
			}),
			// deaf ignores its cancellation: it sleeps duration and
			// reports success, whatever the timeout.
			"deaf": task(func(_ context.Context, _ params, d time.Duration, resp *sdk.Response) error {
				time.Sleep(d)
				resp.Output = "slept " + d.String() + ", deaf to cancellation"
				return nil
			}),
			"hang": task(func(context.Context, params, time.Duration, *sdk.Response) error {
				time.Sleep(time.Hour)
				return nil
			}),
			"fail": task(func(_ context.Context, p params, _ time.Duration, _ *sdk.Response) error {
				return errors.New(p.Message)
			}),
			"crash": task(func(context.Context, params, time.Duration, *sdk.Response) error {
				os.Exit(3)
				return nil
			}),
			"panic": task(func(_ context.Context, p params, _ time.Duration, _ *sdk.Response) error {
				panic(p.Message)
			}),
			"stdout": task(func(_ context.Context, p params, _ time.Duration, resp *sdk.Response) error {
				fmt.Println(p.Message)
				resp.Output = "wrote to stdout"
				return nil
			}),
			"flood": task(func(ctx context.Context, p params, _ time.Duration, resp *sdk.Response) error {
				log := sdk.Logger(ctx)
				for i := range p.Count {
					log.Info("flood", "i", i)
				}
				resp.Output = fmt.Sprintf("logged %d lines", p.Count)
				return nil
			}),
			"big": task(func(_ context.Context, p params, _ time.Duration, resp *sdk.Response) error {
				resp.Output = strings.Repeat("x", p.Count)
				return nil
			}),
			"bigtext": task(func(ctx context.Context, p params, _ time.Duration, _ *sdk.Response) error {
				sdk.ReportProgress(ctx, 50, strings.Repeat("P", p.Count))
				return errors.New(strings.Repeat("E", p.Count))
			}),
			"span": task(func(ctx context.Context, p params, _ time.Duration, resp *sdk.Response) error {
				_, span := otel.Tracer("testplugin").Start(ctx, "testplugin.work")
				span.SetAttributes(attribute.String("note", p.Message))
				span.AddEvent("halfway", trace.WithAttributes(attribute.String("note", p.Message)))
				span.End()
				sdk.Logger(ctx).Info("working on: "+p.Message, "note", p.Message)
				resp.Output = p.Message
				resp.Data = map[string]any{"span_id": span.SpanContext().SpanID().String()}
				return nil
			}),
			"attrs": task(func(ctx context.Context, p params, _ time.Duration, resp *sdk.Response) error {
				keys := slices.Sorted(maps.Keys(p.Attrs))
				args := make([]any, 0, 2*len(keys))
				kvs := make([]attribute.KeyValue, 0, len(keys))
				for _, k := range keys {
					args = append(args, k, p.Attrs[k])
					kvs = append(kvs, attribute.String(k, fmt.Sprint(p.Attrs[k])))
				}
				sdk.Logger(ctx).Info(p.Message, args...)
				_, span := otel.Tracer("testplugin").Start(ctx, "testplugin.attrs", trace.WithAttributes(kvs...))
				span.End()
				if p.Line != "" {
					if _, err := syscall.Write(2, []byte(p.Line+"\n")); err != nil {
						return err
					}
				}
				resp.Output = "logged"
				return nil
			}),
			"stamp": sdk.TaskFunc(stamp),
			"secrets": sdk.Typed("refuses most values of its secret-named params",
				func(context.Context, secretParams, *sdk.Response) error { return nil }),
			"daemon": task(func(ctx context.Context, p params, _ time.Duration, resp *sdk.Response) error {
				cmd := exec.CommandContext(ctx, "/bin/sh", "-c", `setsid sh -c 'echo $$ > "$1"; exec sleep 300' sh "$1" &`, "sh", p.Path)
				cmd.Env = os.Environ()
				if p.Message != "anonymous" {
					cmd.Env = append(cmd.Env, "PACER_RUN_ID="+sdk.Info(ctx).RunID)
				}
				if err := cmd.Run(); err != nil {
					return err
				}
				for ctx.Err() == nil {
					if b, _ := os.ReadFile(p.Path); len(b) > 0 && b[len(b)-1] == '\n' {
						if p.Message == "crash" { // the plugin dies, the daemon lives on
							os.Exit(3)
						}
						resp.Output = "daemon " + strings.TrimSpace(string(b))
						return nil
					}
					time.Sleep(5 * time.Millisecond)
				}
				return ctx.Err()
			}),
			"env": task(func(ctx context.Context, _ params, _ time.Duration, resp *sdk.Response) error {
				info := sdk.Info(ctx)
				resp.Data = map[string]any{
					"job_id": info.JobID, "run_id": info.RunID, "correlation_id": info.CorrelationID,
					"attempt": info.Attempt, "scheduled_time": info.ScheduledTime.UTC().Format(time.RFC3339),
					"fencing_token": info.FencingToken, "node": info.Node, "shard": info.Shard, "pid": os.Getpid(),
					"trace_id": info.TraceID, "env": map[string]any{}, "environ": []any{},
				}
				// The task's environment from the runner, and the process's own.
				for k, v := range info.Env {
					resp.Data["env"].(map[string]any)[k] = v
				}
				for _, kv := range os.Environ() {
					resp.Data["environ"] = append(resp.Data["environ"].([]any), kv)
				}
				return nil
			}),
		},
	})
}
