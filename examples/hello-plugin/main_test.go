package main

import (
	"context"
	"strings"
	"testing"

	"go.uber.org/goleak"

	"github.com/pacerun/pacer/sdk"
	"github.com/pacerun/pacer/sdk/sdktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// In-process: fast, and the task's logs, progress and spans are visible.
func TestGreet(t *testing.T) {
	h := sdktest.Serve(t, helloPlugin())
	res := h.Run(context.Background(), sdktest.Call{
		Task:   "greet",
		Params: map[string]any{"name": "Ada", "greeting": "hi"},
		Info:   sdk.RunInfo{Attempt: 2},
	})
	if res.Err != nil {
		t.Fatal(res.Err)
	}
	if res.Output != "hi, Ada" || res.Data["greeted"] != "Ada" {
		t.Fatalf("output %q, data %v", res.Output, res.Data)
	}
	if len(res.Logs) != 1 || res.Logs[0].Message != "greeting" || res.Logs[0].Attrs["attempt"] != float64(2) {
		t.Fatalf("logs = %+v", res.Logs)
	}
	if len(res.Progress) != 1 || res.Progress[0].Percent != 100 {
		t.Fatalf("progress = %+v", res.Progress)
	}
	if len(res.Spans) != 1 || res.Spans[0].Name != "compose greeting" {
		t.Fatalf("spans = %+v", res.Spans)
	}
}

// The runner refuses bad params when it loads the config; CheckParams shows
// what it would say.
func TestGreetParams(t *testing.T) {
	h := sdktest.Serve(t, helloPlugin())
	errs := h.CheckParams("greet", map[string]any{"nme": "Ada", "greeting": "yo"})
	got := make([]string, len(errs))
	for i, e := range errs {
		got[i] = e.Error()
	}
	all := strings.Join(got, "\n")
	for _, want := range []string{`missing required key "name"`, `unknown key "nme" (did you mean "name"?)`, `params.greeting: must be one of`} {
		if !strings.Contains(all, want) {
			t.Errorf("problems lack %q:\n%s", want, all)
		}
	}
	// The task refuses them too, if they get that far.
	if res := h.Run(context.Background(), sdktest.Call{Task: "greet", Params: map[string]any{}}); res.Err == nil {
		t.Fatal("greet ran without a name")
	}
}

// As a binary, exactly as Pacer runs it.
func TestGreetBinary(t *testing.T) {
	t.Parallel()
	bin := sdktest.Build(t, t.TempDir(), "github.com/pacerun/pacer/examples/hello-plugin")
	h := sdktest.Start(t, bin)
	if h.Name() != "hello-plugin" || h.Version() != "1.0.0" {
		t.Fatalf("plugin reports %s %s", h.Name(), h.Version())
	}
	res := h.Run(context.Background(), sdktest.Call{Task: "greet", Params: map[string]any{"name": "Grace"}})
	if res.Err != nil || res.Output != "hello, Grace" || len(res.Spans) != 1 {
		t.Fatalf("err %v, output %q, %d spans", res.Err, res.Output, len(res.Spans))
	}
}
