package plugincheck

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-hclog"
	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"

	"github.com/pacerun/pacer/internal/pluginenv"
	"github.com/pacerun/pacer/internal/syncbuf"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/sdk/paramschema"
	"github.com/pacerun/pacer/sdk/pluginv1"
)

// Check names, in the order they run.
const (
	CheckCookie        = "cookie"
	CheckHandshake     = "handshake"
	CheckAutoMTLS      = "automtls"
	CheckDescribe      = "describe"
	CheckHealth        = "health"
	CheckUnknownTask   = "unknown-task"
	CheckInvalidParams = "invalid-params"
	CheckCancel        = "cancel"
	CheckDeadline      = "deadline"
	CheckIdentity      = "identity"
	CheckRunStream     = "run-stream"
	CheckStdout        = "stdout"
	CheckShutdown      = "shutdown"
	CheckSIGTERM       = "sigterm"
	CheckParentDeath   = "parent-death"
)

// All lists every check.
var All = []string{CheckCookie, CheckHandshake, CheckAutoMTLS, CheckDescribe, CheckHealth, CheckUnknownTask,
	CheckInvalidParams, CheckCancel, CheckDeadline, CheckIdentity, CheckRunStream, CheckStdout, CheckShutdown, CheckSIGTERM, CheckParentDeath}

// Statuses of a check.
const (
	Pass = "pass"
	Fail = "fail"
	Skip = "skip"
)

// Options tune a check. Zero values take the defaults in parentheses.
type Options struct {
	// Params maps task names to the params their Run checks use. Tasks not
	// in it get the smallest params their schema accepts.
	Params map[string]map[string]any
	// StartTimeout bounds start, handshake and Describe, as the runner's
	// plugins.start_timeout does (10s).
	StartTimeout time.Duration
	// Grace is how long a cancelled or timed-out run, or a signalled or
	// orphaned process, may take to end, as the runner's
	// plugins.cancel_grace (5s).
	Grace time.Duration
	// Deadline is the timeout of the deadline and identity runs (1s).
	Deadline time.Duration
	// InheritEnv names variables of this process's environment (NAME, or
	// PREFIX_* for all starting with PREFIX_) the plugin gets, as the
	// runner's plugins.inherit_env does. Otherwise it gets what the runner
	// gives every plugin: PATH, HOME, LANG, LC_*, TZ, TMPDIR and USER, and
	// go-plugin's handshake variables.
	InheritEnv []string
	// Env is added to the plugin's environment, as KEY=VALUE entries.
	Env []string
	// Only, if set, limits the checks to these names.
	Only []string
}

func (o *Options) defaults() {
	if o.StartTimeout <= 0 {
		o.StartTimeout = 10 * time.Second
	}
	if o.Grace <= 0 {
		o.Grace = 5 * time.Second
	}
	if o.Deadline <= 0 {
		o.Deadline = time.Second
	}
}

// Result is the outcome of one check.
type Result struct {
	Check string `json:"check"`
	// Task is the task a per-task check ran, or "".
	Task   string `json:"task,omitempty"`
	Status string `json:"status"` // pass, fail or skip
	// Reason says, in one line, what was expected and what happened.
	Reason string `json:"reason"`
}

// Report is the outcome of every check of one plugin.
type Report struct {
	Path       string   `json:"path"`
	Plugin     string   `json:"plugin,omitempty"`
	Version    string   `json:"version,omitempty"`
	SDKVersion string   `json:"sdk_version,omitempty"`
	Results    []Result `json:"results"`
	Passed     int      `json:"passed"`
	Failed     int      `json:"failed"`
	Skipped    int      `json:"skipped"`
}

// OK reports whether no check failed.
func (r *Report) OK() bool { return r.Failed == 0 }

// Result returns the first result of the named check (for task, if not ""),
// or nil.
func (r *Report) Result(check, task string) *Result {
	for i := range r.Results {
		if res := &r.Results[i]; res.Check == check && (task == "" || res.Task == task) {
			return res
		}
	}
	return nil
}

// Run checks the plugin executable at path. It never returns an error: every
// problem, the plugin failing to start included, is a failed check.
func Run(ctx context.Context, path string, opts Options) *Report {
	opts.defaults()
	c := &checker{ctx: ctx, path: path, opts: opts, report: &Report{Path: path}}
	if abs, err := filepath.Abs(path); err == nil {
		c.path = abs // never looked up in $PATH
	}
	// Interrupted (SIGTERM, Ctrl-C): every plugin process still running is
	// killed, with its tree, and the checks not done are skipped.
	defer context.AfterFunc(ctx, c.killAll)()
	c.run()
	if ctx.Err() != nil {
		c.skipRest(fmt.Sprintf("interrupted: %v", context.Cause(ctx)))
	}
	for _, r := range c.report.Results {
		switch r.Status {
		case Pass:
			c.report.Passed++
		case Fail:
			c.report.Failed++
		default:
			c.report.Skipped++
		}
	}
	return c.report
}

type checker struct {
	ctx    context.Context
	path   string
	opts   Options
	report *Report

	s          *started   // the plugin process of the session
	noise      []*started // its predecessors, for the stdout check
	restarts   int
	restartErr error

	// cookieExit is set when the plugin, started without the cookie,
	// exited without a handshake; noHandshake when, started with it, it
	// printed no handshake line either (a crash at start, say): the
	// cookie check then cannot tell the two apart.
	cookieExit, noHandshake bool

	calls []*call // the Runs started during the guarded check

	procsMu sync.Mutex
	procs   []*proc // every plugin process started, for killAll
}

// track records a plugin process for killAll; once ctx has ended, it is
// killed at once.
func (c *checker) track(p *proc) {
	c.procsMu.Lock()
	c.procs = append(c.procs, p)
	c.procsMu.Unlock()
	if c.ctx.Err() != nil {
		_ = p.Kill(context.Background())
	}
}

// killAll kills every plugin process the checks started.
func (c *checker) killAll() {
	c.procsMu.Lock()
	procs := slices.Clone(c.procs)
	c.procsMu.Unlock()
	for _, p := range procs {
		_ = p.Kill(context.Background())
	}
}

// skipRest skips every check that has no result yet, saying why.
func (c *checker) skipRest(why string) {
	for _, ch := range All {
		done := false
		for _, r := range c.report.Results {
			done = done || r.Check == ch
		}
		if !done {
			c.skip(ch, "", "%s", why)
		}
	}
}

func (c *checker) want(check string) bool {
	if len(c.opts.Only) == 0 {
		return true
	}
	for _, o := range c.opts.Only {
		if o == check {
			return true
		}
	}
	return false
}

func (c *checker) add(check, task, status, format string, args ...any) {
	if !c.want(check) {
		return
	}
	reason := fmt.Sprintf(format, args...)
	reason = strings.Join(strings.Fields(reason), " ") // one line
	if len(reason) > 400 {
		reason = reason[:397] + "..."
	}
	c.report.Results = append(c.report.Results, Result{Check: check, Task: task, Status: status, Reason: reason})
}

func (c *checker) pass(check, task, format string, args ...any) {
	c.add(check, task, Pass, format, args...)
}
func (c *checker) fail(check, task, format string, args ...any) {
	c.add(check, task, Fail, format, args...)
}
func (c *checker) skip(check, task, format string, args ...any) {
	c.add(check, task, Skip, format, args...)
}

func (c *checker) wantAny(checks ...string) bool {
	for _, ch := range checks {
		if c.want(ch) {
			return true
		}
	}
	return false
}

func (c *checker) run() {
	if info, err := os.Stat(c.path); err != nil || !info.Mode().IsRegular() || info.Mode()&0o111 == 0 {
		why := "not an executable file"
		if err != nil {
			why = err.Error()
		}
		for _, ch := range All {
			if ch == CheckHandshake {
				c.fail(ch, "", "want an executable plugin at %s: %s", c.path, why)
			} else {
				c.skip(ch, "", "the plugin cannot be started")
			}
		}
		return
	}
	if c.want(CheckCookie) {
		c.checkCookie()
	}
	if c.ctx.Err() == nil && c.wantAny(CheckHandshake, CheckAutoMTLS, CheckDescribe, CheckHealth, CheckUnknownTask, CheckInvalidParams,
		CheckCancel, CheckDeadline, CheckIdentity, CheckRunStream, CheckStdout, CheckShutdown) {
		c.session()
	} else if c.ctx.Err() == nil && c.cookieExit {
		// Only the cookie check: start the plugin once with the cookie,
		// to know whether its exit without it says anything.
		s, _ := c.start()
		if s.proc != nil {
			line, _ := s.proc.firstLine(time.Second)
			c.noHandshake = line == ""
		}
		s.kill()
	}
	if c.cookieExit && c.noHandshake {
		for i, r := range c.report.Results {
			if r.Check == CheckCookie && r.Status == Pass {
				c.report.Results[i].Status = Skip
				c.report.Results[i].Reason = "it exits without a handshake with " + pluginv1.Handshake.MagicCookieKey + " set too (a crash at start?), so its exit without it says nothing about the cookie; " + r.Reason
				if len(c.report.Results[i].Reason) > 400 {
					c.report.Results[i].Reason = c.report.Results[i].Reason[:397] + "..."
				}
			}
		}
	}
	if c.ctx.Err() == nil && c.want(CheckSIGTERM) {
		c.checkSIGTERM()
	}
	if c.ctx.Err() == nil && c.want(CheckParentDeath) {
		c.checkParentDeath()
	}
}

// started is a plugin process connected through go-plugin, as the runner
// connects it.
type started struct {
	client *plugin.Client
	proto  plugin.ClientProtocol
	rpc    pluginv1.TaskPluginClient
	proc   *proc
	stderr *observability.SanitizedTail
}

// start launches the plugin through go-plugin's client with AutoMTLS.
func (c *checker) start() (*started, error) {
	var p *proc
	stderr := &observability.SanitizedTail{Max: 1024}
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  pluginv1.Handshake,
		VersionedPlugins: pluginv1.VersionedPlugins(nil),
		RunnerFunc:       newProc(c.path, c.env(), func(np *proc) { p = np; c.track(np) }),
		SkipHostEnv:      true, // c.env() instead, as the runner's host does
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		StartTimeout:     c.opts.StartTimeout,
		AutoMTLS:         true,
		Logger:           hclog.NewNullLogger(),
		Stderr:           stderr,
		SyncStdout:       io.Discard,
		SyncStderr:       io.Discard,
		GRPCDialOptions: []grpc.DialOption{grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(pluginv1.MaxMessageBytes), grpc.MaxCallSendMsgSize(pluginv1.MaxMessageBytes))},
	})
	s := &started{client: client, proc: p, stderr: stderr}
	proto, err := client.Client()
	s.proc = p
	if err != nil {
		return s, err
	}
	raw, err := proto.Dispense(pluginv1.PluginName)
	if err != nil {
		return s, err
	}
	s.proto, s.rpc = proto, raw.(pluginv1.TaskPluginClient)
	return s, nil
}

func (s *started) kill() {
	if s != nil && s.client != nil {
		s.client.Kill()
	}
}

// env is the environment a plugin process starts with, before go-plugin's
// handshake variables: the runner's rule (pluginenv) applied to this
// process's environment, Options.InheritEnv standing for
// plugins.inherit_env, then Options.Env.
func (c *checker) env() []string {
	return append(pluginenv.Process(os.Environ(), c.opts.InheritEnv, nil), c.opts.Env...)
}

// checkCookie starts the plugin without the magic cookie, as a user running
// it by hand would: it must say so and exit, not serve.
func (c *checker) checkCookie() {
	cmd := exec.Command(c.path)
	for _, kv := range c.env() {
		if !strings.HasPrefix(kv, pluginv1.Handshake.MagicCookieKey+"=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	out, errOut := syncbuf.Tail{Max: 512}, observability.SanitizedTail{Max: 512}
	cmd.Stdout, cmd.Stderr = &out, &errOut
	// A process the plugin started may hold its stdout past its exit:
	// Wait must not wait for it (it is killed below).
	cmd.WaitDelay = pipeGrace
	if err := cmd.Start(); err != nil {
		c.fail(CheckCookie, "", "want the plugin to start: %v", err)
		return
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer killGroup(cmd.Process.Pid) // what it started, too
	select {
	case err := <-done:
		switch {
		case looksLikeHandshake(out.String()):
			c.fail(CheckCookie, "", "want no handshake without %s; it printed %q and served", pluginv1.Handshake.MagicCookieKey, firstLine(out.String()))
		case err == nil:
			c.cookieExit = true
			c.pass(CheckCookie, "", "exited without a handshake when started without %s (exit status 0; 1 is usual)", pluginv1.Handshake.MagicCookieKey)
		default:
			// Its message is the last line of stderr (a crash's last line
			// says what it died of).
			c.cookieExit = true
			c.pass(CheckCookie, "", "exited without a handshake when started without %s (%s): %q", pluginv1.Handshake.MagicCookieKey, describeExit(err), lastLine(errOut.String()))
		}
	case <-c.ctx.Done():
		killGroup(cmd.Process.Pid)
		<-done
	case <-time.After(c.opts.StartTimeout):
		killGroup(cmd.Process.Pid)
		<-done
		if looksLikeHandshake(out.String()) {
			c.fail(CheckCookie, "", "want no handshake without %s; it printed %q and served", pluginv1.Handshake.MagicCookieKey, firstLine(out.String()))
			return
		}
		c.fail(CheckCookie, "", "want an exit when started without %s; still running after %s", pluginv1.Handshake.MagicCookieKey, c.opts.StartTimeout)
	}
}

func looksLikeHandshake(s string) bool {
	return strings.Count(firstLine(s), "|") >= 3
}

func firstLine(s string) string {
	line, _, _ := strings.Cut(s, "\n")
	return strings.TrimSpace(line)
}

// lastLine is s's last line that is not blank.
func lastLine(s string) string {
	s = strings.TrimSpace(s)
	return strings.TrimSpace(s[strings.LastIndexByte(s, '\n')+1:])
}

// session runs the checks of one plugin process connected as the runner
// connects it (and of its replacements, when a task ends the process).
func (c *checker) session() {
	s, err := c.start()
	c.s = s
	defer func() { c.s.kill() }()
	line := ""
	if s.proc != nil {
		line, _ = s.proc.firstLine(time.Second)
	}
	hs, hsErr := parseHandshake(line)
	c.noHandshake = s.proc != nil && line == ""
	if s.proc != nil && hsErr != nil {
		// No session follows. Killed (a no-op for a process that exited)
		// and waited for, so that its stderr is read to the end before
		// the failure quotes it: a crash's last line is its error.
		s.kill()
	}
	switch {
	case s.proc == nil:
		c.fail(CheckHandshake, "", "want the plugin to start: %v", err)
	case hsErr != nil && line == "" && err != nil:
		c.fail(CheckHandshake, "", "%v: %v%s", hsErr, err, stderrNote(s.stderr))
	case hsErr != nil:
		c.fail(CheckHandshake, "", "%v%s", hsErr, stderrNote(s.stderr))
	default:
		c.pass(CheckHandshake, "", "%s", redactCert(line))
	}
	if s.proc != nil && hsErr == nil {
		c.checkTLS(hs, err)
	} else {
		c.skip(CheckAutoMTLS, "", "no valid handshake")
	}
	if err != nil {
		for _, ch := range []string{CheckDescribe, CheckHealth, CheckUnknownTask, CheckInvalidParams, CheckCancel,
			CheckDeadline, CheckIdentity, CheckRunStream, CheckStdout, CheckShutdown} {
			c.skip(ch, "", "no connection to the plugin")
		}
		return
	}
	desc := c.checkDescribe(s.rpc)
	if c.want(CheckHealth) {
		if err := s.proto.Ping(); err != nil {
			c.fail(CheckHealth, "", "want grpc.health.v1 Check(%q) to answer SERVING; got %v", plugin.GRPCServiceName, err)
		} else {
			c.pass(CheckHealth, "", "grpc.health.v1 Check(%q): SERVING", plugin.GRPCServiceName)
		}
	}
	if desc != nil {
		c.guard(CheckUnknownTask, "", func() { c.checkUnknownTask() })
		for _, t := range desc.GetTasks() {
			c.checkTask(t)
		}
		c.guard(CheckRunStream, "", func() { c.checkRunStream(desc) })
	} else {
		for _, ch := range []string{CheckUnknownTask, CheckInvalidParams, CheckCancel, CheckDeadline, CheckIdentity, CheckRunStream} {
			c.skip(ch, "", "no usable Describe")
		}
	}
	if c.want(CheckStdout) {
		noise, n := c.stray()
		if n > 0 {
			c.fail(CheckStdout, "", "want nothing on stdout after the handshake; got %d bytes, starting %q: the runner drops them "+
				"(point file descriptor 1 at stderr once the handshake is written)", n, noise)
		} else {
			c.pass(CheckStdout, "", "nothing written to stdout after the handshake")
		}
	}
	if c.want(CheckShutdown) {
		if c.s.exited() && !c.restart() {
			c.skip(CheckShutdown, "", "the plugin process is gone and did not restart: %v", c.restartErr)
			return
		}
		t0 := time.Now()
		c.s.client.Kill() // the controller's Shutdown, then up to 2s for an exit, then a kill
		took := time.Since(t0)
		if c.s.proc.wasKilled() {
			c.fail(CheckShutdown, "", "want an exit within 2s of go-plugin's controller Shutdown; it was still running and was killed")
		} else {
			c.pass(CheckShutdown, "", "exited %s after the controller's Shutdown", took.Round(time.Millisecond))
		}
	}
}

// guard runs a check that calls the plugin. If the plugin process exits
// during it, the check fails for that, whatever it found, and a new process
// is started for the checks after it, as the runner would; after
// maxRestarts, later checks are skipped.
func (c *checker) guard(check, task string, fn func()) {
	if !c.want(check) {
		return
	}
	if c.s.exited() && !c.restart() {
		c.skip(check, task, "the plugin process is gone and did not restart: %v", c.restartErr)
		return
	}
	n := len(c.report.Results)
	c.calls = c.calls[:0]
	fn()
	// A Run whose connection broke (Unavailable) means the plugin is going:
	// its exit is awaited long enough for a loaded machine to reap it, so
	// it is not blamed on the next check. Otherwise a short wait catches a
	// process that ends just after its Run answered.
	lost := c.connectionLost()
	wait := 500 * time.Millisecond
	if lost {
		wait = lostWait
	}
	var why string
	switch {
	case c.s.proc.waitExit(wait):
		why = fmt.Sprintf("want the plugin process to outlive its runs; it exited (%s) during this check", describeExit(c.s.proc.waitErr))
	case lost:
		// What served the Run is gone, but the process has not been
		// seen to end: a child it started holds its output open, or its
		// server ran in another process of it (attack 14, K10: such a
		// crash passed the check, and the next checks ran against the
		// dead plugin). The runner would restart it: so does the next
		// check.
		why = fmt.Sprintf("want the plugin to keep serving its runs; its connection broke (status Unavailable) during this check, and the plugin did not end within %s (a process it started may hold its output open): killed, to start a new one", lostWait)
		c.s.kill()
	default:
		return
	}
	if len(c.report.Results) > n {
		r := &c.report.Results[len(c.report.Results)-1]
		r.Status, r.Reason = Fail, why
	} else {
		c.fail(check, task, "%s", why)
	}
}

// lostWait is how long guard waits for the plugin process to exit after a
// Run's connection broke.
const lostWait = 5 * time.Second

// connectionLost reports whether a Run of the check ended because its
// connection broke (status Unavailable).
func (c *checker) connectionLost() bool {
	for _, r := range c.calls {
		select {
		case <-r.done:
		default:
			continue
		}
		r.mu.Lock()
		lost := r.code == codes.Unavailable
		r.mu.Unlock()
		if lost {
			return true
		}
	}
	return false
}

const maxRestarts = 3

// restart replaces a plugin process that exited.
func (c *checker) restart() bool {
	if c.restarts >= maxRestarts {
		if c.restartErr == nil {
			c.restartErr = fmt.Errorf("it exited %d times", c.restarts+1)
		}
		return false
	}
	c.restarts++
	c.noise = append(c.noise, c.s)
	c.s.kill()
	s, err := c.start()
	c.s = s
	if err != nil {
		c.restartErr = err
		c.restarts = maxRestarts
		return false
	}
	return true
}

// stray is what every process of the session wrote to stdout after its
// handshake.
func (c *checker) stray() ([]byte, int) {
	var noise []byte
	total := 0
	for _, s := range append(c.noise, c.s) {
		if s == nil || s.proc == nil {
			continue
		}
		b, n := s.proc.stray()
		if len(noise) == 0 {
			noise = b
		}
		total += n
	}
	return noise, total
}

func (s *started) exited() bool {
	return s == nil || s.proc == nil || s.proc.waitExit(0)
}

// stderrNote quotes the end of a plugin's stderr for a failure's reason,
// which is cut at 400 characters: only its last stderrQuote bytes, from a
// line start where it can, so that the last line (a traceback's, the error
// itself) is never what is cut off.
func stderrNote(t *observability.SanitizedTail) string {
	said := t.String()
	if said == "" {
		return ""
	}
	if len(said) > stderrQuote {
		said = said[len(said)-stderrQuote:]
		if i := strings.IndexByte(said, '\n'); i >= 0 && i < len(said)-1 && len(said)-i > stderrQuote/3 {
			said = said[i+1:]
		}
		said = "..." + strings.ToValidUTF8(said, "")
	}
	return fmt.Sprintf(" (stderr ended with %q)", said)
}

const stderrQuote = 160

// handshake is a parsed handshake line.
type handshake struct {
	network, address, cert string
}

// parseHandshake checks a handshake line as go-plugin's client does.
func parseHandshake(line string) (handshake, error) {
	line = strings.TrimRight(line, "\r\n")
	if line == "" {
		return handshake{}, errors.New("want a handshake line CORE|APP|NETWORK|ADDRESS|grpc|CERT on stdout; got none")
	}
	parts := strings.Split(strings.TrimSpace(line), "|")
	if len(parts) < 4 {
		return handshake{}, fmt.Errorf("want the first line of stdout to be CORE|APP|NETWORK|ADDRESS|grpc|CERT; got %q (print nothing before the handshake)", truncate(line, 120))
	}
	if parts[0] != "1" {
		return handshake{}, fmt.Errorf("want go-plugin core protocol version 1 (field 1); got %q", parts[0])
	}
	if parts[1] != fmt.Sprint(pluginv1.ProtocolVersion) {
		return handshake{}, fmt.Errorf("want Pacer protocol version %d (field 2); got %q", pluginv1.ProtocolVersion, parts[1])
	}
	if parts[2] != "unix" && parts[2] != "tcp" {
		return handshake{}, fmt.Errorf("want network unix or tcp (field 3); got %q", parts[2])
	}
	if len(parts) < 5 || parts[4] != "grpc" {
		got := ""
		if len(parts) >= 5 {
			got = parts[4]
		}
		return handshake{}, fmt.Errorf("want protocol grpc (field 5); got %q", got)
	}
	h := handshake{network: parts[2], address: parts[3]}
	if len(parts) >= 6 {
		h.cert = parts[5]
	}
	return h, nil
}

func redactCert(line string) string {
	line = strings.TrimSpace(line)
	if i := strings.LastIndexByte(line, '|'); i >= 0 && len(line)-i > 50 {
		return line[:i+1] + "<certificate>"
	}
	return line
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "..."
}

// checkTLS checks the AutoMTLS half of the handshake: the certificate, that
// go-plugin connected with it (connErr), and that a stranger cannot connect.
func (c *checker) checkTLS(h handshake, connErr error) {
	if !c.want(CheckAutoMTLS) {
		return
	}
	if len(h.cert) <= 50 {
		c.fail(CheckAutoMTLS, "", "want the plugin's certificate in field 6 of the handshake (PLUGIN_CLIENT_CERT was set); got %q", h.cert)
		return
	}
	der, err := base64.RawStdEncoding.DecodeString(h.cert)
	if err != nil {
		c.fail(CheckAutoMTLS, "", "want field 6 to be a DER certificate in base64 without padding (Go's RawStdEncoding); %v", err)
		return
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		c.fail(CheckAutoMTLS, "", "want field 6 to be a DER certificate: %v", err)
		return
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	if _, err := cert.Verify(x509.VerifyOptions{DNSName: "localhost", Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}); err != nil {
		c.fail(CheckAutoMTLS, "", "want a certificate the runner accepts for \"localhost\" as a server: %v", err)
		return
	}
	if connErr != nil {
		c.fail(CheckAutoMTLS, "", "want a gRPC connection over TLS with the runner's client certificate; got %v", connErr)
		return
	}
	// A client without the runner's certificate must be refused.
	stranger, err := selfSigned()
	if err != nil {
		c.fail(CheckAutoMTLS, "", "cannot make a test certificate: %v", err)
		return
	}
	for _, who := range []struct {
		name  string
		certs []tls.Certificate
	}{{"a client with another certificate", []tls.Certificate{stranger}}, {"a client without a certificate", nil}} {
		cfg := &tls.Config{RootCAs: pool, ServerName: "localhost", Certificates: who.certs, MinVersion: tls.VersionTLS12}
		if err := tryDescribe(h, cfg); err == nil {
			c.fail(CheckAutoMTLS, "", "want only the runner's certificate accepted; %s called Describe", who.name)
			return
		}
	}
	c.pass(CheckAutoMTLS, "", "TLS with a certificate for localhost; clients without the runner's certificate are refused")
}

func tryDescribe(h handshake, cfg *tls.Config) error {
	target := h.address
	if h.network == "unix" {
		target = "unix:" + h.address
	}
	cc, err := grpc.NewClient(target, grpc.WithTransportCredentials(credentials.NewTLS(cfg)))
	if err != nil {
		return err
	}
	defer cc.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	_, err = pluginv1.NewTaskPluginClient(cc).Describe(ctx, &pluginv1.DescribeRequest{})
	return err
}

// checkDescribe checks Describe's answer; it returns it if the task checks
// can use it.
func (c *checker) checkDescribe(rpc pluginv1.TaskPluginClient) *pluginv1.DescribeResponse {
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.StartTimeout)
	defer cancel()
	desc, err := rpc.Describe(ctx, &pluginv1.DescribeRequest{})
	if err != nil {
		c.fail(CheckDescribe, "", "want Describe to answer; got %v", err)
		return nil
	}
	c.report.Plugin, c.report.Version, c.report.SDKVersion = desc.GetName(), desc.GetVersion(), desc.GetSdkVersion()
	var problems []string
	if desc.GetName() == "" {
		problems = append(problems, "the plugin has no name")
	}
	if len(desc.GetTasks()) == 0 {
		problems = append(problems, "the plugin offers no task")
	}
	seen := map[string]bool{}
	var names []string
	for _, t := range desc.GetTasks() {
		switch {
		case t.GetName() == "":
			problems = append(problems, "a task has no name")
		case seen[t.GetName()]:
			problems = append(problems, fmt.Sprintf("task %q is listed twice", t.GetName()))
		}
		seen[t.GetName()] = true
		names = append(names, t.GetName())
		if _, err := paramschema.Parse(t.GetParamsSchemaJson()); err != nil {
			problems = append(problems, fmt.Sprintf("task %q: the runner refuses its %v", t.GetName(), err))
			continue
		}
		if unknown := unknownKeywords(t.GetParamsSchemaJson()); len(unknown) > 0 {
			problems = append(problems, fmt.Sprintf("task %q: its params schema uses %s, which the runner ignores (it checks only %s)",
				t.GetName(), strings.Join(unknown, ", "), strings.Join(Keywords(), ", ")))
		}
	}
	if len(problems) > 0 {
		c.fail(CheckDescribe, "", "%s", strings.Join(problems, "; "))
		return nil
	}
	c.pass(CheckDescribe, "", "%s %s (sdk %s): %d task(s): %s", desc.GetName(), orDash(desc.GetVersion()), orDash(desc.GetSdkVersion()), len(names), strings.Join(names, ", "))
	return desc
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func (c *checker) checkUnknownTask() {
	const task = "pacer-check-no-such-task"
	r := c.call(task, map[string]any{}, 0)
	r.wait(c.opts.Grace)
	switch {
	case !r.ended():
		c.fail(CheckUnknownTask, "", "want a Run of task %q to end with NotFound; no answer within %s", task, c.opts.Grace)
	case r.code == codes.NotFound:
		c.pass(CheckUnknownTask, "", "NotFound: %s", r.msg)
	default:
		c.fail(CheckUnknownTask, "", "want a Run of task %q to end with status NotFound; got %s", task, r.describe())
	}
	r.hangUp()
}
