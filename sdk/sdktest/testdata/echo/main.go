// Command echo is a plugin for sdktest's own tests: task "echo" returns its
// text, which must be lower case.
package main

import (
	"context"

	"github.com/pacerun/pacer/sdk"
)

type echoParams struct {
	Text string `json:"text" pattern:"^[a-z ]+$"`
}

func main() {
	sdk.Serve(sdk.Plugin{Name: "echo", Version: "0.0.1", Tasks: map[string]sdk.Task{
		"echo": sdk.Typed("Echo the text.", func(_ context.Context, p echoParams, resp *sdk.Response) error {
			resp.Output = p.Text
			return nil
		}),
	}})
}
