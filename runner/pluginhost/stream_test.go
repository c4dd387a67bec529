package pluginhost_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner/pluginhost"
)

// Many runs at once over one RunStream: each gets its own logs, progress
// and result, and its own client span, marked as a run on the stream.
func TestRunStreamKeepsConcurrentRunsApart(t *testing.T) {
	t.Parallel()
	for _, tr := range transports {
		t.Run(tr.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, tr.opts(pluginhost.Options{MaxConcurrency: 64}))
			const n = 48
			var wg sync.WaitGroup
			errs := make(chan error, n)
			for i := range n {
				wg.Go(func() {
					msg := fmt.Sprintf("message %d", i)
					c := call("echo", map[string]any{"message": msg})
					c.Info.RunID = fmt.Sprintf("run-%d", i%3) // run IDs need not be unique
					var logs []string
					var progress int
					c.OnLog = func(l pluginhost.LogRecord) { logs = append(logs, l.Attrs[0].Value.String()) }
					c.OnProgress = func(pluginhost.Progress) { progress++ }
					res, err := b.host.Run(context.Background(), c)
					switch {
					case err != nil:
						errs <- err
					case res.Output != msg || len(logs) != 1 || logs[0] != msg || progress != 1:
						errs <- fmt.Errorf("run %d: output %q, logs %q, %d progress events; want its own", i, res.Output, logs, progress)
					}
				})
			}
			wg.Wait()
			close(errs)
			for err := range errs {
				t.Error(err)
			}
			want := map[bool]string{false: "run_stream", true: "per_run"}[tr.perRun]
			for _, st := range b.host.Status() {
				if st.Name == "testplugin" && st.Transport != want {
					t.Errorf("status transport = %q, want %q", st.Transport, want)
				}
			}
			spans := 0
			for _, s := range b.rec.Ended() {
				if !strings.HasSuffix(s.Name(), "TaskPlugin/Run") {
					continue
				}
				spans++
				onStream := false
				for _, kv := range s.Attributes() {
					if kv.Key == "pacer.plugin.run_stream" && kv.Value.AsBool() {
						onStream = true
					}
				}
				if onStream == tr.perRun {
					t.Fatalf("span %q has pacer.plugin.run_stream=%v with %s", s.Name(), onStream, tr.name)
				}
			}
			if spans != n {
				t.Fatalf("%d client spans for %d runs", spans, n)
			}
		})
	}
}

// A task that ignores its cancellation gets its process killed; the other
// runs on the same stream end with it, as they would on their own calls:
// crashed, or with their task's answer to the cancellation the plugin's
// stop (go-plugin asks it to stop before it kills it) gave them. The next
// run gets a new process and a new stream.
func TestRunStreamKillFailsTheOtherRunsAsCrashed(t *testing.T) {
	t.Parallel()
	eachTransport(t, func(t *testing.T, tr transport) {
		b := setup(t, tr.opts(pluginhost.Options{CancelGrace: 300 * time.Millisecond, RestartBackoff: time.Millisecond}))
		before, err := b.host.Run(context.Background(), call("env", nil))
		if err != nil {
			t.Fatal(err)
		}
		other := make(chan error, 1)
		go func() {
			res, err := b.host.Run(context.Background(), call("sleep", map[string]any{"duration": "1h"}))
			if err == nil && !strings.Contains(res.TaskError, "interrupted") {
				err = fmt.Errorf("task answered %+v", res)
			}
			other <- err
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if _, err := b.host.Run(ctx, call("hang", nil)); !errors.Is(err, pluginhost.ErrPluginKilled) {
			t.Fatalf("hung run: err = %v, want ErrPluginKilled", err)
		}
		select {
		case err := <-other:
			if err != nil && !errors.Is(err, pluginhost.ErrPluginCrashed) {
				t.Fatalf("the other run: err = %v, want ErrPluginCrashed or the task's interrupted answer", err)
			}
		case <-time.After(10 * time.Second):
			t.Fatal("the other run on the killed process did not end")
		}
		waitGone(t, int(before.Data["pid"].(float64)))
		after, err := b.host.Run(context.Background(), call("env", nil))
		if err != nil {
			t.Fatalf("after the kill: %v", err)
		}
		if after.Data["pid"] == before.Data["pid"] {
			t.Fatal("same process after a kill")
		}
	})
}

// A plugin that declares run_stream but does not serve RunStream is called
// once per run, and no run fails for it.
func TestPluginRefusingRunStreamIsCalledPerRun(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{Dir: noRunStreamDir})
	c := call("noop", nil)
	c.Plugin = "norunstream"
	var pids []string
	for i := range 3 {
		res, err := b.host.Run(context.Background(), c)
		if err != nil {
			t.Fatalf("run %d: %v", i, err)
		}
		pids = append(pids, res.Output)
	}
	if pids[0] != pids[1] || pids[1] != pids[2] {
		t.Fatalf("runs in processes %v, want one process", pids)
	}
	for _, st := range b.host.Status() {
		if st.Name == "norunstream" && st.Transport != "per_run" {
			t.Fatalf("status transport = %q, want per_run", st.Transport)
		}
	}
}

// A runner frozen (SIGSTOP, a debugger) after it sent a run cannot cancel
// it when its lease runs out; the plugin does: the run carries the lease,
// nothing renews it, and the run ends with the lease named and every
// process it started (a setsid one included) dead, long before its own
// end. Here the host "freezes" after the run's message: its renewal period
// is an hour.
func TestRunStreamRunEndsWithItsProcessesWhenTheLeaseIsNotRenewed(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{CancelGrace: 30 * time.Second})
	// The lease must outlast the command's start, not the plugin's too:
	// the plugin is started first, by a run that carries no lease. (With
	// the plugin started under a 1 s lease, a loaded package run once ended
	// the run before its script had written a pid.)
	const lease = 3 * time.Second
	var deadline atomic.Pointer[time.Time]
	b.host.SetLease(func() (time.Time, bool) {
		if d := deadline.Load(); d != nil {
			return *d, true
		}
		return time.Time{}, false
	}, time.Hour)
	if _, err := b.host.Run(context.Background(), shellCall("true")); err != nil {
		t.Fatalf("starting the shell plugin: %v", err)
	}
	d := time.Now().Add(lease)
	deadline.Store(&d)
	pidFile := filepath.Join(t.TempDir(), "pids")
	script := `echo $$ >> ` + pidFile + `
setsid sh -c 'echo $$ >> ` + pidFile + `; exec sleep 300' &
sleep 300`
	type outcome struct {
		res *pluginhost.Result
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		res, err := b.host.Run(context.Background(), shellCall(script))
		done <- outcome{res, err}
	}()
	pids := pidsIn(t, pidFile, 2)
	var out outcome
	select {
	case out = <-done:
	case <-time.After(20 * time.Second):
		t.Fatalf("the run still ran 20s after a lease of %s that was not renewed (processes %v)", lease, pids)
	}
	t.Logf("run ended %s after the lease's deadline: %+v, %v", time.Since(d).Round(time.Millisecond), out.res, out.err)
	if out.err != nil || !strings.Contains(out.res.TaskError, "has not renewed its lease") {
		t.Fatalf("run ended with %+v, %v; want the lease named", out.res, out.err)
	}
	for _, pid := range pids {
		if alive(pid) {
			t.Errorf("process %d of the run is alive after it ended", pid)
		}
	}
	for _, st := range b.host.Status() {
		if st.Name == "shell" && st.Transport != "run_stream" {
			t.Fatalf("the shell plugin was called %s: the test needs RunStream", st.Transport)
		}
	}
}
