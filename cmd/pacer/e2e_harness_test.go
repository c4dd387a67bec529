package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/pacerun/pacer/internal/etcdembed"
	"github.com/pacerun/pacer/internal/syncbuf"
	"github.com/pacerun/pacer/sdk/sdktest"
)

// binDir holds pacer and its plugins, built once for every test.
var binDir string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "pacer-e2e-")
	if err != nil {
		panic(err)
	}
	binDir = dir
	must(os.MkdirAll(filepath.Join(dir, "plugins"), 0o755))
	for _, b := range []struct{ dir, pkg string }{
		{dir, "github.com/pacerun/pacer/cmd/pacer"},
		{filepath.Join(dir, "plugins"), "github.com/pacerun/pacer/plugins/shell"},
		{filepath.Join(dir, "plugins"), "github.com/pacerun/pacer/internal/testplugins/testplugin"},
	} {
		_, err := sdktest.BuildBinary(b.dir, b.pkg)
		must(err)
	}
	code := m.Run()
	os.RemoveAll(dir)
	if code == 0 {
		if err := goleak.Find(); err != nil {
			fmt.Fprintln(os.Stderr, "goleak:", err)
			code = 1
		}
	}
	os.Exit(code)
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// logLine is one JSON log line of a pacer process.
type logLine map[string]any

func (l logLine) str(k string) string { s, _ := l[k].(string); return s }

// proc is a running `pacer run`.
type proc struct {
	t          *testing.T
	name       string
	configPath string
	cmd        *exec.Cmd
	httpURL    string
	exited     chan struct{}
	exitErr    error
	stdout     syncbuf.Buffer // what the process printed: spans, with tracing.exporter stdout

	mu    sync.Mutex
	lines []logLine
	raw   []string
	dups  []string      // lines with a key twice (JSON readers keep one of the two)
	grew  chan struct{} // closed and replaced whenever a line arrives
}

// runnerConfig is the head of an end-to-end runner's config: its node, a
// cluster with a 2 s lease and its own store, its API and its plugins. A
// test appends its other sections and its jobs to head's text.
type runnerConfig struct {
	node    string // node.name
	cluster string // cluster.name
	dataDir string // cluster.data_dir: a new temporary directory when empty
	etcd    string // the cluster's store, as lines of it: its own embedded etcd on free ports when empty (see embeddedEtcd)
	http    string // the http section's keys after listen, e.g. "token_env: PACER_TEST_TOKEN"
	plugins string // the plugins section's keys: the built plugins' dir (builtPlugins) when empty
}

// head is c's text, the API listening on httpAddr. It starts with an empty
// line and ends with a newline.
func (c runnerConfig) head(t *testing.T, httpAddr string) string {
	t.Helper()
	if c.dataDir == "" {
		c.dataDir = t.TempDir()
	}
	if c.etcd == "" {
		c.etcd = embeddedEtcd(freeAddr(t), freeAddr(t))
	}
	if c.plugins == "" {
		c.plugins = "dir: " + builtPlugins()
	}
	http := "listen: " + httpAddr
	if c.http != "" {
		http += ", " + c.http
	}
	return fmt.Sprintf(`
node: {name: %s}
cluster:
  name: %s
  data_dir: %s
  lease_ttl: 2s
%s
http: {%s}
plugins: {%s}
`, c.node, c.cluster, c.dataDir, c.etcd, http, c.plugins)
}

// embeddedEtcd is a runnerConfig's etcd: an embedded member listening on
// client and peer.
func embeddedEtcd(client, peer string) string {
	return fmt.Sprintf("  etcd: {embedded: {client_listen: %s, peer_listen: %s}}", client, peer)
}

// builtPlugins is the directory of the plugins TestMain built.
func builtPlugins() string { return filepath.Join(binDir, "plugins") }

// startPacer writes cfg to a file and runs `pacer run` on it, with env
// added to the environment.
func startPacer(t *testing.T, name, httpAddr, cfg string, env ...string) *proc {
	t.Helper()
	return startPacerBin(t, filepath.Join(binDir, "pacer"), name, httpAddr, cfg, env...)
}

// startPacerBin is startPacer with another pacer binary (a test build).
func startPacerBin(t *testing.T, bin, name, httpAddr, cfg string, env ...string) *proc {
	t.Helper()
	path := filepath.Join(t.TempDir(), name+".yaml")
	must(os.WriteFile(path, []byte(cfg), 0o644))
	cmd := exec.Command(bin, "run", "--config", path)
	cmd.Env = append(os.Environ(), env...)
	return startCmd(t, name, httpAddr, path, cmd)
}

// startCmd starts cmd, a `pacer run` on the config file at path, and reads
// its log.
func startCmd(t *testing.T, name, httpAddr, path string, cmd *exec.Cmd) *proc {
	t.Helper()
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	return startReading(t, name, httpAddr, path, cmd, stderr)
}

// startReading starts cmd, whose log the caller gives it to read from
// stderr (cmd's stderr pipe, or one the caller made).
func startReading(t *testing.T, name, httpAddr, path string, cmd *exec.Cmd, stderr io.Reader) *proc {
	t.Helper()
	p := &proc{t: t, name: name, cmd: cmd, configPath: path, httpURL: "http://" + httpAddr, exited: make(chan struct{}), grew: make(chan struct{})}
	cmd.Stdout = &p.stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go p.read(stderr)
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-p.exited
		for _, l := range p.dups {
			t.Errorf("%s logged a line with a duplicate key: %s", name, l)
		}
		if t.Failed() {
			p.mu.Lock()
			defer p.mu.Unlock()
			t.Logf("--- %s log (%d lines) ---\n%s", name, len(p.raw), strings.Join(p.raw, "\n"))
		}
	})
	return p
}

func (p *proc) read(r io.Reader) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var l logLine
		line := sc.Text()
		_ = json.Unmarshal([]byte(line), &l)
		p.mu.Lock()
		p.raw = append(p.raw, line)
		if l != nil {
			p.lines = append(p.lines, l)
			if k := duplicateKey([]byte(line)); k != "" {
				p.dups = append(p.dups, fmt.Sprintf("%q in %s", k, line))
			}
		}
		close(p.grew)
		p.grew = make(chan struct{})
		p.mu.Unlock()
	}
	p.exitErr = p.cmd.Wait()
	close(p.exited)
}

// logs returns a copy of the JSON lines so far.
func (p *proc) logs() []logLine {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]logLine(nil), p.lines...)
}

// rawLogs returns everything the process wrote to stderr so far, JSON or not.
func (p *proc) rawLogs() string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return strings.Join(p.raw, "\n")
}

// waitLogs waits until pred holds for the lines so far.
func (p *proc) waitLogs(what string, timeout time.Duration, pred func([]logLine) bool) []logLine {
	p.t.Helper()
	deadline := time.After(timeout)
	for {
		p.mu.Lock()
		lines, grew := append([]logLine(nil), p.lines...), p.grew
		p.mu.Unlock()
		if pred(lines) {
			return lines
		}
		select {
		case <-grew:
		case <-p.exited:
			p.t.Fatalf("%s exited (%v) while waiting for %s", p.name, p.exitErr, what)
		case <-deadline:
			p.t.Fatalf("%s: timed out after %s waiting for %s", p.name, timeout, what)
		}
	}
}

func match(lines []logLine, pred func(logLine) bool) []logLine {
	var out []logLine
	for _, l := range lines {
		if pred(l) {
			out = append(out, l)
		}
	}
	return out
}

// pacerWarning matches Pacer's own WARN lines, not the embedded etcd's
// (a slow disk, an apply that took too long on a loaded machine), which
// say nothing of the configuration under test.
func pacerWarning(l logLine) bool { return l.str("level") == "WARN" && l.str("component") != "etcd" }

func msgIs(msg string) func(logLine) bool {
	return func(l logLine) bool { return l.str("msg") == msg }
}

func (p *proc) signal(sig syscall.Signal) {
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatal(err)
	}
}

// wait waits for the process to exit and returns its exit code.
func (p *proc) wait(timeout time.Duration) int {
	p.t.Helper()
	select {
	case <-p.exited:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(timeout):
		p.t.Fatalf("%s did not exit within %s", p.name, timeout)
		return -1
	}
}

// metric returns the value of the first sample whose line starts with name
// and contains every label pair, or -1.
func (p *proc) metric(name string, labels ...string) float64 {
	p.t.Helper()
	resp, err := http.Get(p.httpURL + "/metrics")
	if err != nil {
		p.t.Fatalf("scrape %s: %v", p.name, err)
	}
	defer resp.Body.Close()
	sc := bufio.NewScanner(resp.Body)
next:
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		for _, l := range labels {
			if !strings.Contains(line, l) {
				continue next
			}
		}
		fields := strings.Fields(line)
		v, err := strconv.ParseFloat(fields[len(fields)-1], 64)
		if err != nil {
			p.t.Fatalf("bad sample %q", line)
		}
		return v
	}
	return -1
}

// handedOut holds every address freeAddr returned: two addresses one config
// needs (the embedded etcd's client and peer) must differ, and a port
// handed out once stays someone's until the test binary ends.
var handedOut sync.Map

// startEtcd starts an etcd member of its own for a test's replicas to
// share, on free loopback ports, closed when the test ends.
func startEtcd(t *testing.T, name string) *etcdembed.Embedded {
	t.Helper()
	e, err := etcdembed.Start(context.Background(), etcdembed.Options{
		Name: name, Dir: t.TempDir(), ClientListen: freeAddr(t), PeerListen: freeAddr(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	return e
}

// freeAddr returns a loopback address nothing listens on, for a process the
// test starts to bind. Its port lies below the kernel's ephemeral range: a
// port from that range, once closed here, can be taken by any outgoing
// connection (the replicas' etcd clients make many) or any listener on port
// 0 before the process binds it, and the process then fails to start
// (CI saw a replica exit so, its API refusing connections). Ports below the
// range are only ever taken by a bind that names them.
func freeAddr(t *testing.T) string {
	t.Helper()
	lo, hi := freePortRange()
	span := hi - lo
	for i := 0; i < span; i++ {
		port := lo + int(nextPort.Add(1))%span
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		if _, taken := handedOut.LoadOrStore(addr, true); taken {
			continue
		}
		l, err := net.Listen("tcp", addr)
		if err != nil {
			continue // someone else's
		}
		l.Close()
		return addr
	}
	t.Fatalf("no free loopback port in [%d, %d)", lo, hi)
	return ""
}

// nextPort walks freeAddr's range from a start of this process's own, so
// two test binaries running side by side rarely try the same ports.
var nextPort atomic.Int64

func init() { nextPort.Store(int64(os.Getpid()) * 97) }

// freePortRange is the block of ports freeAddr hands out: the 10,000 below
// the ephemeral range's start (net.ipv4.ip_local_port_range).
var freePortRange = sync.OnceValues(func() (int, int) {
	lo := 32768 // Linux's default
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		if f := strings.Fields(string(b)); len(f) == 2 {
			if n, err := strconv.Atoi(f[0]); err == nil {
				lo = n
			}
		}
	}
	if lo < 11024 {
		lo = 11024
	}
	return lo - 10000, lo
})

// pidAlive reports whether pid exists and is not a zombie.
func pidAlive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	return i < 0 || i+2 >= len(s) || s[i+2] != 'Z'
}

func waitGone(t *testing.T, pid int, timeout time.Duration) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for pidAlive(pid) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still alive after %s", pid, timeout)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// pluginPIDs returns the pids of plugin processes the runner logged as started.
func pluginPIDs(lines []logLine) []int {
	var pids []int
	for _, l := range match(lines, msgIs("plugin started")) {
		if pid, ok := l["pid"].(float64); ok {
			pids = append(pids, int(pid))
		}
	}
	return pids
}

// cli runs a pacer client subcommand against p, with env added, and returns
// its combined output and exit code.
func (p *proc) cli(env []string, args ...string) (string, int) {
	p.t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "pacer"), append(args, "--addr", p.httpURL)...)
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	code := 0
	if err != nil {
		var ee *exec.ExitError
		if !errors.As(err, &ee) {
			p.t.Fatalf("pacer %v: %v", args, err)
		}
		code = ee.ExitCode()
	}
	return string(out), code
}

// needPython fails the test, saying what to install, when Debian's python3
// lacks what the Python SDK needs.
func needPython(t *testing.T) {
	t.Helper()
	if out, err := exec.Command("/usr/bin/python3", "-c", "import grpc, google.protobuf, cryptography").CombinedOutput(); err != nil {
		t.Fatalf("the Python plugin needs /usr/bin/python3 with python3-grpcio, python3-protobuf and python3-cryptography (make deps): %v\n%s", err, out)
	}
}

// duplicateKey returns a key that a JSON object (one log line) has twice at
// its top level, or "".
func duplicateKey(line []byte) string {
	dec := json.NewDecoder(bytes.NewReader(line))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return ""
	}
	seen := map[string]bool{}
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return ""
		}
		k, _ := tok.(string)
		if seen[k] {
			return k
		}
		seen[k] = true
		var skip json.RawMessage
		if dec.Decode(&skip) != nil {
			return ""
		}
	}
	return ""
}
