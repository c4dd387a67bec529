package sdk_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/pacerun/pacer/sdk"
)

// argv is a command as a list of arguments, or as one string split at
// spaces. Its own UnmarshalJSON accepts both, and JSONSchema tells the runner
// so.
type argv []string

func (a *argv) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err == nil {
		*a = strings.Fields(s)
		return nil
	}
	var list []string
	if err := json.Unmarshal(b, &list); err != nil {
		return errors.New("command must be a string or a list of strings")
	}
	*a = list
	return nil
}

func (argv) JSONSchema() string {
	return `{"oneOf":[{"type":"string"},{"type":"array","items":{"type":"string"}}]}`
}

func ExampleJSONSchemer() {
	type runParams struct {
		Command argv `json:"command"`
	}
	task := sdk.Typed("Runs a command.", func(ctx context.Context, p runParams, resp *sdk.Response) error {
		resp.Output = fmt.Sprintf("%q", []string(p.Command))
		return nil
	})
	for _, command := range []any{"ls -l", []any{"ls", "-l"}, 42} {
		var resp sdk.Response
		if err := task.Run(context.Background(), &sdk.Request{Params: map[string]any{"command": command}}, &resp); err != nil {
			fmt.Println(err)
			continue
		}
		fmt.Println(resp.Output)
	}
	// Output:
	// ["ls" "-l"]
	// ["ls" "-l"]
	// invalid params: params.command: expected string or array of strings, got number
}
