package sdk_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/pacerun/pacer/sdk"
)

type probeParams struct {
	URL     string        `json:"url" pattern:"^https?://" desc:"address to request"`
	Method  string        `json:"method" enum:"GET,HEAD" default:"GET"`
	Tries   int           `json:"tries" default:"1" minimum:"1" maximum:"5"`
	Timeout time.Duration `json:"timeout" default:"5s" desc:"per try"`
}

// The struct is the schema: the runner checks every job's params against
// it when it loads its config, and the task checks them again before it
// runs, with the defaults filled in.
func ExampleTyped() {
	probe := sdk.Typed("Checks that a URL answers.",
		func(ctx context.Context, p probeParams, resp *sdk.Response) error {
			resp.Output = fmt.Sprintf("%s %s, %d tries of %v", p.Method, p.URL, p.Tries, p.Timeout)
			return nil
		})

	// The schema the plugin publishes.
	var schema bytes.Buffer
	_ = json.Indent(&schema, []byte(probe.(sdk.Describer).Describe().ParamsSchema), "", "  ")
	fmt.Println(schema.String())

	// Good params, defaults filled in.
	var resp sdk.Response
	err := probe.Run(context.Background(), &sdk.Request{Params: map[string]any{"url": "https://example.com/health"}}, &resp)
	fmt.Println(resp.Output, err)

	// Bad params: every problem at once.
	err = probe.Run(context.Background(), &sdk.Request{Params: map[string]any{
		"ulr": "https://example.com/health", "tries": 9, "timeout": "5 seconds",
	}}, &resp)
	fmt.Println(errors.Is(err, sdk.ErrInvalidParams))
	for _, problem := range strings.Split(strings.TrimPrefix(err.Error(), "invalid params: "), "; ") {
		fmt.Println(problem)
	}
	// Output:
	// {
	//   "type": "object",
	//   "properties": {
	//     "method": {
	//       "type": "string",
	//       "enum": [
	//         "GET",
	//         "HEAD"
	//       ],
	//       "default": "GET"
	//     },
	//     "timeout": {
	//       "type": "string",
	//       "description": "per try",
	//       "format": "duration",
	//       "default": "5s"
	//     },
	//     "tries": {
	//       "type": "integer",
	//       "minimum": 1,
	//       "maximum": 5,
	//       "default": 1
	//     },
	//     "url": {
	//       "type": "string",
	//       "description": "address to request",
	//       "pattern": "^https?://"
	//     }
	//   },
	//   "required": [
	//     "url"
	//   ],
	//   "additionalProperties": false
	// }
	// GET https://example.com/health, 1 tries of 5s <nil>
	// true
	// params: missing required key "url"
	// params.timeout: invalid duration "5 seconds"
	// params.tries: must be <= 5, got 9
	// params.ulr: unknown key "ulr" (did you mean "url"?)
}
