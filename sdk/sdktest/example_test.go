package sdktest_test

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/pacerun/pacer/sdk"
	"github.com/pacerun/pacer/sdk/sdktest"
)

type countParams struct {
	To int `json:"to" minimum:"1" maximum:"10" default:"3"`
}

func count(ctx context.Context, p countParams, resp *sdk.Response) error {
	for i := 1; i <= p.To; i++ {
		sdk.ReportProgress(ctx, float64(100*i/p.To), fmt.Sprint(i))
	}
	sdk.Logger(ctx).Info("counted", "to", p.To)
	resp.Output = fmt.Sprint("counted to ", p.To)
	return nil
}

func counter() sdk.Plugin {
	return sdk.Plugin{Name: "counter", Version: "1.2.0", Tasks: map[string]sdk.Task{
		"count": sdk.Typed("Counts up.", count),
	}}
}

// In a test, pass the test's t; this example passes a bare &testing.T{}, so
// it closes the harness itself.
func ExampleServe() {
	h := sdktest.Serve(&testing.T{}, counter())
	defer h.Close()

	res := h.Run(context.Background(), sdktest.Call{Task: "count"})
	fmt.Println(res.Output, res.Err)
	fmt.Println(res.Progress)
	fmt.Println(res.Logs[0].Message, res.Logs[0].Attrs)
	// Output:
	// counted to 3 <nil>
	// [{33 1} {66 2} {100 3}]
	// counted map[to:3]
}

// CheckParams says what the runner says about a job's params when it loads
// its config, and Run what the task says if they reach it anyway.
func ExampleHarness_CheckParams() {
	h := sdktest.Serve(&testing.T{}, counter())
	defer h.Close()

	for _, err := range h.CheckParams("count", map[string]any{"to": 11, "from": 1}) {
		fmt.Println(err)
	}
	res := h.Run(context.Background(), sdktest.Call{Task: "count", Params: map[string]any{"to": 0}})
	fmt.Println(errors.Is(res.Err, sdk.ErrInvalidParams), res.Err)
	// Output:
	// params.from: unknown key "from"
	// params.to: must be <= 10, got 11
	// true invalid params: params.to: must be >= 1, got 0
}

// Tasks lists what the plugin tells the runner about itself.
func ExampleHarness_Tasks() {
	h := sdktest.Serve(&testing.T{}, counter())
	defer h.Close()

	fmt.Println(h.Name(), h.Version())
	for _, task := range h.Tasks() {
		fmt.Println(task.Name, task.Description, task.ParamsSchema)
	}
	// Output:
	// counter 1.2.0
	// count Counts up. {"type":"object","properties":{"to":{"type":"integer","minimum":1,"maximum":10,"default":3}},"additionalProperties":false}
}

// Start runs the plugin binary as the runner does. A test of the plugin's
// own main package builds it from ".". (Not run here: it compiles a binary.)
func ExampleStart() {
	t := &testing.T{}
	bin := sdktest.Build(t, t.TempDir(), ".")
	h := sdktest.Start(t, bin)
	defer h.Close()

	res := h.Run(context.Background(), sdktest.Call{Task: "count", Params: map[string]any{"to": 2}})
	fmt.Println(res.Output, res.Err)
}
