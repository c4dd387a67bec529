package pluginhost_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner/pluginhost"
)

func shellCall(script string) pluginhost.Call {
	c := call("exec", map[string]any{"command": script, "shell": true})
	c.Plugin = "shell"
	return c
}

// pidsIn waits until path holds n pids, one a line.
func pidsIn(t *testing.T, path string, n int) []int {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		b, _ := os.ReadFile(path)
		f := strings.Fields(string(b))
		if len(f) >= n && strings.HasSuffix(string(b), "\n") {
			pids := make([]int, len(f))
			for i, s := range f {
				pids[i], _ = strconv.Atoi(s)
			}
			return pids
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s holds %q, want %d pids", path, b, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// A command that exits 0 while a background child still holds its stdout
// succeeds by its exit status; the child is killed and the output says so.
// (The shell plugin used to wait 2 s for the pipe and then report
// "could not run: exec: WaitDelay expired before I/O complete".)
func TestShellExitStatusWinsOverABackgroundChildHoldingStdout(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{})
	pidFile := filepath.Join(t.TempDir(), "pid")
	res, err := b.host.Run(context.Background(), shellCall("echo hello; sleep 300 & echo $! > "+pidFile+"; exit 0"))
	if err != nil {
		t.Fatal(err)
	}
	bg := pidsIn(t, pidFile, 1)[0]
	if res.TaskError != "" || res.Data["exit_code"] != float64(0) || res.Data["leftover_processes"] != float64(1) {
		t.Fatalf("result %+v: want success, exit code 0, one leftover", res)
	}
	if want := fmt.Sprintf("hello\n[the command exited, leaving 1 process running; killed: pids %d]", bg); res.Output != want {
		t.Fatalf("output %q, want %q", res.Output, want)
	}
	if alive(bg) {
		t.Fatalf("background child %d survived the run", bg)
	}
}

// Processes that left the command's process group (setsid) or its ancestry
// (a daemon's double fork) end with the run too: when the command exits,
// and when the run is cancelled. The old process-group kill missed them.
func TestShellEndsSetsidAndDaemonisedDescendants(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{})
	for _, cancel := range []bool{false, true} {
		t.Run(fmt.Sprintf("cancel=%v", cancel), func(t *testing.T) {
			pidFile := filepath.Join(t.TempDir(), "pids")
			script := `: > ` + pidFile + `
setsid sh -c 'echo $$ >> ` + pidFile + `; exec sleep 300' &
(setsid sh -c 'echo $$ >> ` + pidFile + `; sleep 300' &)
while [ "$(wc -l < ` + pidFile + `)" != 2 ]; do sleep 0.01; done
`
			if cancel {
				script += "sleep 300\n"
			}
			ctx, stop := context.WithCancel(context.Background())
			defer stop()
			type ran struct {
				res *pluginhost.Result
				err error
			}
			done := make(chan ran, 1)
			go func() { r, err := b.host.Run(ctx, shellCall(script)); done <- ran{r, err} }()
			pids := pidsIn(t, pidFile, 2)
			if cancel {
				stop()
			}
			r := <-done
			if r.err != nil {
				t.Fatal(r.err)
			}
			if cancel != strings.Contains(r.res.TaskError, "stopped") {
				t.Fatalf("task error %q", r.res.TaskError)
			}
			for _, pid := range pids {
				if alive(pid) {
					t.Errorf("process %d of the run is alive after the run ended (%+v)", pid, r.res)
				}
			}
		})
	}
}

// A cut output says how many bytes were cut: all of them, not the length
// of the note. (It used to say "[output truncated]", and the runner, cutting
// that note off, recorded "[truncated 19 bytes]" for 5 MB.) The output is
// lines, so the cut falls between words and keeps all 1,000 bytes.
func TestShellTruncationNoteCountsTheBytesCut(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{})
	c := call("exec", map[string]any{"command": []any{"sh", "-c", "yes xxxx | head -c 5000000"}, "max_output_bytes": 1000})
	c.Plugin = "shell"
	res, err := b.host.Run(context.Background(), c)
	if err != nil || res.TaskError != "" {
		t.Fatalf("err %v, result %+v", err, res)
	}
	if want := strings.Repeat("xxxx\n", 200) + "\n[truncated 4999000 bytes]"; res.Output != want {
		t.Fatalf("output ends %q, want %q", res.Output[max(0, len(res.Output)-40):], want[len(want)-40:])
	}
}

// Output that is not UTF-8 (a byte 0xff, Latin-1 text) arrives with its
// bad bytes replaced by U+FFFD, and the command's exit status decides the
// run. (It used to fail the call: "grpc: error while marshaling: string
// field contains invalid UTF-8", losing output and exit status.)
func TestShellOutputThatIsNotUTF8ArrivesReplaced(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr transport) {
		b := setup(t, tr.opts(pluginhost.Options{}))
		var mu sync.Mutex
		var logs []string
		c := shellCall(`printf '\377\n'; printf 'caf\351 cr\350me\n' >&2; exit 3`)
		c.OnLog = func(r pluginhost.LogRecord) { mu.Lock(); logs = append(logs, r.Message); mu.Unlock() }
		res, err := b.host.Run(context.Background(), c)
		if err != nil {
			t.Fatalf("the run failed instead of reporting its command's outcome: %v", err)
		}
		if res.Data["exit_code"] != float64(3) || !strings.Contains(res.TaskError, "status 3") {
			t.Fatalf("result %+v: want exit code 3", res)
		}
		if !strings.Contains(res.Output, "\uFFFD\n") || !strings.Contains(res.Output, "caf\uFFFD cr\uFFFDme") {
			t.Fatalf("output %q: want the lines with U+FFFD for the bad bytes", res.Output)
		}
		mu.Lock()
		defer mu.Unlock()
		if !strings.Contains(strings.Join(logs, "\n"), "caf\uFFFD cr\uFFFDme") {
			t.Fatalf("log lines %q: want the stderr line with U+FFFD", logs)
		}
	})
}
