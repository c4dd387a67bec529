package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"slices"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/pacerun/pacer/internal/oneline"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/plugincheck"
	"github.com/pacerun/pacer/sdk/proctree"
)

const checkUsage = "plugins check PATH [-o table|json] [--params TASK=JSON]... [--only CHECK,...] [--grace 5s] [--start-timeout 10s] [--timeout 1s] [--inherit-env NAME,...]"

// paramsFlag collects --params TASK=JSON.
type paramsFlag map[string]map[string]any

func (p paramsFlag) String() string { return "" }

func (p paramsFlag) Set(v string) error {
	task, text, ok := strings.Cut(v, "=")
	if !ok || task == "" {
		return fmt.Errorf("want TASK=JSON, got %q", v)
	}
	var params map[string]any
	if err := json.Unmarshal([]byte(text), &params); err != nil {
		return fmt.Errorf("params of task %q: want a JSON object: %v", task, err)
	}
	p[task] = params
	return nil
}

// pluginsCheckCmd checks a plugin executable's protocol conformance. It
// starts the plugin itself and needs no runner.
func pluginsCheckCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("plugins check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	output := fs.String("o", "table", "output format: table or json")
	params := paramsFlag{}
	fs.Var(params, "params", "params for a task's runs, as TASK=JSON (repeatable); default: the smallest its schema accepts")
	grace := fs.Duration("grace", 5*time.Second, "how long a cancelled run or a signalled plugin may take to end (the runner's plugins.cancel_grace)")
	start := fs.Duration("start-timeout", 10*time.Second, "bound on start, handshake and Describe (the runner's plugins.start_timeout)")
	deadline := fs.Duration("timeout", time.Second, "the timeout of the deadline and identity runs")
	only := fs.String("only", "", "run only these checks (comma-separated): "+strings.Join(plugincheck.All, ", "))
	var inherit []string
	fs.Func("inherit-env", "variables of this environment the plugin gets (NAME or PREFIX_*, comma-separated, repeatable), as the runner's plugins.inherit_env; otherwise only PATH, HOME, LANG, LC_*, TZ, TMPDIR and USER", func(v string) error {
		for _, name := range strings.Split(v, ",") {
			if name = strings.TrimSpace(name); name != "" {
				inherit = append(inherit, name)
			}
		}
		return nil
	})
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: usage: pacer %s", errUsage, checkUsage)
	}
	if *output != "table" && *output != "json" {
		return fmt.Errorf("%w: -o %q: want table or json", errUsage, *output)
	}
	var checks []string
	for _, ch := range strings.Split(*only, ",") {
		if ch = strings.TrimSpace(ch); ch == "" {
			continue
		}
		if !slices.Contains(plugincheck.All, ch) {
			return fmt.Errorf("%w: --only: unknown check %q (checks: %s)", errUsage, ch, strings.Join(plugincheck.All, ", "))
		}
		checks = append(checks, ch)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := proctree.EnableSubreaper(); err == nil {
		// As `pacer run` is: what a checked plugin that died (or was
		// killed) mid-run leaves behind comes to this process instead
		// of init, and goes with the check.
		defer func() {
			if left := killAdopted(orphanWait); len(left) > 0 {
				fmt.Fprintf(stderr, "warning: processes the plugin left behind still alive %s after SIGKILL: %v\n", orphanWait, left)
			}
		}()
	}
	rep := plugincheck.Run(ctx, pos[0], plugincheck.Options{Params: params, Grace: *grace, StartTimeout: *start, Deadline: *deadline, Only: checks, InheritEnv: inherit})
	// A check's reason may quote what a task returned or logged: it is
	// sanitized like the runner's log.
	for i := range rep.Results {
		rep.Results[i].Reason = observability.DefaultSanitizer().String(rep.Results[i].Reason)
	}
	if *output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			return err
		}
	} else if err := printReport(stdout, rep); err != nil {
		return err
	}
	if ctx.Err() != nil {
		return fmt.Errorf("%s: checks interrupted (%v): %d of %d done", pos[0], context.Cause(ctx), rep.Passed+rep.Failed, len(rep.Results))
	}
	if !rep.OK() {
		return fmt.Errorf("%s: %d of %d checks failed", pos[0], rep.Failed, len(rep.Results))
	}
	return nil
}

func printReport(w io.Writer, rep *plugincheck.Report) error {
	if rep.Plugin != "" {
		fmt.Fprintf(w, "plugin %s %s (sdk %s) at %s\n", oneline.Escape(rep.Plugin), oneline.Escape(orDash(rep.Version)),
			oneline.Escape(orDash(rep.SDKVersion)), oneline.Escape(rep.Path))
	} else {
		fmt.Fprintf(w, "plugin at %s\n", oneline.Escape(rep.Path))
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	for _, r := range rep.Results {
		row(tw, strings.ToUpper(r.Status), r.Check, orDash(r.Task), r.Reason)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintf(w, "%d checks: %d passed, %d failed, %d skipped\n", len(rep.Results), rep.Passed, rep.Failed, rep.Skipped)
	return err
}

// orphanWait bounds how long a check waits for the processes it kills at
// its end to be gone.
const orphanWait = 5 * time.Second

// killAdopted SIGKILLs every process still below this one (the plugins the
// checks started are gone by now: what is left are processes of a plugin
// that died, adopted as a child subreaper, and whatever they started),
// reaps them and waits, at most wait, until none is left. It returns the
// PIDs still alive then.
func killAdopted(wait time.Duration) []int {
	deadline := time.Now().Add(wait)
	for {
		kids, err := proctree.Children(os.Getpid())
		if err != nil {
			return nil
		}
		var live []proctree.Process
		for _, k := range kids {
			if k.Zombie() {
				k.Reap()
				continue
			}
			below, _ := proctree.Descendants(k.PID)
			live = append(append(live, k), below...)
		}
		live = slices.DeleteFunc(live, proctree.Process.Zombie)
		if len(live) == 0 {
			return nil
		}
		for _, p := range live {
			_ = p.Signal(syscall.SIGKILL)
		}
		if time.Now().After(deadline) {
			pids := make([]int, len(live))
			for i, p := range live {
				pids[i] = p.PID
			}
			return pids
		}
		// A killed process's children come here as it dies; the next
		// look finds them, and reaps the dead.
		time.Sleep(10 * time.Millisecond)
	}
}
