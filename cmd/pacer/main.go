// Command pacer is the Pacer task runner.
//
//	pacer run --config FILE        run the scheduler (and, with no etcd endpoints, an embedded etcd)
//	pacer validate --config FILE   check a config file and show each job's next fire times
//	pacer plugins                  list a running runner's plugins
//	pacer plugins check PATH       check a plugin executable's protocol conformance
//	pacer version                  print the version
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"slices"
	"syscall"
	"time"
	_ "time/tzdata" // time zones work on machines without a zoneinfo database

	"go.uber.org/dig"
	"go.uber.org/fx"

	"github.com/pacerun/pacer/internal/earlysig"
	"github.com/pacerun/pacer/internal/procguard"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/config"
	"github.com/pacerun/pacer/runner/fxmodule"
	"github.com/pacerun/pacer/runner/pluginhost"
	"github.com/pacerun/pacer/runner/schedule"
)

// version is set at build time: -ldflags "-X main.version=v1.2.3".
var version = ""

const usage = `pacer — a plugin-based, observability-first task runner

Usage:
  pacer run --config FILE        run the scheduler
  pacer validate --config FILE   check a config file and the jobs' tasks and params;
                                 print each job's next fire times
                                 (--from RFC3339 --count N: N fire times after any instant)
  pacer jobs [--state S]         jobs, their schedules, state and next fire time
                                 (every page; --state active, paused, unknown or running;
                                 --limit N jobs per API request, 1 to 1000)
  pacer trigger JOB              run a job now, once (X-Correlation-ID from env PACER_CORRELATION_ID)
  pacer pause JOB | resume JOB   pause or resume a job on every replica
  pacer runs JOB [--limit N]     a job's latest runs and skipped slots (default 20, up to 1000)
  pacer status                   leader, fencing token, members, lease
  pacer plugins                  plugins, their state and tasks
  pacer plugins check PATH       check that a plugin executable (any language) speaks
                                 the plugin protocol; -o json, --params TASK=JSON
  pacer plugins restart NAME     a new process for a plugin (ends its quarantine);
                                 --force with runs in progress
  pacer version                  print the version

Client commands talk to a runner's HTTP API: --addr (env PACER_ADDR,
default http://127.0.0.1:9464), --token (env PACER_API_TOKEN), -o table|json;
over HTTPS --ca-file (env PACER_CA_FILE), --server-name (env
PACER_SERVER_NAME) when the runner's certificate names another host than
--addr's (kubectl port-forward), and for a runner that requires client
certificates --cert-file and --key-file (env PACER_CERT_FILE,
PACER_KEY_FILE). trigger, pause and resume send an Idempotency-Key
(--idempotency-key, or a random one) and repeat the request with it while
its outcome is unknown, so it takes effect once; a usage error, or a
certificate refused in the TLS handshake, is reported at once.

Run "pacer COMMAND -h" for a command's flags.
`

// errUsage marks errors caused by how pacer was called (exit status 2).
var errUsage = errors.New("usage error")

// configError marks an error in the config file (exit status 2, as a usage
// error; see docs/operations.md): it cannot be read, it is invalid, or its
// jobs name plugins, tasks or params that the plugins refuse.
type configError struct{ err error }

func (e configError) Error() string { return e.err.Error() }
func (e configError) Unwrap() error { return e.err }

func main() {
	// First: the environment may hold the API token and the etcd password,
	// and tasks run as this user (docs/operations.md, "What a task can
	// reach").
	if err := procguard.NonDumpable(); err != nil {
		fmt.Fprintln(os.Stderr, "pacer: warning: other processes of this user can read this one's environment and memory:", err)
	}
	if err := run(os.Args[1:], os.Stdout, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "pacer:", errorText(err))
		os.Exit(exitCode(err))
	}
}

// errorText is err as pacer prints it: through the sanitizer the runner's log
// uses, since an error may quote a secret from the command line, the config
// file or a plugin ("cannot reach the runner at http://user:pw@host",
// `invalid duration "token=..."`).
func errorText(err error) string { return observability.DefaultSanitizer().String(err.Error()) }

// warnf prints a "warning:" line through the same sanitizer as errors
// (errorText): a secret pasted into a config value is masked in pacer
// validate's warnings too, which CI logs keep (attack 23, U4).
func warnf(w io.Writer, format string, args ...any) {
	fmt.Fprintln(w, "warning:", observability.DefaultSanitizer().String(fmt.Sprintf(format, args...)))
}

// exitCode is the exit status for an error from run.
func exitCode(err error) int {
	if errors.Is(err, errUsage) || errors.As(err, new(configError)) {
		return 2
	}
	return 1
}

func run(args []string, stdout, stderr io.Writer) error {
	err := dispatch(args, stdout, stderr)
	if errors.Is(err, flag.ErrHelp) {
		// "pacer COMMAND -h": the flag package printed the command's
		// flags; asking for them is not a usage error (exit 0).
		return nil
	}
	return err
}

// versionUsage is what "pacer version -h" prints.
const versionUsage = `Usage: pacer version

Prints the version of this pacer binary (as pacer_build_info{version} and
the API's /api/v1/cluster report it for a running replica).
`

// isHelp reports whether a command-line argument asks for help.
func isHelp(a string) bool { return a == "-h" || a == "--help" || a == "-help" || a == "--h" }

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: no command given", errUsage)
	}
	switch cmd, rest := args[0], args[1:]; cmd {
	case "run":
		return runCmd(rest, stderr)
	case "validate":
		return validateCmd(rest, stdout, stderr)
	case "plugins":
		return pluginsCmd(rest, stdout, stderr)
	case "jobs":
		return jobsCmd(rest, stdout, stderr)
	case "trigger":
		return triggerCmd(rest, stdout, stderr)
	case "pause", "resume":
		return pauseCmd(cmd)(rest, stdout, stderr)
	case "runs":
		return runsCmd(rest, stdout, stderr)
	case "status":
		return statusCmd(rest, stdout, stderr)
	case "version", "--version":
		if slices.ContainsFunc(rest, isHelp) {
			fmt.Fprint(stdout, versionUsage)
			return nil
		}
		fmt.Fprintln(stdout, "pacer", buildVersion())
		return nil
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return nil
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("%w: unknown command %q", errUsage, cmd)
	}
}

// parseFlags parses a subcommand's flags; every subcommand that reads the
// config takes --config.
func parseFlags(fs *flag.FlagSet, args []string, stderr io.Writer) (string, error) {
	fs.SetOutput(stderr)
	path := fs.String("config", "", "path to the YAML config file (required)")
	if err := parseFlagSet(fs, args); err != nil {
		return "", fmt.Errorf("%w: %w", errUsage, err)
	}
	if *path == "" {
		return "", fmt.Errorf("%w: %s needs --config FILE", errUsage, fs.Name())
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("%w: unexpected arguments: %v", errUsage, fs.Args())
	}
	return *path, nil
}

func validateCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("validate", flag.ContinueOnError)
	skipPlugins := fs.Bool("skip-plugins", false, "do not start plugins to check tasks and params")
	fromFlag := fs.String("from", "", "list fire times after this RFC 3339 instant (default: now), e.g. to check a DST day before it comes")
	count := fs.Int("count", 5, fmt.Sprintf("how many fire times to list per job (1 to %d)", maxPreview))
	path, err := parseFlags(fs, args, stderr)
	if err != nil {
		return err
	}
	from := time.Now()
	if *fromFlag != "" {
		if from, err = time.Parse(time.RFC3339, *fromFlag); err != nil {
			return fmt.Errorf("%w: --from %q: want an RFC 3339 time such as 2026-03-29T00:00:00+01:00", errUsage, *fromFlag)
		}
	}
	if *count < 1 || *count > maxPreview {
		return fmt.Errorf("%w: --count %d: want 1 to %d", errUsage, *count, maxPreview)
	}
	cfg, err := config.Load(path)
	var unsure *config.Error // CheckPlugins' problems, plugins.dir not being here
	if err == nil {
		perr := cfg.CheckPlugins()
		if !cfg.PluginsDirHere() {
			errors.As(perr, &unsure)
			perr = nil
		}
		err = errors.Join(cfg.CheckFiles(), perr)
	}
	if err != nil {
		return configError{fmt.Errorf("%w\n%s is not valid", err, path)}
	}
	if !*skipPlugins {
		o := fxmodule.PluginHostOptions(cfg)
		// The runner's sanitizer: a params problem shows a value as the
		// runner's log would (masked under redact_keys, by patterns).
		if o.Sanitizer, err = fxmodule.NewSanitizer(cfg); err != nil {
			return configError{fmt.Errorf("%w\n%s is not valid", err, path)}
		}
		h := pluginhost.New(o)
		err := h.CheckTasks(context.Background(), fxmodule.TaskRefs(path, cfg))
		h.Close()
		if err != nil {
			return configError{fmt.Errorf("%w\n%s is not valid", err, path)}
		}
	}
	for _, w := range cfg.Warnings {
		warnf(stderr, "%v", w)
	}
	// pacer run refuses these (exit 2), but validate may run elsewhere
	// (CI, an operator's machine) than the runner, whose environment
	// holds the secrets: a warning, not an error.
	for _, err := range secretProblems(cfg) {
		warnf(stderr, "%v (pacer run refuses to start without it, exit 2; fine if this is not the machine that runs pacer)", err)
	}
	if unsure != nil {
		// As with the secrets: validate may run where the plugins are not
		// installed, so it cannot tell a mistyped name from a plugin
		// installed only where pacer runs.
		for _, p := range unsure.Problems {
			warnf(stderr, "%v (plugins.dir %s is not on this machine: pacer run refuses this, exit 2, unless the plugin is in it there)",
				p, cfg.Plugins.Dir)
		}
	}
	if cfg.Jobs == nil {
		warnf(stderr, "%s: jobs: the file lists no jobs; a running pacer refuses to reload such a file (write \"jobs: []\" for none)", path)
	}
	fmt.Fprintf(stdout, "%s is valid: %d job(s)\n", path, len(cfg.Jobs))
	for i, j := range cfg.Jobs {
		fmt.Fprintf(stdout, "\n%s  (%s/%s, schedule %q, timezone %s)\n", j.ID, j.Plugin, j.Task, j.Schedule, j.Location)
		fires := schedule.NextN(j.Sched, from, *count)
		// RFC 3339 writes four-digit years: fire times after 9999 are
		// left out, saying so (Format would print "10000-01-01T…").
		shown := slices.IndexFunc(fires, func(t time.Time) bool { return t.In(j.Location).Year() > 9999 })
		beyond := shown >= 0
		if beyond {
			fires = fires[:shown]
		}
		if beyond && len(fires) == 0 {
			fmt.Fprintln(stdout, "  next: after the year 9999 (not shown: RFC 3339 has four-digit years)")
			continue
		}
		if len(fires) == 0 {
			if schedule.NeverFires(j.Sched) { // a config warning already says so
				fmt.Fprintln(stdout, "  next: never (no date matches its schedule)")
				continue
			}
			why := "no fire time after " + from.Format(time.RFC3339)
			fmt.Fprintf(stdout, "  next: never (%s)\n", why)
			warnf(stderr, "%s:%d: jobs[%d]: job %s will never fire: %s", path, j.Line, i, j.ID, why)
			continue
		}
		// Mark each change of UTC offset, so that daylight-saving days
		// stand out.
		_, prev := from.In(j.Location).Zone()
		for _, t := range fires {
			local := t.In(j.Location)
			note := ""
			if _, off := local.Zone(); off != prev {
				note = fmt.Sprintf("  (UTC offset %s, was %s)", fmtOffset(off), fmtOffset(prev))
				prev = off
			}
			fmt.Fprintf(stdout, "  %s%s\n", local.Format(time.RFC3339), note)
		}
		switch {
		case beyond:
			fmt.Fprintln(stdout, "  (later fire times are after the year 9999, not shown: RFC 3339 has four-digit years)")
		case len(fires) < *count:
			fmt.Fprintln(stdout, "  (no further fire times)")
		}
	}
	return nil
}

// secretsSet checks that the environment variables the config names for
// secrets are set, before anything starts: a missing one is a config
// problem of this host, said as one, not a failure deep in start-up.
func secretsSet(cfg *config.Config) error {
	if errs := secretProblems(cfg); len(errs) > 0 {
		return errs[0]
	}
	return nil
}

// secretProblems are the secrets' environment variables the config names
// that are missing or unusable here (secretsSet's checks, each of them),
// at their keys' lines.
func secretProblems(cfg *config.Config) []error {
	var errs []error
	for _, p := range cfg.SecretProblems(os.LookupEnv) {
		errs = append(errs, &config.Error{Problems: []config.Problem{p}})
	}
	return errs
}

// maxPreview bounds pacer validate --count.
const maxPreview = 10000

func fmtOffset(sec int) string {
	sign := '+'
	if sec < 0 {
		sign, sec = '-', -sec
	}
	return fmt.Sprintf("%c%02d:%02d", sign, sec/3600, sec/60%60)
}

func runCmd(args []string, stderr io.Writer) error {
	path, err := parseFlags(flag.NewFlagSet("run", flag.ContinueOnError), args, stderr)
	if err != nil {
		return err
	}
	// A runner outlives whatever reads its output. When a log shipper that
	// reads its stderr exits, the pipe breaks, and Go ends a process that
	// writes to a broken fd 1 or 2 with SIGPIPE unless the signal is
	// notified: then the write fails with EPIPE, and the log queue counts
	// the lines as dropped. Notify, not Ignore: an ignored signal would stay
	// ignored in the plugins and commands the runner starts.
	signal.Notify(make(chan os.Signal, 1), syscall.SIGPIPE)
	// SIGHUP, SIGTERM and SIGINT are noticed from the process's start
	// (package earlysig): until the runner has started, SIGHUP is dropped
	// and a SIGTERM or SIGINT waits in earlysig.Stop.
	data, err := config.ReadFile(path)
	var cfg *config.Config
	if err == nil {
		cfg, err = config.Parse(path, data)
	}
	if err == nil {
		err = errors.Join(cfg.CheckFiles(), cfg.CheckPlugins())
	}
	if err != nil {
		return configError{fmt.Errorf("%w\nrefusing to start with an invalid config", err)}
	}
	if err := secretsSet(cfg); err != nil {
		return configError{fmt.Errorf("%w\nrefusing to start", err)}
	}
	app := fx.New(
		// The runner starts no child process but its plugins, so it can be
		// the subreaper that ends what a dead plugin leaves behind.
		fxmodule.Options(fxmodule.Params{Config: cfg, ConfigPath: path, ConfigData: data, Version: buildVersion(), LogOutput: stderr, Subreaper: true}),
		fx.StartTimeout(time.Minute),
		fx.StopTimeout(cfg.StopTimeout()),
	)
	if err := app.Err(); err != nil {
		// The constructor's own error: fx's wrapping names Go functions.
		return fmt.Errorf("cannot build the runner: %w", dig.RootCause(err))
	}
	startCtx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := app.Start(startCtx); err != nil {
		if errors.Is(err, fxmodule.ErrJobsRefused) {
			return configError{fmt.Errorf("%w\nrefusing to start with an invalid config", err)}
		}
		return fmt.Errorf("cannot start the runner: %w", err)
	}
	select { // SIGINT or SIGTERM
	case <-app.Wait():
	case <-earlysig.Stop:
	}
	stopCtx, cancel := context.WithTimeout(context.Background(), cfg.StopTimeout())
	defer cancel()
	if err := app.Stop(stopCtx); err != nil {
		return fmt.Errorf("unclean stop: %w", err)
	}
	return nil
}

func buildVersion() string {
	if version != "" {
		return version
	}
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "" && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return "dev"
}
