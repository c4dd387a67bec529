// Command echo is a plugin for sdktest's own tests: task "echo" returns its
// text, which must be lower case; task "getenv" returns the value of the
// variable params.name in the process's environment and in the run's
// (sdk.Info(ctx).Env), each "-" when unset.
package main

import (
	"context"
	"os"

	"github.com/pacerun/pacer/sdk"
)

type echoParams struct {
	Text string `json:"text" pattern:"^[a-z ]+$"`
}

type getenvParams struct {
	Name string `json:"name"`
}

func orDash(v string, ok bool) string {
	if !ok {
		return "-"
	}
	return v
}

func main() {
	sdk.Serve(sdk.Plugin{Name: "echo", Version: "0.0.1", Tasks: map[string]sdk.Task{
		"echo": sdk.Typed("Echo the text.", func(_ context.Context, p echoParams, resp *sdk.Response) error {
			resp.Output = p.Text
			return nil
		}),
		"getenv": sdk.Typed("Report a variable.", func(ctx context.Context, p getenvParams, resp *sdk.Response) error {
			v, ok := os.LookupEnv(p.Name)
			w, wok := sdk.Info(ctx).Env[p.Name]
			resp.Output = "process=" + orDash(v, ok) + " run=" + orDash(w, wok)
			return nil
		}),
	}})
}
