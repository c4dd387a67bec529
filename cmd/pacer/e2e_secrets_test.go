package main

import (
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// What a tester with only the docs and a built binary found after issue 11,
// through one real runner run the way operations.md recommends: under a user
// of its own (here nobody when the test runs as root, else the test's
// user), tasks running as that same user.
//
//   - a task printing a private key: every line of it masked in the log
//     (shell output, and a Python plugin's stray print), and in the record;
//   - secrets just past the first 32 KiB of a long line, masked;
//   - fine-grained GitHub tokens, Slack webhooks, lower-case IBANs and
//     URL-encoded secrets, masked;
//   - PACER_FENCING_TOKEN left as it is, and a quoted BEGIN marker masking
//     only itself;
//   - a task reading /proc/<runner>/environ (where the API token is) and
//     its plugin's, or their memory maps: refused, while ps still shows the
//     runner, and /metrics still has the process metrics.
func TestE2ETaskOutputAndRunnerSecrets(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	needPython(t)
	dir, cred := runnerHome(t)
	key, body := e2ePrivateKey(t)
	keyFile := filepath.Join(dir, "k.pem")
	must(os.WriteFile(keyFile, []byte(key), 0o644))
	example, err := filepath.Abs(filepath.Join("..", "..", "examples", "python-plugin", "hello_python.py"))
	must(err)

	token := "gh" + "p_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
	pat := "github" + "_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456"
	hook := "https://hooks" + ".slack.com/services/T0ABCD1EF/B0GHIJ2KL/aBcDeFgHiJkLmNoPqRsTuVwX"
	// Each of these must not reach the log nor the run records.
	leaks := []string{token[4:14], token[len(token)-8:], "hunter2", "efghijklmnopqrstuvwxyzABCD", "aBcDeFgHiJkLmNoPqRsTuVwX",
		"370400440532", "ops%40example", "2B14155552671", "hunter9", "ya29", "p4ss"}
	leaks = append(leaks, body...)

	httpAddr := freeAddr(t)
	cfg := runnerConfig{node: "e2e-sec", cluster: "sec", dataDir: dir + "/data", http: "token_env: PACER_TEST_TOKEN",
		plugins: "dir: " + builtPlugins() + ", paths: {hello-python: " + example + "}"}.head(t, httpAddr) + fmt.Sprintf(`jobs:
  - id: pemkey
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    params: {command: 'echo before; cat %[1]s; echo after', shell: true}
  - id: longlines
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    params:
      command: >-
        head -c 32760 /dev/zero | tr '\0' x; echo ' %[2]s tail';
        head -c 32760 /dev/zero | tr '\0' x; echo ' password=hunter2secret tail'
      shell: true
      max_output_bytes: 200000
  - id: shapes
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    params:
      command: >-
        echo 'pat %[3]s';
        echo 'hook %[4]s';
        echo 'iban de89370400440532013000';
        echo 'mail ops%%40example.com tel=%%2B14155552671 body password%%3Dhunter9';
        echo 'next=%%2Fcb%%3Faccess_token%%3Dya29.a0AfH6SMB dsn https%%3A%%2F%%2Fadmin%%3Ap4ss%%40db.example.com'
      shell: true
  - id: overmask
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    params:
      command: >-
        echo PACER_FENCING_TOKEN=$PACER_FENCING_TOKEN;
        echo 'private_key="-----BEGIN PRIVATE KEY-----"';
        for i in $(seq 2 25); do echo "line $i"; done
      shell: true
  - id: steal
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    params:
      command: >-
        r=$(cut -d' ' -f4 /proc/$PPID/stat);
        for who in runner:$r plugin:$PPID; do
        if cat /proc/${who#*:}/environ >/dev/null 2>&1; then echo "${who%%:*} environ readable"; else echo "${who%%:*} environ refused"; fi;
        if cat /proc/${who#*:}/maps >/dev/null 2>&1; then echo "${who%%:*} maps readable"; else echo "${who%%:*} maps refused"; fi;
        done;
        echo "ps: $(ps -o comm= -p $r)"
      shell: true
  - id: pypem
    plugin: hello-python
    task: greet
    schedule: "0 0 0 1 1 *"
    params: {name: %[5]s}
`, keyFile, token, pat, hook, strconv.Quote("Bo\n"+key+"end"))
	path := filepath.Join(dir, "sec.yaml")
	must(os.WriteFile(path, []byte(cfg), 0o644))
	cmd := exec.Command(filepath.Join(binDir, "pacer"), "run", "--config", path)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "PACER_TEST_TOKEN=tok-e2e-sec-7c1")
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: cred}
	p := startCmd(t, "e2e-sec", httpAddr, path, cmd)
	p.waitLogs("leadership", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("became leader"))) > 0 })

	auth := []string{"PACER_API_TOKEN=tok-e2e-sec-7c1"}
	jobs := []string{"pemkey", "longlines", "shapes", "overmask", "steal", "pypem"}
	for _, j := range jobs {
		if out, code := p.cli(append(auth, "PACER_CORRELATION_ID=e2e-sec-"+j), "trigger", j); code != 0 {
			t.Fatalf("trigger %s: %d %s", j, code, out)
		}
	}
	p.waitLogs("every run to finish", 60*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool {
			return l.str("msg") == "run finished" && strings.HasPrefix(l.str("correlation_id"), "e2e-sec-")
		})) == len(jobs)
	})
	// The Python plugin's stray print arrives on its own stream, after the run.
	lines := p.waitLogs("the Python plugin's print", 15*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool { return l.str("source") == "plugin-stdout" && l.str("msg") == "end" })) == 1
	})
	for _, fin := range match(lines, msgIs("run finished")) {
		if fin.str("outcome") != "success" {
			t.Errorf("run of %s: %s %s", fin.str("job"), fin.str("outcome"), fin.str("error"))
		}
	}
	msgs := func(pred func(logLine) bool) []string {
		var out []string
		for _, l := range match(lines, pred) {
			out = append(out, l.str("msg"))
		}
		return out
	}
	output := func(job string) []string {
		return msgs(func(l logLine) bool { return l.str("source") == "plugin" && l.str("correlation_id") == "e2e-sec-"+job })
	}

	// Nothing secret anywhere in the log.
	raw := p.rawLogs()
	for _, l := range leaks {
		if strings.Contains(raw, l) {
			t.Errorf("the runner's log holds %q", l)
		}
	}

	// F1: the whole key, one [private_key] per line, in the shell task's
	// output and in the Python plugin's stray stdout.
	want := []string{"before"}
	for range len(body) + 2 {
		want = append(want, "[private_key]")
	}
	want = append(want, "after")
	if got := output("pemkey"); strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("pemkey's output in the log:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
	stray := msgs(func(l logLine) bool { return l.str("source") == "plugin-stdout" && l.str("plugin") == "hello-python" })
	if n := strings.Count(strings.Join(stray, "\n"), "[private_key]"); n != len(body)+2 || stray[len(stray)-1] != "end" {
		t.Errorf("the Python plugin's print of the key: %d lines [private_key], want %d:\n%s", n, len(body)+2, strings.Join(stray, "\n"))
	}

	// F2: both secrets masked, in pieces of at most 4 KiB.
	long := output("longlines")
	if j := strings.Join(long, ""); !strings.Contains(j, " [github_token] tail") || !strings.Contains(j, " password=[redacted] tail") {
		t.Errorf("longlines' secrets are not masked whole in the log")
	}
	for _, l := range long {
		if len(l) > 4096 {
			t.Errorf("a log record of %d bytes", len(l))
		}
	}

	// F3.
	wantShapes := []string{"pat [github_token]", "hook [slack_webhook]", "iban [iban]",
		"mail [email] tel=[phone] body password=[redacted]", "next=/cb?access_token=[redacted] dsn https://[userinfo]@db.example.com"}
	if got := output("shapes"); strings.Join(got, "\n") != strings.Join(wantShapes, "\n") {
		t.Errorf("shapes in the log:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantShapes, "\n"))
	}

	// F13, in the log and in the stored record.
	over := output("overmask")
	var fence string
	for _, l := range match(lines, func(l logLine) bool { return l.str("msg") == "run started" && l.str("job") == "overmask" }) {
		fence = fmt.Sprint(l["fencing_token"])
	}
	wantOver := []string{"PACER_FENCING_TOKEN=" + fence, `private_key="[private_key]"`}
	for i := 2; i <= 25; i++ {
		wantOver = append(wantOver, "line "+strconv.Itoa(i))
	}
	if fence == "" || strings.Join(over, "\n") != strings.Join(wantOver, "\n") {
		t.Errorf("overmask in the log:\n%s\nwant\n%s", strings.Join(over, "\n"), strings.Join(wantOver, "\n"))
	}
	if rec := lastRecord(t, p, auth, "overmask"); strings.TrimSpace(rec) != strings.Join(wantOver, "\n") {
		t.Errorf("overmask's run record:\n%s\nwant\n%s", rec, strings.Join(wantOver, "\n"))
	}
	if rec := lastRecord(t, p, auth, "pemkey"); rec != "before\n[private_key]\nafter\n" {
		t.Errorf("pemkey's run record: %q", rec)
	}

	// F4: the task cannot read the runner's nor its plugin's environment,
	// nor their memory maps (which reading /proc/PID/mem needs); ps works;
	// the process metrics are still exported.
	wantSteal := []string{"runner environ refused", "runner maps refused", "plugin environ refused", "plugin maps refused", "ps: pacer"}
	if got := output("steal"); strings.Join(got, "\n") != strings.Join(wantSteal, "\n") {
		t.Errorf("the task reading the runner's secrets:\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(wantSteal, "\n"))
	}
	if v := p.metric("process_open_fds"); v <= 0 {
		t.Errorf("process_open_fds = %v: the runner cannot read its own /proc", v)
	}
}

// runnerHome returns a directory for a runner's files and the credentials to
// run it with: as root, user nobody, owning the directory (the test's own
// user when not root). Either way the runner has no CAP_SYS_PTRACE, as a
// runner under its own user has not.
func runnerHome(t *testing.T) (string, *syscall.Credential) {
	t.Helper()
	dir, err := os.MkdirTemp("", "pacer-e2e-user-")
	must(err)
	t.Cleanup(func() { os.RemoveAll(dir) })
	if os.Geteuid() != 0 {
		return dir, nil
	}
	const nobody = 65534
	must(os.Chmod(binDir, 0o755)) // the binaries' directory, made by MkdirTemp
	must(os.Chown(dir, nobody, nobody))
	return dir, &syscall.Credential{Uid: nobody, Gid: nobody}
}

// e2ePrivateKey returns a fresh RSA key in PKCS #8 PEM (what openssl
// genpkey -algorithm RSA writes) and its base64 body lines.
func e2ePrivateKey(t *testing.T) (string, []string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	must(err)
	der, err := x509.MarshalPKCS8PrivateKey(k)
	must(err)
	text := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	return text, lines[1 : len(lines)-1]
}

// lastRecord returns the output of job's latest stored run record.
func lastRecord(t *testing.T, p *proc, env []string, job string) string {
	t.Helper()
	var runs struct{ Runs []struct{ Output string } }
	out, code := p.cli(env, "runs", job, "-o", "json")
	if code != 0 || json.Unmarshal([]byte(out), &runs) != nil || len(runs.Runs) == 0 {
		t.Fatalf("runs %s: %d %s", job, code, out)
	}
	return runs.Runs[0].Output
}
