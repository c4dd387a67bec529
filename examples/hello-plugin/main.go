// Command hello-plugin is the plugin built in docs/plugin-authoring.md.
package main

import (
	"context"
	"fmt"

	"go.opentelemetry.io/otel"

	"github.com/pacerun/pacer/sdk"
)

// greetParams are the "greet" task's params. The runner checks each job's
// params against a schema derived from this struct when it loads its config.
type greetParams struct {
	Name     string `json:"name" desc:"who to greet"`
	Greeting string `json:"greeting,omitempty" enum:"hello,hi,good morning" desc:"default hello"`
}

func greet(ctx context.Context, p greetParams, resp *sdk.Response) error {
	if p.Greeting == "" {
		p.Greeting = "hello"
	}
	// Spans need no setup: they join the run's trace in the runner.
	_, span := otel.Tracer("hello-plugin").Start(ctx, "compose greeting")
	defer span.End()

	info := sdk.Info(ctx)
	sdk.Logger(ctx).Info("greeting", "name", p.Name, "attempt", info.Attempt)
	sdk.ReportProgress(ctx, 100, "greeted")
	resp.Output = fmt.Sprintf("%s, %s", p.Greeting, p.Name)
	resp.Data = map[string]any{"greeted": p.Name, "slot": info.ScheduledTime.Unix()}
	return nil
}

// helloPlugin is the plugin, as a value: main serves it, tests run it.
func helloPlugin() sdk.Plugin {
	return sdk.Plugin{
		Name:    "hello-plugin",
		Version: "1.0.0",
		Tasks: map[string]sdk.Task{
			"greet": sdk.Typed("Greet someone by name.", greet),
		},
	}
}

func main() { sdk.Serve(helloPlugin()) }
