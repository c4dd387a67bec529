package sdktest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pacerun/pacer/sdk"
	"github.com/pacerun/pacer/sdk/sdktest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type echoParams struct {
	Text string `json:"text" pattern:"^[a-z ]+$"`
}

func echoPlugin() sdk.Plugin {
	return sdk.Plugin{Name: "echo", Version: "0.0.1", Tasks: map[string]sdk.Task{
		"echo": sdk.Typed("Echo the text.", func(_ context.Context, p echoParams, resp *sdk.Response) error {
			resp.Output = p.Text
			return nil
		}),
		"block": sdk.TaskFunc(func(ctx context.Context, _ *sdk.Request, _ *sdk.Response) error {
			<-ctx.Done()
			return context.Cause(ctx)
		}),
	}}
}

// Params a task refuses at run time come back as sdk.ErrInvalidParams, in
// process and from a binary alike, and an unknown task as ErrTaskNotFound.
func TestCallErrors(t *testing.T) {
	bin := sdktest.Build(t, t.TempDir(), "./testdata/echo")
	for name, h := range map[string]*sdktest.Harness{
		"Serve": sdktest.Serve(t, echoPlugin()),
		"Start": sdktest.Start(t, bin),
	} {
		t.Run(name, func(t *testing.T) {
			res := h.Run(context.Background(), sdktest.Call{Task: "echo", Params: map[string]any{"text": "Shouting"}})
			if !errors.Is(res.Err, sdk.ErrInvalidParams) {
				t.Errorf("bad params: err = %v, want it to match sdk.ErrInvalidParams", res.Err)
			}
			if want := `invalid params: params.text: must match the pattern ^[a-z ]+$; got "Shouting"`; res.Err == nil || res.Err.Error() != want {
				t.Errorf("bad params: err = %v, want %s", res.Err, want)
			}
			res = h.Run(context.Background(), sdktest.Call{Task: "ehco"})
			if !errors.Is(res.Err, sdktest.ErrTaskNotFound) {
				t.Errorf("unknown task: err = %v, want it to match ErrTaskNotFound", res.Err)
			}
			res = h.Run(context.Background(), sdktest.Call{Task: "echo", Params: map[string]any{"text": "quiet"}})
			if res.Err != nil || res.Output != "quiet" {
				t.Errorf("good params: %q, %v", res.Output, res.Err)
			}
		})
	}
}

// Close stops an in-process plugin at once, cancelling its running tasks,
// and frees the way for the next in-process harness.
func TestCloseCancelsRunningTasks(t *testing.T) {
	h := sdktest.Serve(t, echoPlugin())
	done := make(chan *sdktest.Result)
	go func() { done <- h.Run(context.Background(), sdktest.Call{Task: "block"}) }()
	// The task is running once the plugin holds its stream; Close must end
	// it either way.
	h.Close()
	select {
	case res := <-done:
		if res.Err == nil {
			t.Fatal("a cancelled task reported success")
		}
	case <-time.After(30 * time.Second):
		t.Fatal("Close left the call hanging")
	}
	h.Close() // idempotent
	h2 := sdktest.Serve(t, echoPlugin())
	if res := h2.Run(context.Background(), sdktest.Call{Task: "echo", Params: map[string]any{"text": "again"}}); res.Output != "again" {
		t.Fatalf("second harness: %+v", res)
	}
}

// "go test -v" of a plugin shows the test's output and nothing else: no
// go-plugin DEBUG lines from the harness. The test runs itself as a child
// test binary to see everything it writes.
func TestQuietHarness(t *testing.T) {
	if os.Getenv("SDKTEST_QUIET_CHILD") == "1" {
		h := sdktest.Serve(t, echoPlugin())
		h.Run(context.Background(), sdktest.Call{Task: "echo", Params: map[string]any{"text": "hi"}})
		h.Run(context.Background(), sdktest.Call{Task: "echo", Params: map[string]any{"text": "Hi"}})
		h.Close()
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestQuietHarness$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "SDKTEST_QUIET_CHILD=1")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child test: %v\n%s", err, out)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		switch {
		case strings.HasPrefix(line, "=== RUN"), strings.HasPrefix(line, "--- PASS"), line == "PASS":
		default:
			t.Errorf("the harness printed %q; the whole output:\n%s", line, out)
		}
	}
}

// sdk.Info carries every field of the run's identity across the wire, the
// shard and the fencing token among them.
func TestInfoCrossesTheWire(t *testing.T) {
	h := sdktest.Serve(t, sdk.Plugin{Name: "info", Version: "0.0.1", Tasks: map[string]sdk.Task{
		"info": sdk.TaskFunc(func(ctx context.Context, _ *sdk.Request, resp *sdk.Response) error {
			i := sdk.Info(ctx)
			resp.Output = fmt.Sprintf("%s %s %s %d %s %d %d %s", i.JobID, i.RunID, i.CorrelationID, i.Attempt,
				i.ScheduledTime.UTC().Format(time.RFC3339), i.FencingToken, i.Shard, i.Node)
			return nil
		}),
	}})
	slot := time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)
	res := h.Run(context.Background(), sdktest.Call{Task: "info", Info: sdk.RunInfo{
		JobID: "j", RunID: "r", CorrelationID: "c", Attempt: 2, ScheduledTime: slot, FencingToken: 77, Shard: 13, Node: "n1",
	}})
	if want := "j r c 2 2030-01-02T03:04:05Z 77 13 n1"; res.Err != nil || res.Output != want {
		t.Fatalf("output %q, err %v; want %q", res.Output, res.Err, want)
	}
}

// Start gives the plugin process the runner's minimal environment, not the
// test's: a variable of the test's environment reaches it only when
// InheritEnv names it or Env sets it, as plugins.inherit_env would, and a
// job's variable only through the run's (Call.Info.Env).
func TestStartGivesTheRunnersEnvironment(t *testing.T) {
	t.Setenv("SDKTEST_DB_URL", "postgres://db.internal/app")
	t.Setenv("SDKTEST_OTHER", "x")
	t.Setenv("LC_TIME", "C")
	bin := sdktest.Build(t, t.TempDir(), "./testdata/echo")
	getenv := func(h *sdktest.Harness, name string, env map[string]string) string {
		t.Helper()
		res := h.Run(context.Background(), sdktest.Call{Task: "getenv", Params: map[string]any{"name": name}, Info: sdk.RunInfo{Env: env}})
		if res.Err != nil {
			t.Fatalf("getenv %s: %v", name, res.Err)
		}
		return res.Output
	}

	h := sdktest.Start(t, bin)
	for name, want := range map[string]string{
		"SDKTEST_DB_URL": "process=- run=-",
		"LC_TIME":        "process=C run=-",
		"PATH":           "process=" + os.Getenv("PATH") + " run=-",
	} {
		if got := getenv(h, name, nil); got != want {
			t.Errorf("Start: %s: %s, want %s", name, got, want)
		}
	}
	if got, want := getenv(h, "SDKTEST_DB_URL", map[string]string{"SDKTEST_DB_URL": "from-job"}), "process=- run=from-job"; got != want {
		t.Errorf("Start, the job's variable: %s, want %s", got, want)
	}

	h = sdktest.StartWith(t, bin, sdktest.StartOptions{InheritEnv: []string{"SDKTEST_DB_*"}, Env: []string{"SDKTEST_SET=y"}})
	for name, want := range map[string]string{
		"SDKTEST_DB_URL": "process=postgres://db.internal/app run=-",
		"SDKTEST_SET":    "process=y run=-",
		"SDKTEST_OTHER":  "process=- run=-",
	} {
		if got := getenv(h, name, nil); got != want {
			t.Errorf("StartWith: %s: %s, want %s", name, got, want)
		}
	}
}
