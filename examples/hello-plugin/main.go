// Command hello-plugin is the plugin built in docs/plugin-authoring.md, which
// quotes it: a test checks that every Go snippet there is a piece of this
// file or of main_test.go.
package main

import (
	"context"
	"strings"

	"go.opentelemetry.io/otel"

	"github.com/pacerun/pacer/sdk"
)

type greetParams struct {
	Name     string `json:"name" desc:"who to greet"`
	Greeting string `json:"greeting" enum:"hello,hi,good morning" default:"hello"`
	Times    int    `json:"times" default:"1" minimum:"1" maximum:"3" desc:"how many times to say it"`
}

func greet(ctx context.Context, p greetParams, resp *sdk.Response) error {
	_, span := otel.Tracer("hello-plugin").Start(ctx, "compose greeting")
	defer span.End()

	info := sdk.Info(ctx)
	sdk.Logger(ctx).Info("greeting", "name", p.Name, "attempt", info.Attempt)
	sdk.ReportProgress(ctx, 100, "greeted")
	resp.Output = strings.TrimSpace(strings.Repeat(p.Greeting+", "+p.Name+"! ", p.Times))
	resp.Data = map[string]any{"greeted": p.Name, "slot": info.ScheduledTime.Unix()}
	return nil
}

func helloPlugin() sdk.Plugin {
	return sdk.Plugin{
		Name:    "hello-plugin",
		Version: "1.0.0",
		Tasks:   map[string]sdk.Task{"greet": sdk.Typed("Greet someone by name.", greet)},
	}
}

func main() { sdk.Serve(helloPlugin()) }
