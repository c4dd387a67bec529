package main

import (
	"errors"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/pacerun/pacer/sdk"
	"github.com/pacerun/pacer/sdk/sdktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestGreet(t *testing.T) {
	h := sdktest.Serve(t, helloPlugin()) // in this process, over real gRPC
	res := h.Run(t.Context(), sdktest.Call{Task: "greet", Params: map[string]any{"name": "Ada"}})
	if res.Err != nil || res.Output != "hello, Ada!" {
		t.Fatalf("got %q, %v", res.Output, res.Err)
	}
	// What the task reported on the way.
	if len(res.Logs) != 1 || len(res.Progress) != 1 || len(res.Spans) != 1 {
		t.Fatalf("logs %v, progress %v, spans %v", res.Logs, res.Progress, res.Spans)
	}
	res = h.Run(t.Context(), sdktest.Call{
		Task:   "greet",
		Params: map[string]any{"name": "Ada", "greeting": "hi", "times": 3},
		Info:   sdk.RunInfo{Attempt: 2}, // the run identity sdk.Info reports
	})
	if res.Output != "hi, Ada! hi, Ada! hi, Ada!" || res.Logs[0].Attrs["attempt"] != float64(2) {
		t.Fatalf("got %q, logs %v", res.Output, res.Logs)
	}
}

func TestGreetParams(t *testing.T) {
	h := sdktest.Serve(t, helloPlugin())
	// What the runner says about a job's params when it loads its config.
	var problems []string
	for _, err := range h.CheckParams("greet", map[string]any{"nme": "Ada", "times": 5}) {
		problems = append(problems, err.Error())
	}
	want := []string{
		`params: missing required key "name"`,
		`params.nme: unknown key "nme" (did you mean "name"?)`,
		`params.times: must be <= 3, got 5`,
	}
	if strings.Join(problems, "\n") != strings.Join(want, "\n") {
		t.Fatalf("got %q", problems)
	}
	// The task refuses them too, should they reach it.
	res := h.Run(t.Context(), sdktest.Call{Task: "greet", Params: map[string]any{"name": "Ada", "times": 0}})
	if !errors.Is(res.Err, sdk.ErrInvalidParams) {
		t.Fatalf("got %v", res.Err)
	}
}

func TestGreetBinary(t *testing.T) {
	t.Parallel()
	bin := sdktest.Build(t, t.TempDir(), ".") // this package, as a plugin binary
	h := sdktest.Start(t, bin)                // started as Pacer starts it
	res := h.Run(t.Context(), sdktest.Call{Task: "greet", Params: map[string]any{"name": "Grace"}})
	if res.Err != nil || res.Output != "hello, Grace!" || len(res.Spans) != 1 {
		t.Fatalf("got %q, %v, spans %v", res.Output, res.Err, res.Spans)
	}
}
