package main

import (
	"bytes"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"github.com/pacerun/pacer/internal/backoff"
	"github.com/pacerun/pacer/internal/oneline"
	"github.com/pacerun/pacer/internal/regfile"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/config"
	"github.com/pacerun/pacer/runner/coord"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// clientFlags are the flags of the subcommands that talk to a runner's API.
type clientFlags struct {
	addr   string
	output string
	token  string
	// idemKey is the Idempotency-Key of a mutating call (trigger, pause,
	// resume); made up when not given.
	idemKey string
	mutates bool
	// timeout bounds each request's wait for its answer (default
	// defaultTimeout): longer for a call the runner may take long to
	// answer.
	timeout time.Duration
	// HTTPS: the CA that signed the runner's certificate (default: the
	// system's), and a client certificate for a runner that requires one
	// (http.tls.client_ca_file).
	caFile, certFile, keyFile string
	// serverName is the name the runner's certificate must hold, when the
	// address does not (kubectl port-forward to localhost): also sent as
	// SNI.
	serverName string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	def := os.Getenv("PACER_ADDR")
	if def == "" {
		def = "http://127.0.0.1:9464"
	}
	fs.StringVar(&c.addr, "addr", def, "runner API address, http:// or https:// (env PACER_ADDR)")
	fs.StringVar(&c.output, "o", "table", "output format: table or json")
	fs.StringVar(&c.token, "token", strings.TrimSpace(os.Getenv("PACER_API_TOKEN")), "API bearer token (env PACER_API_TOKEN)")
	fs.StringVar(&c.caFile, "ca-file", os.Getenv("PACER_CA_FILE"), "PEM CA bundle to verify an https runner with (env PACER_CA_FILE; default: the system's)")
	fs.StringVar(&c.certFile, "cert-file", os.Getenv("PACER_CERT_FILE"), "PEM client certificate, for a runner that requires one (env PACER_CERT_FILE)")
	fs.StringVar(&c.keyFile, "key-file", os.Getenv("PACER_KEY_FILE"), "PEM key of --cert-file (env PACER_KEY_FILE)")
	fs.StringVar(&c.serverName, "server-name", os.Getenv("PACER_SERVER_NAME"),
		"`name` the https runner's certificate must hold, when --addr does not name it, as through kubectl port-forward (env PACER_SERVER_NAME; default: --addr's host)")
	// The environment's values are the defaults, but the help (-h, or a
	// mistyped flag) shows neither the token nor an address that may carry
	// a password: usage text does not pass the sanitizer.
	fs.Lookup("token").DefValue = ""
	fs.Lookup("addr").DefValue = "http://127.0.0.1:9464"
	if c.mutates {
		fs.StringVar(&c.idemKey, "idempotency-key", "",
			"Idempotency-Key of the request: up to 255 printable ASCII characters without spaces, double quotes or backslashes (default: a new random key); repeating a call with the same key takes effect once")
	}
}

// httpClient is the client for the runner's API, with the TLS settings of
// the flags.
func (c *clientFlags) httpClient(timeout time.Duration) (*http.Client, error) {
	if c.caFile == "" && c.certFile == "" && c.keyFile == "" && c.serverName == "" {
		return &http.Client{Timeout: timeout}, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.serverName}
	if c.caFile != "" {
		pem, err := regfile.Read(c.caFile, regfile.MaxPEMBytes)
		if err != nil {
			return nil, fmt.Errorf("--ca-file: %w", err)
		}
		cfg.RootCAs = x509.NewCertPool()
		if !cfg.RootCAs.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("--ca-file: %s holds no PEM certificate", c.caFile)
		}
	}
	if (c.certFile == "") != (c.keyFile == "") {
		return nil, fmt.Errorf("%w: --cert-file and --key-file go together (env PACER_CERT_FILE, PACER_KEY_FILE)", errUsage)
	}
	if c.certFile != "" {
		kp, err := regfile.KeyPair(c.certFile, c.keyFile)
		if err != nil {
			return nil, fmt.Errorf("--cert-file/--key-file: %w", err)
		}
		cfg.Certificates = []tls.Certificate{kp}
	}
	return &http.Client{Timeout: timeout, Transport: &http.Transport{TLSClientConfig: cfg}}, nil
}

// parse parses a client subcommand's flags and returns its positional args.
func (c *clientFlags) parse(name string, args []string, stderr io.Writer, nargs int, usage string) ([]string, error) {
	return c.parseWith(name, args, stderr, nargs, usage, nil)
}

// parseWith is parse for a subcommand with flags of its own, which extra
// registers.
func (c *clientFlags) parseWith(name string, args []string, stderr io.Writer, nargs int, usage string, extra func(*flag.FlagSet)) ([]string, error) {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs)
	if extra != nil {
		extra(fs)
	}
	// Flags may follow the positional arguments: pacer runs JOB -o json.
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		if nargs > 0 && strings.HasPrefix(err.Error(), "flag provided but not defined") {
			// "pacer trigger -x": a job ID may start with '-'.
			return nil, fmt.Errorf("%w: %v (an argument that starts with '-' goes after --: pacer %s -- -x)", errUsage, err, name)
		}
		return nil, fmt.Errorf("%w: %w", errUsage, err)
	}
	if len(pos) != nargs {
		return nil, fmt.Errorf("%w: usage: pacer %s", errUsage, usage)
	}
	// A token no request can carry is the caller's mistake, said at once:
	// not "cannot reach the runner", retried for half a minute (attack 23,
	// U3). The token itself is not printed.
	if c.token != "" {
		if msg := config.TokenProblem(c.token); msg != "" {
			return nil, fmt.Errorf("%w: the API token (--token, env PACER_API_TOKEN) %s", errUsage, msg)
		}
	}
	return pos, nil
}

// parseInterspersed parses args with fs, flags before, between and after
// the positional arguments, which it returns in order.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := parseFlagSet(fs, args); err != nil {
			return nil, err
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// parseFlagSet parses args with fs. For a bad flag the flag package writes
// a line of its own, quoting the value as given, before the usage; that
// line is left out, because the caller returns the error and main prints it
// through the sanitizer (attack 16, G1: `--limit ops@example.com` was
// printed as typed). The usage, and -h's, still go to fs's output.
func parseFlagSet(fs *flag.FlagSet, args []string) error {
	out := fs.Output()
	fs.SetOutput(io.Discard)
	err := fs.Parse(args)
	fs.SetOutput(out)
	if err != nil {
		fs.Usage()
	}
	return err
}

// get fetches path from the runner's API into v, passing raw JSON to stdout
// when -o json is set.
func (c *clientFlags) get(path string, v any, stdout io.Writer) (raw bool, err error) {
	return c.do(http.MethodGet, path, nil, v, stdout)
}

// defaultTimeout bounds a request's wait for its answer, unless
// clientFlags.timeout says otherwise.
const defaultTimeout = 10 * time.Second

func (c *clientFlags) do(method, path string, header http.Header, v any, stdout io.Writer) (raw bool, err error) {
	timeout := c.timeout
	if timeout <= 0 {
		timeout = defaultTimeout
	}
	resp, err := c.send(method, path, header, timeout)
	if err != nil {
		return false, err
	}
	return c.decode(resp, v, stdout)
}

// reply is an API answer.
type reply struct {
	status int
	header http.Header
	body   []byte
	where  string // address and path, for messages
}

// err is the answer's error, if its status is not 2xx.
func (r *reply) err() error {
	if r.status/100 == 2 {
		return nil
	}
	var e struct{ Error string }
	if json.Unmarshal(r.body, &e) == nil && e.Error != "" {
		return fmt.Errorf("%d %s: %s", r.status, http.StatusText(r.status), e.Error)
	}
	return fmt.Errorf("%d %s from %s", r.status, http.StatusText(r.status), r.where)
}

// errNoAnswer is the error of a mutating request that was sent, but not
// answered (in time): the runner may still be at it, or may have done it,
// so "cannot reach the runner" would mislead (S6: a restart that took
// longer than the CLI waited went through).
var errNoAnswer = errors.New("the request may still be in progress, or may have taken effect")

// notSent is the error of a request the runner did not get, and would not
// get if repeated: found before it was sent (a usage error, a TLS file
// that cannot be read, an address no request can go to), or a TLS
// handshake that failed over a certificate. mutate reports it at once
// (attack 23, U6: a usage error was repeated six times over 31 s).
type notSent struct{ err error }

func (e notSent) Error() string { return e.err.Error() }
func (e notSent) Unwrap() error { return e.err }

// send makes one request and reads the answer, whatever its status.
func (c *clientFlags) send(method, path string, header http.Header, timeout time.Duration) (*reply, error) {
	addr := strings.TrimSuffix(c.addr, "/")
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	if !strings.HasPrefix(addr, "http://") && !strings.HasPrefix(addr, "https://") {
		return nil, notSent{fmt.Errorf("%w: --addr %s (env PACER_ADDR): want an http:// or https:// address", errUsage, addr)}
	}
	hc, err := c.httpClient(timeout)
	if err != nil {
		return nil, notSent{err}
	}
	var reqBody io.Reader
	if method != http.MethodGet {
		reqBody = strings.NewReader("{}")
	}
	req, err := http.NewRequest(method, addr+path, reqBody)
	if err != nil {
		return nil, notSent{fmt.Errorf("%w: --addr %s (env PACER_ADDR): %w", errUsage, addr, err)}
	}
	if reqBody != nil {
		// The API takes mutating calls as JSON only (a web page cannot
		// send that to another site without asking first).
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	var wrote atomic.Bool // the whole request went out: the runner may have it
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		WroteRequest: func(w httptrace.WroteRequestInfo) { wrote.Store(w.Err == nil) },
	}))
	resp, err := hc.Do(req)
	switch hint := c.tlsHint(err); {
	case hint != "":
		// Before "no answer": under TLS 1.3 a runner refuses a client
		// certificate after the request went out, and never read it.
		return nil, notSent{fmt.Errorf("TLS with the runner at %s failed: %w; %s", addr, err, hint)}
	case err != nil && wrote.Load() && method != http.MethodGet:
		return nil, fmt.Errorf("no answer from the runner at %s within %s: %w (%w)", addr, timeout, errNoAnswer, err)
	case err != nil && wrote.Load():
		// It took the request: it runs, at that address (attack 24, V4).
		return nil, fmt.Errorf("no answer from the runner at %s within %s: it took the request but did not answer "+
			"(is it stopped, overloaded or stuck? pacer status, its log and /healthz say more): %w", addr, timeout, err)
	case err != nil:
		return nil, fmt.Errorf("cannot reach the runner at %s: %w (is it running? set --addr or PACER_ADDR)", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer from %s: %w", addr, err)
	}
	if resp.StatusCode == http.StatusBadRequest && strings.HasPrefix(addr, "http://") &&
		bytes.Contains(body, []byte("Client sent an HTTP request to an HTTPS server")) {
		// Go's TLS server's answer to plain HTTP: nothing took effect
		// (attack 24, V3: a bare "400 Bad Request").
		return nil, notSent{fmt.Errorf("the runner at %s answers in TLS: use https:// in --addr (env PACER_ADDR)", addr)}
	}
	return &reply{status: resp.StatusCode, header: resp.Header, body: body, where: addr + path}, nil
}

// tlsHint says what to do about err if it is a TLS error over a
// certificate, the runner's or the client's, or returns "": such an error
// is no reason to ask whether the runner runs (attack 23, U12).
func (c *clientFlags) tlsHint(err error) string {
	if err == nil {
		return ""
	}
	var (
		unknown x509.UnknownAuthorityError
		host    x509.HostnameError
		invalid x509.CertificateInvalidError
		verify  *tls.CertificateVerificationError
		record  tls.RecordHeaderError
		op      *net.OpError
	)
	switch {
	case errors.As(err, &unknown):
		return "the runner's certificate is not signed by a CA this machine trusts: give the CA that signed it with --ca-file (env PACER_CA_FILE)"
	case errors.As(err, &host):
		return "the runner's certificate does not name the host of --addr: use an address it names, or give a name it holds with " +
			"--server-name (env PACER_SERVER_NAME), as through kubectl port-forward: --server-name pacer.NAMESPACE.svc"
	case errors.As(err, &invalid):
		return "the runner's certificate cannot be used (expired, not yet valid, or not for a server): renew it (http.tls.cert_file), " +
			"or check this machine's clock"
	case errors.As(err, &verify):
		return "the runner's certificate did not verify: give the CA that signed it with --ca-file (env PACER_CA_FILE)"
	case errors.Is(err, http.ErrSchemeMismatch) || errors.As(err, &record):
		return "the runner does not answer in TLS: use http:// in --addr, or set http.tls on the runner"
	case errors.As(err, &op) && op.Op == "remote error" && op.Err != nil && strings.HasPrefix(op.Err.Error(), "tls: "):
		// The runner sent a TLS alert: it refused this side's certificate,
		// or its lack of one.
		alert := strings.TrimPrefix(op.Err.Error(), "tls: ")
		switch {
		case c.certFile == "" && (alert == "certificate required" || alert == "bad certificate"):
			return "the runner requires a client certificate (http.tls.client_ca_file): give one with --cert-file and --key-file " +
				"(env PACER_CERT_FILE, PACER_KEY_FILE)"
		case strings.Contains(alert, "certificate"): // bad, unknown, expired ... certificate, unknown certificate authority
			return "the runner refused the client certificate of --cert-file: it must be valid and signed by a CA of the runner's " +
				"http.tls.client_ca_file"
		case c.certFile == "": // Go's runner under TLS 1.2: "handshake failure"
			return "the runner refused the TLS handshake; if it requires a client certificate (http.tls.client_ca_file), give one " +
				"with --cert-file and --key-file (env PACER_CERT_FILE, PACER_KEY_FILE)"
		default:
			return "the runner refused the TLS handshake: check --addr, --server-name and the client certificate of --cert-file"
		}
	}
	return ""
}

// decode passes the answer's raw JSON to stdout when -o json is set, else
// decodes it into v.
func (c *clientFlags) decode(r *reply, v any, stdout io.Writer) (raw bool, err error) {
	if err := r.err(); err != nil {
		return false, err
	}
	switch c.output {
	case "json":
		_, err := stdout.Write(r.body)
		return true, err
	case "table":
		return false, json.Unmarshal(r.body, v)
	default:
		return false, fmt.Errorf("%w: -o %q: want table or json", errUsage, c.output)
	}
}

// Retries of a mutating call: how many tries, and the pause before the
// first retry (doubling).
const (
	mutateTries     = 6
	mutateFirstWait = time.Second
	mutateTimeout   = 30 * time.Second // per try: the runner may take 2 × etcd's request_timeout to answer
)

// mutate sends a mutating call with an Idempotency-Key, and repeats it with
// the same key (so it takes effect once) while its outcome is not known:
// the runner cannot be reached or did not answer, answered 502, 503 or 504,
// or answered that etcd did not confirm the request (state unconfirmed). A
// 429 (over the runner's rate limit: nothing happened) is repeated after
// the Retry-After it asks for, if that is at most 10s. A request the runner
// did not get and never would (notSent: a usage error, a TLS file or
// certificate problem) is not repeated.
// It returns the last answer; a final unconfirmed one is an error that
// says how to find out.
func (c *clientFlags) mutate(path string, header http.Header, v any, stdout, stderr io.Writer) (raw bool, err error) {
	if header == nil {
		header = http.Header{}
	}
	if c.idemKey == "" {
		c.idemKey = newIdempotencyKey()
	}
	header.Set("Idempotency-Key", c.idemKey)
	wait := backoff.New(backoff.Policy{Initial: mutateFirstWait})
	for try := 1; ; try++ {
		resp, err := c.send(http.MethodPost, path, header, mutateTimeout)
		var why string
		var pause time.Duration // the runner's Retry-After, if it asked for one
		switch {
		case errors.As(err, new(notSent)):
			return false, err // repeating it cannot help
		case err != nil:
			why = err.Error()
		case resp.status == http.StatusTooManyRequests:
			secs, _ := strconv.Atoi(resp.header.Get("Retry-After"))
			if secs < 1 || secs > 10 {
				return c.decode(resp, v, stdout)
			}
			why, pause = resp.err().Error(), time.Duration(secs)*time.Second
		case resp.status == http.StatusBadGateway || resp.status == http.StatusServiceUnavailable || resp.status == http.StatusGatewayTimeout:
			why = resp.err().Error()
		default:
			var st struct{ State, Detail string }
			if resp.status/100 == 2 && json.Unmarshal(resp.body, &st) == nil && st.State == "unconfirmed" {
				why = st.Detail
				if try == mutateTries {
					return false, fmt.Errorf("outcome unknown after %d tries: %s", try, st.Detail)
				}
				break
			}
			return c.decode(resp, v, stdout)
		}
		if try == mutateTries {
			if err != nil {
				return false, err
			}
			return c.decode(resp, v, stdout)
		}
		if pause == 0 {
			pause = wait.Next()
		}
		fmt.Fprintf(stderr, "pacer: %s; trying again in %s with the same Idempotency-Key %s (try %d of %d)\n",
			observability.DefaultSanitizer().String(why), pause, c.idemKey, try+1, mutateTries)
		time.Sleep(pause)
	}
}

// newIdempotencyKey is a random key for one command.
func newIdempotencyKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	return "cli-" + hex.EncodeToString(b)
}

func pluginsCmd(args []string, stdout, stderr io.Writer) error {
	if len(args) > 0 && args[0] == "check" {
		return pluginsCheckCmd(args[1:], stdout, stderr)
	}
	if len(args) > 0 && args[0] == "restart" {
		return pluginsRestartCmd(args[1:], stdout, stderr)
	}
	var c clientFlags
	if _, err := c.parse("plugins", args, stderr, 0, "plugins [--addr URL] [-o json]"); err != nil {
		return err
	}
	var resp struct{ Plugins []pluginhost.Status }
	if raw, err := c.get("/api/v1/plugins", &resp, stdout); err != nil || raw {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PLUGIN\tSTATE\tCAUSE\tVERSION\tPID\tRESTARTS\tTASKS")
	var notes []string
	for _, p := range resp.Plugins {
		var tasks []string
		for _, t := range p.Tasks {
			tasks = append(tasks, t.Name)
		}
		row(tw, p.Name, p.State, orDash(p.Cause), orDash(p.Version), orDash(pid(p.PID)), p.Restarts, orDash(strings.Join(tasks, ", ")))
		// The errors go below the table, one line each: an identity error
		// lists every job that uses the plugin and would widen every row.
		why := p.Error
		if why == "" {
			why = p.LastError
		}
		if why == "" && p.Quarantined == nil {
			continue
		}
		note := p.Name
		if p.Quarantined != nil {
			note += " (quarantined until " + p.Quarantined.Format(time.RFC3339) + ")"
		}
		if why != "" {
			// Sanitized here too: a runner of an older version sent it as
			// the plugin wrote it.
			note += ": " + cutNote(observability.DefaultSanitizer().String(why))
		}
		notes = append(notes, note)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(notes) > 0 {
		fmt.Fprintln(stdout)
		for _, n := range notes {
			fmt.Fprintln(stdout, n)
		}
	}
	return nil
}

// pluginNoteMax bounds an error under the plugins table, in characters.
const pluginNoteMax = 300

// cutNote is one line of at most pluginNoteMax characters of an error,
// saying where the whole text is when it is cut.
func cutNote(s string) string {
	s = oneline.Escape(strings.Join(strings.Fields(s), " "))
	r := []rune(s)
	if len(r) <= pluginNoteMax {
		return s
	}
	return string(r[:pluginNoteMax]) + "… (cut; -o json has the whole error)"
}

// row writes one row of a table to tw, each cell as cell prints it.
func row(tw io.Writer, cells ...any) {
	var b strings.Builder
	for i, c := range cells {
		if i > 0 {
			b.WriteByte('\t')
		}
		b.WriteString(cell(fmt.Sprint(c)))
	}
	b.WriteByte('\n')
	_, _ = io.WriteString(tw, b.String())
}

// cell is a text from the runner as the CLI prints it in a table or a
// status line: through the sanitizer its errors pass (errorText), so that
// no cell shows what the runner's log would mask (an etcd endpoint's
// password, from a runner of an older version too: attack 23, U7), then
// through oneline.Escape, so that no cell's text (a plugin's version, a
// run's error, a replica's note) can add a row or a column, or send the
// terminal an escape sequence. Job IDs, node, plugin and task names pass
// unchanged: the config refuses names the sanitizer would change.
func cell(s string) string { return oneline.Escape(observability.DefaultSanitizer().String(s)) }

func pid(p int) string {
	if p == 0 {
		return ""
	}
	return fmt.Sprint(p)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

type jobView struct {
	ID, Plugin, Task, Schedule, Timezone string
	State                                string
	Paused                               bool
	Running                              int
	Shard                                int
	Next                                 string
}

// maxJobPages bounds the pages `pacer jobs` follows before the first page
// says how many jobs there are; from then on the bound is twice the pages
// that many jobs take, so that a runner whose cursors never end (a bug)
// cannot keep the CLI going, whatever --limit is (attack 19, P11: 1,500
// jobs at --limit 1 stopped at 1,000 pages).
const maxJobPages = 1000

func jobsCmd(args []string, stdout, stderr io.Writer) error {
	var c clientFlags
	var state string
	var limit limitFlag
	if _, err := c.parseWith("jobs", args, stderr, 0, "jobs [--state active|paused|unknown|running] [--limit N] [--addr URL] [-o json]", func(fs *flag.FlagSet) {
		fs.StringVar(&state, "state", "", "only jobs in these states, comma-separated: active, paused, unknown, running")
		fs.Var(&limit, "limit", fmt.Sprintf("`N` jobs per API request, 1 to %d (the runner's default, 500, when not given); every page is fetched", runner.MaxJobsLimit))
	}); err != nil {
		return err
	}
	if err := limit.check(runner.MaxJobsLimit); err != nil {
		return err
	}
	if c.output != "table" && c.output != "json" {
		return fmt.Errorf("%w: -o %q: want table or json", errUsage, c.output)
	}
	// Every page, in order; the output is one listing either way.
	out := c
	out.output = "table" // decode each page here
	var all []json.RawMessage
	cursor, total, maxPages := "", 0, maxJobPages
	for pages := 0; ; pages++ {
		if pages == maxPages {
			return fmt.Errorf("more than %d pages of jobs (%d listed of %d): the runner's cursor does not end the listing", maxPages, len(all), total)
		}
		q := url.Values{}
		if state != "" {
			q.Set("state", state)
		}
		if limit.set {
			q.Set("limit", strconv.Itoa(limit.n))
		}
		if cursor != "" {
			q.Set("cursor", cursor)
		}
		var page struct {
			Jobs       []json.RawMessage `json:"jobs"`
			NextCursor string            `json:"next_cursor"`
			Total      int               `json:"total"`
		}
		if _, err := out.get("/api/v1/jobs?"+q.Encode(), &page, stdout); err != nil {
			return err
		}
		all, total = append(all, page.Jobs...), page.Total
		if page.NextCursor == "" || page.NextCursor == cursor {
			break
		}
		if pages == 0 && len(page.Jobs) > 0 {
			maxPages = max(maxJobPages, 2*(total/len(page.Jobs)+1))
		}
		cursor = page.NextCursor
	}
	if c.output == "json" {
		return json.NewEncoder(stdout).Encode(map[string]any{"jobs": all, "total": total})
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "JOB\tSCHEDULE\tTIMEZONE\tPLUGIN/TASK\tSTATE\tRUNNING\tSHARD\tNEXT")
	for _, raw := range all {
		var j jobView
		if err := json.Unmarshal(raw, &j); err != nil {
			return err
		}
		state, next := j.State, orDash(j.Next)
		switch {
		case state != "": // active, paused, or unknown (the replica has not read the pause flags)
		case j.Paused:
			state = "paused"
		default:
			state = "active"
		}
		if t, err := time.Parse(time.RFC3339, j.Next); err == nil {
			next = t.Local().Format(time.DateTime)
		}
		row(tw, j.ID, j.Schedule, j.Timezone, j.Plugin+"/"+j.Task, state, j.Running, j.Shard, next)
	}
	return tw.Flush()
}

func triggerCmd(args []string, stdout, stderr io.Writer) error {
	c := clientFlags{mutates: true}
	pos, err := c.parse("trigger", args, stderr, 1, "trigger JOB [--addr URL] [--token T] [--idempotency-key K]")
	if err != nil {
		return err
	}
	var t struct {
		Job            string `json:"job"`
		TriggerID      string `json:"trigger_id"`
		CorrelationID  string `json:"correlation_id"`
		IdempotencyKey string `json:"idempotency_key"`
		Replayed       bool   `json:"replayed"`
		Warning        string `json:"warning"`
	}
	h := http.Header{}
	if corr := os.Getenv("PACER_CORRELATION_ID"); corr != "" {
		// The runner refuses the same IDs (400); saying so here costs no call.
		if err := observability.CheckCorrelationID(corr, nil); err != nil {
			return fmt.Errorf("%w: PACER_CORRELATION_ID: %v", errUsage, err)
		}
		h.Set("X-Correlation-ID", corr)
	}
	if raw, err := c.mutate("/api/v1/jobs/"+url.PathEscape(pos[0])+"/trigger", h, &t, stdout, stderr); err != nil || raw {
		return err
	}
	what := "triggered"
	if t.Replayed {
		what = "already triggered by an earlier request with idempotency key " + t.IdempotencyKey + ":"
	}
	_, err = fmt.Fprintf(stdout, "%s %s (trigger %s, correlation ID %s)\nfollow it with: pacer runs %s\n",
		what, pos[0], orDash(t.TriggerID), orDash(t.CorrelationID), pos[0])
	if t.Warning != "" {
		fmt.Fprintln(stderr, "warning:", t.Warning)
	}
	return err
}

func pauseCmd(verb string) func([]string, io.Writer, io.Writer) error {
	return func(args []string, stdout, stderr io.Writer) error {
		c := clientFlags{mutates: true}
		pos, err := c.parse(verb, args, stderr, 1, verb+" JOB [--addr URL] [--token T] [--idempotency-key K]")
		if err != nil {
			return err
		}
		var r struct {
			Job      string
			Replayed bool
		}
		if raw, err := c.mutate("/api/v1/jobs/"+url.PathEscape(pos[0])+"/"+verb, nil, &r, stdout, stderr); err != nil || raw {
			return err
		}
		past := map[string]string{"pause": "paused", "resume": "resumed"}[verb]
		if r.Replayed {
			_, err = fmt.Fprintf(stdout, "already %s %s by an earlier request with idempotency key %s; not applied again\n", past, pos[0], c.idemKey)
			return err
		}
		_, err = fmt.Fprintf(stdout, "%s %s on every replica\n", past, pos[0])
		return err
	}
}

// maxRunsLimit is the most records GET /api/v1/runs returns at once.
const maxRunsLimit = 1000

// limitFlag is a --limit that tells "not given" (the runner's default)
// from an explicit value, which must be in the API's range: the API
// answers limit=0 with 400, so --limit 0 is a usage error here rather than
// silently the default.
type limitFlag struct {
	n   int
	set bool
}

func (l *limitFlag) String() string {
	if l == nil || !l.set {
		return ""
	}
	return strconv.Itoa(l.n)
}

func (l *limitFlag) Set(s string) error {
	n, err := strconv.Atoi(s)
	if err != nil {
		return errors.New("not a number")
	}
	l.n, l.set = n, true
	return nil
}

// check refuses an explicit --limit outside 1 to most.
func (l *limitFlag) check(most int) error {
	if l.set && (l.n < 1 || l.n > most) {
		return fmt.Errorf("%w: --limit %d: want 1 to %d", errUsage, l.n, most)
	}
	return nil
}

func runsCmd(args []string, stdout, stderr io.Writer) error {
	var c clientFlags
	var limit limitFlag
	pos, err := c.parseWith("runs", args, stderr, 1, "runs JOB [--limit N] [--addr URL] [-o json]", func(fs *flag.FlagSet) {
		fs.Var(&limit, "limit", fmt.Sprintf("show the job's latest `N` records, 1 to %d (the runner's default, 20, when not given)", maxRunsLimit))
	})
	if err != nil {
		return err
	}
	if err := limit.check(maxRunsLimit); err != nil {
		return err
	}
	path := "/api/v1/runs?job=" + url.QueryEscape(pos[0])
	if limit.set {
		path += "&limit=" + strconv.Itoa(limit.n)
	}
	var resp struct {
		Runs []struct {
			ScheduledTime time.Time `json:"scheduled_time"`
			RunID         string    `json:"run_id"`
			CorrelationID string    `json:"correlation_id"`
			Node, State   string
			Reason        string
			Attempt       int
			Duration      string
			Error         string
			Manual        bool
		}
		Note string // the job is not in the answering replica's config
	}
	if raw, err := c.get(path, &resp, stdout); err != nil || raw {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SCHEDULED\tSTATE\tATTEMPT\tDURATION\tNODE\tCORRELATION ID\tDETAIL")
	for _, r := range resp.Runs {
		state := r.State
		if r.Reason != "" {
			state += " (" + r.Reason + ")"
		}
		if r.Manual {
			state += " [manual]"
		}
		detail := []rune(oneline.Escape(r.Error))
		if len(detail) > 80 {
			detail = append(detail[:77], []rune("...")...)
		}
		row(tw, r.ScheduledTime.Local().Format(time.DateTime), state,
			r.Attempt, orDash(r.Duration), r.Node, orDash(r.CorrelationID), orDash(string(detail)))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if resp.Note != "" {
		fmt.Fprintln(stderr, "note:", resp.Note)
	}
	return nil
}

func statusCmd(args []string, stdout, stderr io.Writer) error {
	var c clientFlags
	if _, err := c.parse("status", args, stderr, 0, "status [--addr URL] [-o json]"); err != nil {
		return err
	}
	var st struct {
		Cluster, Node, Leader string
		FencingToken          int64 `json:"fencing_token"`
		Members               []string
		Leading               bool
		LeaseTTL              string    `json:"lease_ttl"`
		LeaderSince           time.Time `json:"leader_since"`
		KeepaliveAge          string    `json:"keepalive_age"`
		ShardCount            int       `json:"shard_count"`
		ShardsHere            int       `json:"shards_here"`
		ShardsLed             []int     `json:"shards_led"`
		Shards                []struct {
			Shard        int
			Leader       string
			FencingToken int64 `json:"fencing_token"`
			LeaderShards int   `json:"leader_shards"`
			Waiting      []string
			Assigned     string
		}
		JobSet         string `json:"job_set"`
		ClusterJobSet  string `json:"cluster_job_set"`
		JobSetAgreed   bool   `json:"job_set_agreed"`
		JobSetMismatch string `json:"job_set_mismatch"`
		NotLeading     string `json:"not_leading"`
		Difference     *struct {
			OnlyHere    []string `json:"only_here"`
			MissingHere []string `json:"missing_here"`
			Different   []string `json:"different"`
			ShardsHere  int      `json:"shards_here"`
			ShardsThere int      `json:"shards_there"`
		} `json:"job_set_difference"`
		Replicas []struct {
			Node, Version string
			JobSet        string    `json:"job_set"`
			Jobs          int       `json:"jobs"`
			Agrees        bool      `json:"agrees"`
			Candidate     bool      `json:"candidate"`
			LeadsShards   []int     `json:"leads_shards"`
			Shards        int       `json:"shards"`
			Reason        string    `json:"reason"`
			Unpublished   bool      `json:"unpublished"`
			ConfigModTime time.Time `json:"config_mtime"`
			Started       time.Time `json:"started"`
		}
		Etcd        *coord.EtcdStatus
		LastContact time.Time `json:"last_contact"`
		JobsState   string    `json:"jobs_state"`
		Error       string    `json:"error"`
	}
	resp, err := c.send(http.MethodGet, "/api/v1/cluster", nil, 10*time.Second)
	if err != nil {
		return err
	}
	// A replica that cannot read etcd answers 503 with what it knows by
	// itself: say so plainly, not as a bare status.
	if resp.status == http.StatusServiceUnavailable && json.Unmarshal(resp.body, &st) == nil && st.Node != "" && st.Error != "" {
		if c.output == "json" {
			if _, err := stdout.Write(resp.body); err != nil {
				return err
			}
		} else if err := printCutOff(stdout, st.Cluster, st.Node, st.Error, st.LeaseTTL, st.KeepaliveAge, st.JobsState, st.LastContact, st.ShardsLed); err != nil {
			return err
		}
		return cutOffError(st.Node, st.LastContact, st.ShardsLed)
	}
	if raw, err := c.decode(resp, &st, stdout); err != nil || raw {
		return err
	}
	role := fmt.Sprintf("leads %d of %d shards", len(st.ShardsLed), st.ShardCount)
	if st.Leading {
		role += fmt.Sprintf("; the cluster's leader (shard 0) since %s (%s)", st.LeaderSince.Local().Format(time.DateTime),
			time.Since(st.LeaderSince).Round(time.Second))
	}
	lease := st.LeaseTTL + " TTL"
	if st.KeepaliveAge != "" {
		lease += ", last acknowledged keepalive sent " + st.KeepaliveAge + " ago"
	}
	if _, err := fmt.Fprintf(stdout, "cluster:  %s\nnode:     %s (%s)\nleader:   %s (shard 0, fencing token %d)\nmembers:  %s\nlease:    %s\n",
		st.Cluster, st.Node, role, orDash(st.Leader), st.FencingToken, orDash(strings.Join(st.Members, ", ")), lease); err != nil {
		return err
	}
	if err := printEtcd(stdout, st.Etcd); err != nil {
		return err
	}
	// Which replica leads which shards, then every shard not led by the
	// replica it is assigned to (unled, or moving).
	byNode := map[string][]string{}
	var nodes, odd []string
	unled := 0
	for _, s := range st.Shards {
		if s.Leader == "" {
			unled++
			odd = append(odd, fmt.Sprintf("shard %d: no leader (assigned to %s; waiting: %s)", s.Shard, orDash(s.Assigned), orDash(strings.Join(s.Waiting, ", "))))
			continue
		}
		if s.LeaderShards != 0 { // a change of cluster.shards under way
			unled++
			odd = append(odd, fmt.Sprintf("shard %d: not led under %d shards; %s holds its shard %d of %d (its cluster.shards) until it restarts with %d (assigned to %s)",
				s.Shard, st.ShardCount, s.Leader, s.Shard, s.LeaderShards, st.ShardCount, orDash(s.Assigned)))
			continue
		}
		if _, ok := byNode[s.Leader]; !ok {
			nodes = append(nodes, s.Leader)
		}
		byNode[s.Leader] = append(byNode[s.Leader], strconv.Itoa(s.Shard))
		if s.Assigned != "" && s.Assigned != s.Leader {
			odd = append(odd, fmt.Sprintf("shard %d: led by %s, assigned to %s (hand-over after the settle delay)", s.Shard, s.Leader, s.Assigned))
		}
	}
	if st.ShardsHere != 0 {
		fmt.Fprintf(stdout, "shards:   %d (the cluster's; %d here), %d led\n", st.ShardCount, st.ShardsHere, len(st.Shards)-unled)
	} else {
		fmt.Fprintf(stdout, "shards:   %d, %d led\n", st.ShardCount, len(st.Shards)-unled)
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	slices.Sort(nodes)
	for _, n := range nodes {
		row(tw, "  "+n, fmt.Sprintf("leads %d: %s", len(byNode[n]), strings.Join(byNode[n], " ")))
	}
	for _, o := range odd {
		row(tw, "  "+o)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if st.JobSet == "" { // a runner without job-set agreement
		return nil
	}
	jobs := "job set:  " + short(st.JobSet)
	switch {
	case st.JobSetAgreed:
		jobs += " (the cluster's)"
	default:
		jobs += " DIFFERS from the cluster's " + short(st.ClusterJobSet)
	}
	fmt.Fprintln(stdout, jobs)
	if st.NotLeading != "" {
		fmt.Fprintf(stdout, "          not leading: %s\n", cell(st.NotLeading))
	} else if !st.JobSetAgreed && st.JobSetMismatch == coord.MismatchRefuse {
		// The moment between the difference's being seen and the step
		// down (R6: it said "may lead anyway" next to refuse).
		fmt.Fprintf(stdout, "          stepping down from its shards (cluster.job_set_mismatch: %s)\n", st.JobSetMismatch)
	} else if !st.JobSetAgreed {
		fmt.Fprintf(stdout, "          may lead anyway (cluster.job_set_mismatch: %s)\n", st.JobSetMismatch)
	}
	if d := st.Difference; d != nil {
		for _, k := range []struct {
			what string
			ids  []string
		}{{"only here", d.OnlyHere}, {"missing here", d.MissingHere}, {"defined differently", d.Different}} {
			if len(k.ids) > 0 {
				fmt.Fprintf(stdout, "          %s: %s\n", k.what, strings.Join(k.ids, ", "))
			}
		}
		if d.ShardsHere != d.ShardsThere {
			fmt.Fprintf(stdout, "          cluster.shards: %d here, %d in the cluster's\n", d.ShardsHere, d.ShardsThere)
		}
	}
	fmt.Fprintln(stdout)
	tw = tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "REPLICA\tJOB SET\tJOBS\tSHARDS\tAGREES\tCANDIDATE\tSHARDS LED\tVERSION\tCONFIG CHANGED\tUP\tWHY NOT / NOTE")
	for _, r := range st.Replicas {
		agrees := "yes"
		if !r.Agrees {
			agrees = "NO"
		}
		candidate := "yes"
		if !r.Candidate {
			candidate = "NO"
		}
		led := len(byNode[r.Node])
		if r.LeadsShards != nil {
			led = len(r.LeadsShards)
		}
		changed := "-"
		if !r.ConfigModTime.IsZero() {
			changed = r.ConfigModTime.Local().Format(time.DateTime)
		}
		up := "-"
		if !r.Started.IsZero() {
			up = time.Since(r.Started).Round(time.Second).String()
		}
		node := r.Node
		if r.Unpublished { // this replica, under a node name another one publishes
			node += " (this process)"
		}
		shards := "?" // a record of a version that does not publish its count
		if r.Shards > 0 {
			shards = strconv.Itoa(r.Shards)
		}
		row(tw, node, short(r.JobSet), r.Jobs, shards, agrees, candidate, led,
			orDash(r.Version), changed, up, orDash(r.Reason))
	}
	return tw.Flush()
}

// printCutOff prints pacer status of a replica that cannot read etcd: what
// it knows by itself.
func printCutOff(w io.Writer, cluster, node, why, ttl, keepalive, jobs string, contact time.Time, led []int) error {
	lines := []string{
		"cluster:  " + cluster,
		"node:     " + node + " (CANNOT REACH ETCD)",
		"etcd:     " + cell(why),
		"contact:  " + sinceText(contact),
	}
	if keepalive != "" {
		lines = append(lines, "lease:    "+ttl+" TTL, last acknowledged keepalive sent "+keepalive+" ago")
	}
	if len(led) == 0 {
		lines = append(lines, "leads:    nothing")
	} else {
		lines = append(lines, fmt.Sprintf("leads:    shards %s, until its lease (%s TTL) runs out without etcd's word: then it stops them", ints(led), ttl))
	}
	if jobs == "unknown" {
		lines = append(lines, "jobs:     state unknown (whether each is paused was last read too long ago)")
	}
	_, err := fmt.Fprintln(w, strings.Join(lines, "\n"))
	return err
}

// cutOffError is pacer status's error for a replica that cannot read etcd.
func cutOffError(node string, contact time.Time, led []int) error {
	leads := "it leads nothing"
	if len(led) > 0 {
		leads = "it still leads shards " + ints(led) + " until its lease runs out"
	}
	return fmt.Errorf("replica %s cannot reach etcd (%s); %s; the cluster's state is unknown here: "+
		"check that etcd is up, that this replica's cluster.etcd.endpoints are right and reachable from its machine, "+
		"or ask another replica (--addr)", node, sinceText(contact), leads)
}

// sinceText says when a replica last heard from etcd.
func sinceText(contact time.Time) string {
	if contact.IsZero() {
		return "not heard from etcd since it started"
	}
	return fmt.Sprintf("last heard from etcd at %s, %s ago", contact.Local().Format(time.DateTime), statusAge(contact))
}

func ints(ns []int) string {
	s := make([]string, len(ns))
	for i, n := range ns {
		s[i] = strconv.Itoa(n)
	}
	return strings.Join(s, " ")
}

// short is a job-set fingerprint as the CLI shows it.
func short(fp string) string {
	if len(fp) > 12 {
		return fp[:12]
	}
	return orDash(fp)
}

// printEtcd prints the etcd line of pacer status, and a warning when the
// database nears its quota or etcd raised an alarm.
func printEtcd(w io.Writer, e *coord.EtcdStatus) error {
	if e == nil || e.At.IsZero() {
		_, err := fmt.Fprintln(w, "etcd:     - (not looked at yet)")
		return err
	}
	values := fmt.Sprintf("database %s (%s in use) of %s quota (%.0f%%), %d keys",
		mib(e.DBSize), mib(e.DBSizeInUse), mib(e.Quota), 100*float64(e.DBSize)/float64(max(e.Quota, 1)), e.Keys)
	if e.Quota == 0 {
		// etcd < 3.6 whose /metrics could not be read: no guessed quota.
		values = fmt.Sprintf("database %s (%s in use), %s, %d keys",
			mib(e.DBSize), mib(e.DBSizeInUse), cell(orDash(e.QuotaError)), e.Keys)
	}
	// The endpoint may carry user-info, and the error may quote it.
	ep, why := cell(orDash(e.Endpoint)), cell(e.Error)
	var line string
	switch {
	case e.Error == "" && e.HasLeader:
		line = fmt.Sprintf("etcd:     %s, %s, has a leader", ep, values)
	case e.Error == "":
		line = fmt.Sprintf("etcd:     %s, %s, NO LEADER", ep, values)
	case e.Error == coord.EtcdNoLeader: // the member's own answer
		line = fmt.Sprintf("etcd:     %s, %s, NO LEADER; %s (%s ago)", ep, values, why, statusAge(e.At))
	case e.LastGood.IsZero():
		// A failed look says nothing of etcd's leader: its error does.
		line = fmt.Sprintf("etcd:     %s, look failed %s ago: %s; no look has succeeded yet", ep, statusAge(e.At), why)
	default:
		line = fmt.Sprintf("etcd:     %s, look failed %s ago: %s; last good look %s ago: %s",
			ep, statusAge(e.At), why, statusAge(e.LastGood), values)
	}
	if _, err := fmt.Fprintln(w, line); err != nil {
		return err
	}
	var warn []string
	if len(e.Alarms) > 0 {
		warn = append(warn, "etcd alarms raised: "+strings.Join(e.Alarms, ", ")+" (writes are refused until they are cleared)")
	}
	if e.NearQuota() {
		warn = append(warn, fmt.Sprintf("etcd's database is at %.0f%% of its space quota: at 100%% every write is refused. "+
			"Compact and defragment it, or raise the quota (etcd --quota-backend-bytes; embedded: cluster.embedded.quota_bytes)",
			100*float64(e.DBSize)/float64(e.Quota)))
	}
	for _, w2 := range warn {
		if _, err := fmt.Fprintln(w, "WARNING:  "+w2); err != nil {
			return err
		}
	}
	return nil
}

// statusAge is how long ago t was, as pacer status shows it.
func statusAge(t time.Time) time.Duration {
	d := time.Since(t)
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
