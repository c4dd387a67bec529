package sdk_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/pacerun/pacer/sdk"
	"github.com/pacerun/pacer/sdk/sdktest"
)

type greetParams struct {
	Name     string `json:"name" desc:"who to greet"`
	Greeting string `json:"greeting" enum:"hello,hi" default:"hello"`
}

func greet(ctx context.Context, p greetParams, resp *sdk.Response) error {
	sdk.Logger(ctx).Info("greeting", "name", p.Name)
	resp.Output = p.Greeting + ", " + p.Name
	return nil
}

// A whole plugin: one task with typed params, served in this process and
// called the way the runner calls it.
func Example() {
	plugin := sdk.Plugin{
		Name:    "hello",
		Version: "1.0.0",
		Tasks:   map[string]sdk.Task{"greet": sdk.Typed("Greet someone.", greet)},
	}

	// A plugin's main calls sdk.Serve(plugin). A test serves it with
	// package sdktest instead, passing its own t.
	h := sdktest.Serve(&testing.T{}, plugin)
	defer h.Close()

	res := h.Run(context.Background(), sdktest.Call{Task: "greet", Params: map[string]any{"name": "Ada"}})
	fmt.Println(res.Output, res.Err)
	fmt.Println(res.Logs[0].Message, res.Logs[0].Attrs["name"])
	// Output:
	// hello, Ada <nil>
	// greeting Ada
}
