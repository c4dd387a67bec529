package sdk_test

import (
	"context"
	"fmt"

	"github.com/pacerun/pacer/sdk"
)

// Without Typed, a task decodes its params itself and publishes no schema:
// the runner then accepts any params, and the task alone checks them.
func ExampleDescribe() {
	task := sdk.Describe("Sleeps, then says so.", func(ctx context.Context, req *sdk.Request, resp *sdk.Response) error {
		var p struct {
			Seconds int `json:"seconds"`
		}
		if err := req.DecodeParams(&p); err != nil {
			return err // wraps sdk.ErrInvalidParams
		}
		resp.Output = fmt.Sprintf("slept %ds", p.Seconds)
		return nil
	})
	var resp sdk.Response
	fmt.Println(task.Run(context.Background(), &sdk.Request{Params: map[string]any{"seconds": 0}}, &resp), resp.Output)
	fmt.Println(task.Run(context.Background(), &sdk.Request{Params: map[string]any{"secs": 1}}, &resp))
	// Output:
	// <nil> slept 0s
	// invalid params: json: unknown field "secs"
}
