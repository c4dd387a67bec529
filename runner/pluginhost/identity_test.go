package pluginhost_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner/pluginhost"
)

// copyPlugin copies the named test binary to a fresh path with mode.
func copyPlugin(t *testing.T, from, to string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(filepath.Join(pluginDir, from))
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	tmp := to + ".tmp"
	dst, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := io.Copy(dst, src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(tmp, mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, to); err != nil { // in place, as an upgrade would
		t.Fatal(err)
	}
}

// line locates every key of a job at n, as a one-line job would be.
func line(n int) func(...any) int { return func(...any) int { return n } }

func statusOf(h *pluginhost.Host, name string) (pluginhost.Status, bool) {
	for _, s := range h.Status() {
		if s.Name == name {
			return s, true
		}
	}
	return pluginhost.Status{}, false
}

// A plugin binary replaced on disk by another plugin is refused at the next
// start of its process, with an error naming the file, what the jobs expect
// and what it offers; it is not shown as the old plugin being up. Once the
// right binary is back, a restart brings it up at once. (The runner used to
// accept the http binary as "shell", and every run failed "unknown task".)
func TestReplacedBinaryIsRefusedWhenItsProcessRestarts(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "shell")
	copyPlugin(t, "shell", bin, 0o755)
	b := setup(t, pluginhost.Options{Paths: map[string]string{"shell": bin}, RestartBackoff: time.Millisecond})
	refs := []pluginhost.TaskRef{{File: "pacer.yaml", Job: "jobs[0]", Line: line(12), Plugin: "shell", Task: "exec", Params: map[string]any{"command": []any{"true"}}}}
	if err := b.host.CheckTasks(context.Background(), refs); err != nil {
		t.Fatal(err)
	}
	before, _ := statusOf(b.host, "shell")
	if before.State != "up" {
		t.Fatalf("after the check the plugin is %+v, want up (the checked process serves runs)", before)
	}

	copyPlugin(t, "testplugin", bin, 0o755) // the wrong binary, in place
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	c := shellCall("echo hi")
	var err error
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err = b.host.Run(context.Background(), c)
		if errors.Is(err, pluginhost.ErrPluginIdentity) || time.Now().After(deadline) {
			break
		}
	}
	for _, want := range []string{bin, `describes itself as plugin "testplugin"`, `not "shell"`,
		`the jobs expect plugin "shell" with task "exec" (pacer.yaml:12: jobs[0])`, "pacer plugins restart shell"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Fatalf("err = %v\nwant it to contain %q", err, want)
		}
	}
	st, _ := statusOf(b.host, "shell")
	if st.State == "up" || st.Cause != pluginhost.CauseIdentity || st.Version != "" || len(st.Tasks) != 0 || !strings.Contains(st.LastError, "testplugin") {
		t.Fatalf("status %+v: want down, cause identity, nothing of the old process", st)
	}

	copyPlugin(t, "shell", bin, 0o755)
	st, err = b.host.Restart(context.Background(), "shell", false)
	if err != nil || st.State != "up" || st.PID == 0 || st.Cause != "" {
		t.Fatalf("restart: %+v, %v", st, err)
	}
	if res, err := b.host.Run(context.Background(), c); err != nil || res.TaskError != "" {
		t.Fatalf("run after the restart: %+v, %v", res, err)
	}
}

// A binary made non-executable is quarantined with that cause (not as a
// crash), and a restart ends the quarantine once it is fixed, instead of
// waiting out QuarantineFor.
func TestQuarantineSaysItsCauseAndARestartEndsIt(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "testplugin")
	copyPlugin(t, "testplugin", bin, 0o644)
	b := setup(t, pluginhost.Options{Paths: map[string]string{"testplugin": bin}, RestartBackoff: time.Millisecond,
		MaxRestartBackoff: time.Millisecond, QuarantineCrashes: 2, QuarantineFor: time.Hour})
	c := call("echo", map[string]any{"message": "x"})
	var err error
	for range 3 {
		_, err = b.host.Run(context.Background(), c) // waits out the 1 ms restart backoff itself
	}
	if !errors.Is(err, pluginhost.ErrPluginQuarantined) || !strings.Contains(err.Error(), "because its binary is missing or not executable") ||
		!strings.Contains(err.Error(), "not an executable file") {
		t.Fatalf("err = %v, want a quarantine that says the binary is not executable", err)
	}
	st, _ := statusOf(b.host, "testplugin")
	if st.State != "quarantined" || st.Cause != pluginhost.CauseNotFound {
		t.Fatalf("status %+v", st)
	}

	if err := os.Chmod(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	if _, err := b.host.Run(context.Background(), c); !errors.Is(err, pluginhost.ErrPluginQuarantined) {
		t.Fatalf("still quarantined until restarted: %v", err)
	}
	if st, err := b.host.Restart(context.Background(), "testplugin", false); err != nil || st.State != "up" {
		t.Fatalf("restart: %+v, %v", st, err)
	}
	if _, err := b.host.Run(context.Background(), c); err != nil {
		t.Fatalf("run after the restart: %v", err)
	}
	if got := b.host.Quarantined(); len(got) != 0 {
		t.Fatalf("quarantined after the restart: %v", got)
	}
}

// A restart refuses while runs are in progress, unless forced; forced, the
// runs fail as crashed and say why, and a new process serves.
func TestRestartWaitsForRunsUnlessForced(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{})
	done := make(chan error, 1)
	go func() {
		_, err := b.host.Run(context.Background(), call("sleep", map[string]any{"duration": "30s"}))
		done <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	var busy error
	for {
		_, busy = b.host.Restart(context.Background(), "testplugin", false)
		if errors.Is(busy, pluginhost.ErrPluginBusy) || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	if !errors.Is(busy, pluginhost.ErrPluginBusy) || !strings.Contains(busy.Error(), "1 runs") {
		t.Fatalf("restart with a run in progress: %v, want ErrPluginBusy", busy)
	}
	before, _ := statusOf(b.host, "testplugin")
	st, err := b.host.Restart(context.Background(), "testplugin", true)
	if err != nil || st.State != "up" || st.PID == before.PID {
		t.Fatalf("forced restart: %+v (before: pid %d), %v", st, before.PID, err)
	}
	if err := <-done; !errors.Is(err, pluginhost.ErrPluginCrashed) || !strings.Contains(err.Error(), "restarted by an operator") {
		t.Fatalf("the run cut by the restart: %v", err)
	}
	if _, err := b.host.Restart(context.Background(), "nosuch", false); !errors.Is(err, pluginhost.ErrPluginNotFound) {
		t.Fatalf("restart of an unknown plugin: %v", err)
	}
	if _, ok := statusOf(b.host, "nosuch"); ok {
		t.Fatal("restarting an unknown plugin left an entry")
	}
}

// A check that fails (as for a rejected reload) leaves no trace: no entry
// for a plugin only the rejected config named, and no process of one it
// started for the check. One that passes keeps the started process.
func TestRejectedCheckLeavesNoTrace(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{})
	bad := []pluginhost.TaskRef{
		{File: "pacer.yaml", Job: "jobs[0]", Line: line(3), Plugin: "nosuch", Task: "x"},
		{File: "pacer.yaml", Job: "jobs[1]", Line: line(8), Plugin: "testplugin", Task: "nope"},
	}
	err := b.host.CheckTasks(context.Background(), bad)
	if err == nil || !strings.Contains(err.Error(), `pacer.yaml:3: jobs[0].plugin: plugin "nosuch"`) ||
		!strings.Contains(err.Error(), `pacer.yaml:8: jobs[1].task: unknown task`) {
		t.Fatalf("err = %v", err)
	}
	if _, ok := statusOf(b.host, "nosuch"); ok {
		t.Fatal(`a rejected check left an entry for "nosuch"`)
	}
	if st, _ := statusOf(b.host, "testplugin"); st.State != "not_started" || st.PID != 0 {
		t.Fatalf("testplugin after a rejected check: %+v, want not_started", st)
	}
	good := []pluginhost.TaskRef{{File: "pacer.yaml", Job: "jobs[0]", Line: line(8), Plugin: "testplugin", Task: "echo"}}
	if err := b.host.CheckTasks(context.Background(), good); err != nil {
		t.Fatal(err)
	}
	if st, _ := statusOf(b.host, "testplugin"); st.State != "up" {
		t.Fatalf("testplugin after a passed check: %+v, want up", st)
	}
}

// Readiness names each quarantined plugin's real cause, not "repeated
// crashes": a binary replaced by another plugin is never started at all. The
// error is cut short there (an identity error lists every job that uses the
// plugin); Status keeps the whole text. (Attack 7, B7.)
func TestQuarantineProblemNamesTheCause(t *testing.T) {
	t.Parallel()
	bin := filepath.Join(t.TempDir(), "shell")
	copyPlugin(t, "shell", bin, 0o755)
	b := setup(t, pluginhost.Options{Paths: map[string]string{"shell": bin}, RestartBackoff: time.Millisecond,
		MaxRestartBackoff: time.Millisecond, QuarantineCrashes: 2, QuarantineFor: time.Hour})
	var refs []pluginhost.TaskRef
	for i := range 8 {
		refs = append(refs, pluginhost.TaskRef{File: "pacer.yaml", Job: fmt.Sprintf("jobs[%d]", i), Line: line(10 + i), Plugin: "shell", Task: "exec",
			Params: map[string]any{"command": []any{"true"}}})
	}
	if err := b.host.CheckTasks(context.Background(), refs); err != nil {
		t.Fatal(err)
	}
	if err := b.host.QuarantineProblem(); err != nil {
		t.Fatalf("nothing quarantined, yet: %v", err)
	}
	before, _ := statusOf(b.host, "shell")
	copyPlugin(t, "testplugin", bin, 0o755) // the wrong binary, in place
	if err := syscall.Kill(before.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, err := b.host.Run(context.Background(), shellCall("echo hi"))
		if errors.Is(err, pluginhost.ErrPluginQuarantined) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not quarantined: %v", err)
		}
	}
	st, _ := statusOf(b.host, "shell")
	if st.State != "quarantined" || st.Cause != pluginhost.CauseIdentity || !strings.Contains(st.LastError, "pacer.yaml:17: jobs[7]") {
		t.Fatalf("status %+v: want quarantined, cause identity, the whole error", st)
	}
	err := b.host.QuarantineProblem()
	if err == nil {
		t.Fatal("no problem while quarantined")
	}
	msg := err.Error()
	if !strings.HasPrefix(msg, "plugin shell quarantined (cause identity: "+st.LastError[:40]) || strings.Contains(msg, "crash") ||
		!strings.Contains(msg, `"pacer plugins"`) {
		t.Fatalf("problem %q: want the shell plugin, its cause and the start of its error, no crash", msg)
	}
	if len(msg) >= len(st.LastError) || !strings.Contains(msg, "…") {
		t.Fatalf("problem %q (%d bytes) quotes the %d-byte error whole", msg, len(msg), len(st.LastError))
	}
}

// The plugin list holds the plugins the jobs use, those with an explicit
// path and the executables in the plugins directory named like a plugin; a
// backup beside a plugin ("shell.orig", "shell~"), a hidden file or a file
// that is not executable is not listed as a plugin "not_started" (attack 7,
// B9).
func TestStatusListsNoStrayFiles(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	copyPlugin(t, "shell", filepath.Join(dir, "shell"), 0o755)
	for _, stray := range []string{"shell.orig", "shell~", ".shell.swp"} {
		copyPlugin(t, "shell", filepath.Join(dir, stray), 0o755)
	}
	if err := os.WriteFile(filepath.Join(dir, "README"), []byte("plugins\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	other := filepath.Join(t.TempDir(), "bin.v2")
	copyPlugin(t, "testplugin", other, 0o755)
	b := setup(t, pluginhost.Options{Dir: dir, Paths: map[string]string{"testplugin": other}})
	refs := []pluginhost.TaskRef{{File: "pacer.yaml", Job: "jobs[0]", Line: line(12), Plugin: "shell", Task: "exec", Params: map[string]any{"command": []any{"true"}}}}
	if err := b.host.CheckTasks(context.Background(), refs); err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, st := range b.host.Status() {
		names = append(names, st.Name+"="+st.State)
	}
	if want := []string{"shell=up", "testplugin=not_started"}; !slices.Equal(names, want) {
		t.Fatalf("plugins %q, want %q", names, want)
	}
}

// An executable in the plugins directory whose name the log sanitizer
// would change (an e-mail address, an AWS key ID, "password=x") is no
// plugin: it is not listed, and a restart of it is refused, saying why with
// the name masked. Before, it was listed and restarted under its raw name,
// which the API, /metrics and the advice under `pacer plugins` carried
// while the logs masked it (attack 32, C3).
func TestPluginNamesTheSanitizerMasksAreRefused(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	names := []string{"ops@example.com", "AKIAIOSFODNN7EXAMPLE", "x password=PLUGNAME1", "plain"}
	for _, n := range names {
		copyPlugin(t, "testplugin", filepath.Join(dir, n), 0o755)
	}
	b := setup(t, pluginhost.Options{Dir: dir})
	got, err := b.host.Discover()
	if err != nil {
		t.Fatal(err)
	}
	if slices.ContainsFunc(names[:3], func(n string) bool { return slices.Contains(got, n) }) || !slices.Contains(got, "plain") {
		t.Fatalf("discovered %q, want plain and none of the masked names", got)
	}
	for _, n := range names[:3] {
		_, err := b.host.Restart(context.Background(), n, false)
		if !errors.Is(err, pluginhost.ErrPluginNotFound) || !strings.Contains(err.Error(), "rename the file") {
			t.Errorf("restart of %q: %v, want it refused, saying to rename the file", n, err)
		}
		if err != nil && (strings.Contains(err.Error(), "ops@example.com") || strings.Contains(err.Error(), "AKIAIOSFODNN7EXAMPLE") ||
			strings.Contains(err.Error(), "PLUGNAME1")) {
			t.Errorf("restart of %q: %v shows the name", n, err)
		}
	}
}
