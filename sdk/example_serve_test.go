package sdk_test

import "github.com/pacerun/pacer/sdk"

// A plugin's main function. Serve does not return: the plugin exits when the
// runner stops it or goes away.
func ExampleServe() {
	sdk.Serve(sdk.Plugin{
		Name:    "hello",
		Version: "1.0.0",
		Tasks:   map[string]sdk.Task{"greet": sdk.Typed("Greet someone.", greet)},
	})
}
