package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"
)

// pacerCmd runs the pacer binary with args (and env added) and returns its
// stdout, stderr and exit code.
func pacerCmd(t *testing.T, env []string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(filepath.Join(binDir, "pacer"), args...)
	cmd.Env = append(os.Environ(), env...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	var ee *exec.ExitError
	switch {
	case errors.As(err, &ee):
		code = ee.ExitCode()
	case err != nil:
		t.Fatalf("pacer %v: %v", args, err)
	}
	return out.String(), errb.String(), code
}

// parallelE2E marks an end-to-end test that can run beside the others.
func parallelE2E(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	t.Parallel()
}

// tempConfig writes a config file for the test and returns its path.
func tempConfig(t *testing.T, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pacer.yaml")
	must(os.WriteFile(path, []byte(content), 0o644))
	return path
}

// isolated appends what keeps `pacer run` off shared ports and directories.
func isolated(t *testing.T, cfg string) string {
	return cfg + fmt.Sprintf("cluster: {data_dir: %s, etcd: {embedded: {client_listen: %s, peer_listen: %s}}}\n",
		t.TempDir(), freeAddr(t), freeAddr(t))
}

// Exit status 2 for a usage or config error (as docs/operations.md says),
// 1 for a runtime error, from `pacer validate` and `pacer run` alike.
func TestE2EExitCodes(t *testing.T) {
	parallelE2E(t)
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		must(os.WriteFile(p, []byte(content), 0o644))
		return p
	}
	plugins := filepath.Join(binDir, "plugins")
	invalid := write("invalid.yaml", isolated(t, "http: {listen: "+freeAddr(t)+"}\njobs:\n  - id: a\n    plugin: shell\n    task: exec\n    schedule: \"*-5 * * * *\"\n"))
	badParams := write("params.yaml", isolated(t, "http: {listen: "+freeAddr(t)+"}\nplugins: {dir: "+plugins+"}\njobs:\n  - id: a\n    plugin: shell\n    task: exec\n    schedule: \"@every 1h\"\n    params: {comand: [echo]}\n"))
	// The HTTP port is taken: the config is fine, starting is not.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	busy := write("busy.yaml", isolated(t, "http: {listen: "+taken.Addr().String()+"}\nplugins: {dir: "+plugins+"}\njobs:\n  - id: a\n    plugin: shell\n    task: exec\n    schedule: \"@every 1h\"\n    params: {command: [echo]}\n"))

	for _, tc := range []struct {
		name string
		args []string
		code int
		want string
	}{
		{"validate: invalid", []string{"validate", "--config", invalid}, 2, `jobs[0].schedule: invalid cron expression "*-5 * * * *": minute: "*-5": "*" cannot start a range`},
		{"run: invalid", []string{"run", "--config", invalid}, 2, "refusing to start with an invalid config"},
		{"validate: missing file", []string{"validate", "--config", filepath.Join(dir, "absent.yaml")}, 2, "no such file"},
		{"run: missing file", []string{"run", "--config", filepath.Join(dir, "absent.yaml")}, 2, "no such file"},
		{"validate: params the plugin refuses", []string{"validate", "--config", badParams}, 2, `unknown key "comand"`},
		{"run: params the plugin refuses", []string{"run", "--config", badParams}, 2, `unknown key "comand"`},
		{"usage: no --config", []string{"validate"}, 2, "validate needs --config FILE"},
		{"usage: bad --from", []string{"validate", "--config", badParams, "--from", "tomorrow"}, 2, `--from "tomorrow": want an RFC 3339 time`},
		{"usage: absurd --count", []string{"validate", "--config", badParams, "--count", "1000000000"}, 2, "--count 1000000000: want 1 to 10000"},
		{"run: port taken", []string{"run", "--config", busy}, 1, "cannot start the runner"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, stderr, code := pacerCmd(t, nil, tc.args...)
			if code != tc.code || !strings.Contains(stderr, tc.want) {
				t.Fatalf("pacer %v: exit %d, want %d; stderr lacks %q?\n%s", tc.args, code, tc.code, tc.want, stderr)
			}
		})
	}
}

// pacer validate --from --count previews fire times from any instant, marks
// changes of UTC offset, and warns (exit 0) about jobs that will never fire.
func TestE2EValidatePreview(t *testing.T) {
	parallelE2E(t)
	path := tempConfig(t, `jobs:
  - id: nightly
    plugin: shell
    task: exec
    schedule: "30 2 * * *"
    timezone: Europe/Berlin
  - id: feb30
    plugin: shell
    task: exec
    schedule: "0 0 30 2 *"
  - id: once
    plugin: shell
    task: exec
    schedule: "at: 2026-01-01T00:00:00Z"
`)
	stdout, stderr, code := pacerCmd(t, nil, "validate", "--skip-plugins", "--config", path, "--from", "2026-03-28T00:00:00+01:00", "--count", "3")
	if code != 0 {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"nightly  (shell/exec, schedule \"30 2 * * *\", timezone Europe/Berlin)\n" +
			"  2026-03-28T02:30:00+01:00\n" +
			"  2026-03-29T03:00:00+02:00  (UTC offset +02:00, was +01:00)\n" +
			"  2026-03-30T02:30:00+02:00\n",
		"feb30  (shell/exec, schedule \"0 0 30 2 *\", timezone UTC)\n  next: never (no date matches its schedule)\n",
		"once  (shell/exec, schedule \"at: 2026-01-01T00:00:00Z\", timezone UTC)\n  next: never (no fire time after 2026-03-28T00:00:00+01:00)\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks\n%s\ngot:\n%s", want, stdout)
		}
	}
	for _, want := range []string{
		path + `:10: jobs[1].schedule: "0 0 30 2 *" can never fire: no date matches it; the job is listed with next: never`,
		path + ":11: jobs[2]: job once will never fire: no fire time after 2026-03-28T00:00:00+01:00",
	} {
		if !strings.Contains(stderr, "warning: "+want) {
			t.Errorf("stderr lacks warning: %s\ngot:\n%s", want, stderr)
		}
	}
	if n := strings.Count(stderr, "warning:"); n != 2 {
		t.Errorf("%d warnings, want 2 (one per job that will not fire):\n%s", n, stderr)
	}

	// Fire times after the year 9999 are not written as five-digit years
	// (not RFC 3339), nor taken for "never".
	path = tempConfig(t, `jobs:
  - id: newyear
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    timezone: Europe/Berlin
  - id: hourly
    plugin: shell
    task: exec
    schedule: "@hourly"
`)
	stdout, stderr, code = pacerCmd(t, nil, "validate", "--skip-plugins", "--config", path, "--from", "9999-12-31T22:30:00Z", "--count", "3")
	if code != 0 || strings.Contains(stdout, "10000-") || strings.Contains(stderr, "warning") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	for _, want := range []string{
		"newyear  (shell/exec, schedule \"0 0 0 1 1 *\", timezone Europe/Berlin)\n" +
			"  next: after the year 9999 (not shown: RFC 3339 has four-digit years)\n",
		"hourly  (shell/exec, schedule \"@hourly\", timezone UTC)\n" +
			"  9999-12-31T23:00:00Z\n" +
			"  (later fire times are after the year 9999, not shown: RFC 3339 has four-digit years)\n",
	} {
		if !strings.Contains(stdout, want) {
			t.Errorf("stdout lacks\n%s\ngot:\n%s", want, stdout)
		}
	}
}

// A file without its jobs listed is valid at start-up (with a warning from
// validate) but would be refused on reload.
func TestE2EValidateWarnsAboutNoJobs(t *testing.T) {
	parallelE2E(t)
	path := tempConfig(t, "http: {listen: 127.0.0.1:9464}\n")
	stdout, stderr, code := pacerCmd(t, nil, "validate", "--config", path)
	if code != 0 || !strings.Contains(stdout, "is valid: 0 job(s)") ||
		!strings.Contains(stderr, "warning: "+path+`: jobs: the file lists no jobs; a running pacer refuses to reload such a file (write "jobs: []" for none)`) {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	must(os.WriteFile(path, []byte("jobs: []\n"), 0o644))
	if _, stderr, code := pacerCmd(t, nil, "validate", "--config", path); code != 0 || strings.Contains(stderr, "warning") {
		t.Fatalf("jobs: []: exit %d\n%s", code, stderr)
	}
}

// pacer validate warns (on stderr, exit 0) about a secret's variable that
// pacer run would refuse to start without: validate may run elsewhere than
// the runner, but must not pass such a file in silence.
func TestE2EValidateWarnsAboutUnsetSecretVariables(t *testing.T) {
	parallelE2E(t)
	path := tempConfig(t, "http: {listen: 127.0.0.1:9464, token_env: PACER_E2E_UNSET_TOKEN}\n"+
		"cluster: {etcd: {endpoints: ['http://127.0.0.1:2379'], username: pacer, password_env: PACER_E2E_UNSET_PASSWORD}}\njobs: []\n")
	stdout, stderr, code := pacerCmd(t, []string{"PACER_E2E_UNSET_TOKEN= "}, "validate", "--config", path) // blank counts as unset
	if code != 0 || !strings.Contains(stdout, "is valid") ||
		!strings.Contains(stderr, "warning: "+path+":1: http.token_env: environment variable PACER_E2E_UNSET_TOKEN is empty, blank or not set") ||
		!strings.Contains(stderr, "warning: "+path+":2: cluster.etcd.password_env: environment variable PACER_E2E_UNSET_PASSWORD is not set") ||
		!strings.Contains(stderr, "pacer run refuses to start without it, exit 2") {
		t.Fatalf("exit %d\n%s%s", code, stdout, stderr)
	}
	stdout, stderr, code = pacerCmd(t, []string{"PACER_E2E_UNSET_TOKEN=tok", "PACER_E2E_UNSET_PASSWORD=pw"}, "validate", "--config", path)
	if code != 0 || strings.Contains(stderr, "warning") {
		t.Fatalf("with both set: exit %d\n%s%s", code, stdout, stderr)
	}

	// A secret pasted where the variable's name goes is a valid name: the
	// warning does not name it unless it is in capitals (attack 24, V2),
	// and masks it then, as in pacer run's error (attack 23, U4:
	// validate's warnings, which CI logs keep, bypassed the sanitizer).
	ghp, aws := "ghp_abcdefghijklmnopqrstuvwxyz0123456789", "AKIAIOSFODNN7EXAMPLE"
	path = tempConfig(t, "http: {listen: 127.0.0.1:9464, token_env: "+ghp+"}\n"+
		"cluster: {etcd: {endpoints: ['http://127.0.0.1:2379'], username: pacer, password_env: "+aws+"}}\njobs: []\n")
	stdout, stderr, code = pacerCmd(t, nil, "validate", "--config", path)
	if code != 0 || strings.Contains(stderr, ghp) || strings.Contains(stderr, aws) ||
		!strings.Contains(stderr, "warning: "+path+":1: http.token_env: the environment variable this key names (its name not shown") ||
		!strings.Contains(stderr, "warning: "+path+":2: cluster.etcd.password_env: environment variable [aws_key] is not set") {
		t.Fatalf("secrets pasted as variable names: exit %d\n%s%s", code, stdout, stderr)
	}
}

// A plugins.checksums or plugins.paths entry under a name no job uses and
// no binary has is a config error at its line, with the name meant (attack
// 14, K5: checksums {shel: …} passed validate, and pacer run ran the job's
// plugin "shell" unpinned). Where plugins.dir is not on the machine,
// validate cannot tell a typo from a plugin installed only where pacer
// runs: it warns, and still exits 0.
func TestE2EPluginEntriesForNoPlugin(t *testing.T) {
	parallelE2E(t)
	// The HTTP port is taken: pacer run gets no further than its config
	// (exit 2), or fails to start (exit 1), and never runs on.
	taken, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer taken.Close()
	head := "http: {listen: " + taken.Addr().String() + "}\n"
	plugins := ", checksums: {shel: 'sha256:" + strings.Repeat("0", 64) + "'}, paths: {htp: /nonexistent/htp}}\n"
	jobs := "jobs:\n  - {id: a, plugin: shell, task: exec, schedule: '@every 1h', params: {command: [echo]}}\n"
	path := tempConfig(t, isolated(t, head+"plugins: {dir: "+builtPlugins()+plugins+jobs))
	wants := []string{
		path + `:2: plugins.checksums.shel: no job uses plugin "shel" and it has no binary (no executable ` + filepath.Join(builtPlugins(), "shel") +
			`, no plugins.paths entry): the checksum pins nothing (did you mean "shell"?); correct the name, or remove the entry`,
		path + `:2: plugins.paths.htp: no job uses plugin "htp" and it has no binary (stat /nonexistent/htp: no such file or directory`,
	}
	for _, args := range [][]string{{"validate", "--skip-plugins"}, {"validate"}, {"run"}} {
		_, stderr, code := pacerCmd(t, nil, append(args, "--config", path)...)
		if code != 2 || !strings.Contains(stderr, wants[0]) || !strings.Contains(stderr, wants[1]) {
			t.Errorf("pacer %v: exit %d, want 2 and\n%s\ngot:\n%s", args, code, strings.Join(wants, "\n"), stderr)
		}
	}

	absent := filepath.Join(t.TempDir(), "plugins")
	path = tempConfig(t, isolated(t, head+"plugins: {dir: "+absent+plugins+jobs))
	stdout, stderr, code := pacerCmd(t, nil, "validate", "--skip-plugins", "--config", path)
	want := "warning: " + path + `:2: plugins.checksums.shel: no job uses plugin "shel" and it has no binary`
	if code != 0 || !strings.Contains(stdout, "is valid") || !strings.Contains(stderr, want) || strings.Count(stderr, "warning:") != 2 ||
		!strings.Contains(stderr, "(plugins.dir "+absent+" is not on this machine: pacer run refuses this, exit 2, unless the plugin is in it there)") {
		t.Errorf("without plugins.dir: exit %d, want 0 and two warnings, the first\n%s\ngot:\n%s%s", code, want, stdout, stderr)
	}
	if _, stderr, code := pacerCmd(t, nil, "run", "--config", path); code != 2 || !strings.Contains(stderr, "refusing to start with an invalid config") {
		t.Errorf("pacer run without plugins.dir: exit %d, want 2\n%s", code, stderr)
	}
}

// The leap-year case of golang/go#81583 in a real process, with each zone
// data source: the system's (from 2040) and, through ZONEINFO, Go's own
// zoneinfo.zip, which time/tzdata embeds (from 2028).
func TestE2EValidateHourlyAcrossLeapYearEnd(t *testing.T) {
	parallelE2E(t)
	path := tempConfig(t, "jobs:\n  - id: hourly\n    plugin: shell\n    task: exec\n    schedule: \"0 * * * *\"\n    timezone: Europe/Berlin\n")
	goroot, err := exec.Command("go", "env", "GOROOT").Output() // go test puts its own go first on PATH
	if err != nil {
		t.Fatalf("go env GOROOT: %v", err)
	}
	for _, tc := range []struct {
		name string
		env  []string
		year int
	}{
		{"system", nil, 2040},
		{"go-zoneinfo", []string{"ZONEINFO=" + filepath.Join(strings.TrimSpace(string(goroot)), "lib", "time", "zoneinfo.zip")}, 2028},
	} {
		from := time.Date(tc.year, 12, 31, 20, 0, 0, 0, time.UTC)
		stdout, stderr, code := pacerCmd(t, tc.env, "validate", "--skip-plugins", "--config", path, "--from", from.Format(time.RFC3339), "--count", "6")
		if code != 0 {
			t.Fatalf("%s: exit %d\n%s%s", tc.name, code, stdout, stderr)
		}
		var want strings.Builder
		for i := 1; i <= 6; i++ {
			fmt.Fprintf(&want, "  %s\n", from.Add(time.Duration(i)*time.Hour).In(mustBerlin(t)).Format(time.RFC3339))
		}
		if !strings.Contains(stdout, want.String()) || strings.Contains(stdout, "never") {
			t.Errorf("%s: want six hourly fire times across the year's end:\n%s\ngot:\n%s", tc.name, want.String(), stdout)
		}
	}
}

func mustBerlin(t *testing.T) *time.Location {
	loc, err := time.LoadLocation("Europe/Berlin")
	if err != nil {
		t.Fatal(err)
	}
	return loc
}

// Reloads through a real `pacer run` (issue 10 item 4, issue 18): a file
// written in two steps is applied whole, never half way; an emptied file is
// refused and the jobs keep running; removing jobs is a WARN line naming
// them; "jobs: []" is accepted with a WARN line counting them. A job that
// can never fire is listed with next: never and warned about.
func TestE2EReloadIsSafe(t *testing.T) {
	parallelE2E(t)
	httpAddr := freeAddr(t)
	head := runnerConfig{node: "e2e-reload", cluster: "reload"}.head(t, httpAddr) + "jobs:\n"
	job := func(id, sched string) string {
		return fmt.Sprintf("  - id: %s\n    plugin: shell\n    task: exec\n    schedule: %q\n    params: {command: [/bin/true]}\n", id, sched)
	}
	var many strings.Builder
	for i := range 20 {
		many.WriteString(job(fmt.Sprintf("j%02d", i), "0 0 0 1 1 *"))
	}
	base := head + job("tick", "@every 1s") + job("feb30", "0 0 30 2 *") + many.String()
	p := startPacer(t, "e2e-reload", httpAddr, base)
	p.waitLogs("a run", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("run finished"))) > 0 })

	// A job that never fires: WARN at start, next: never in the API and CLI.
	if w := match(p.logs(), msgIs("job will never fire: no date matches its schedule (next: never); fix the schedule")); len(w) != 1 || w[0].str("job") != "feb30" || w[0].str("level") != "WARN" {
		t.Fatalf("never-firing job: %v", w)
	}
	jobs := func() map[string]string {
		out, code := p.cli(nil, "jobs", "-o", "json")
		var resp struct {
			Jobs []struct{ ID, Next string }
		}
		if code != 0 || json.Unmarshal([]byte(out), &resp) != nil {
			t.Fatalf("jobs: exit %d\n%s", code, out)
		}
		m := map[string]string{}
		for _, j := range resp.Jobs {
			m[j.ID] = j.Next
		}
		return m
	}
	if j := jobs(); len(j) != 22 || j["feb30"] != "never" || j["tick"] == "never" {
		t.Fatalf("jobs: %v", j)
	}
	if out, _ := p.cli(nil, "jobs"); !regexp.MustCompile(`(?m)^feb30\s.*\snever\s*$`).MatchString(out) {
		t.Fatalf("pacer jobs does not show next: never:\n%s", out)
	}

	countMsg := func(msg string) int { return len(match(p.logs(), msgIs(msg))) }
	const rejected = "config reload rejected; the last good config keeps running"
	noticed := func(ls []logLine) int {
		return len(match(ls, func(l logLine) bool { return strings.HasPrefix(l.str("msg"), "config file changed") }))
	}

	// 1. Written in two steps: first half, then the rest once the runner
	// has seen the first. The half is never applied.
	grown := base + job("added", "0 0 0 1 1 *")
	half := grown[:strings.Index(grown, "  - id: j05")]
	must(os.WriteFile(p.configPath, []byte(half), 0o644))
	p.waitLogs("the change to be noticed", 30*time.Second, func(ls []logLine) bool { return noticed(ls) == 1 })
	must(os.WriteFile(p.configPath, []byte(grown), 0o644))
	lines := p.waitLogs("the reload", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("config reloaded"))) == 1 })
	done := match(lines, msgIs("config reloaded"))[0]
	if done["jobs"] != 23.0 || fmt.Sprint(done["added"]) != "[added]" || fmt.Sprint(done["removed"]) != "[]" {
		t.Fatalf("the reload applied something else than the whole file: %v", done)
	}
	if n := countMsg("config reload removed jobs"); n != 0 {
		t.Fatalf("the half-written file removed jobs (%d warnings)", n)
	}

	// 2. Emptied (an editor's truncated save): refused; the jobs stay and
	// keep running.
	must(os.Truncate(p.configPath, 0))
	lines = p.waitLogs("the rejection", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs(rejected))) == 1 })
	rej := match(lines, msgIs(rejected))[0]
	if !strings.Contains(rej.str("error"), "jobs: the file is empty") || rej.str("level") != "ERROR" {
		t.Fatalf("rejection: %v", rej)
	}
	if j := jobs(); len(j) != 23 {
		t.Fatalf("an empty file changed the jobs: %d left", len(j))
	}
	waitRunsAfter(p, 2, logTime(rej), 30*time.Second)

	// 3. Removing jobs: a WARN line naming them.
	must(os.WriteFile(p.configPath, []byte(strings.Replace(grown, job("j03", "0 0 0 1 1 *"), "", 1)), 0o644))
	lines = p.waitLogs("the removal", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("config reload removed jobs"))) == 1 })
	if w := match(lines, msgIs("config reload removed jobs"))[0]; w.str("level") != "WARN" || fmt.Sprint(w["removed"]) != "[j03]" {
		t.Fatalf("removal warning: %v", w)
	}

	// 4. "jobs: []" on purpose: accepted, with a WARN line counting them.
	must(os.WriteFile(p.configPath, []byte(head+"  []\n"), 0o644))
	lines = p.waitLogs("the removal of every job", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, msgIs("config reload removed every job"))) == 1
	})
	if w := match(lines, msgIs("config reload removed every job"))[0]; w.str("level") != "WARN" || w["removed_count"] != 22.0 {
		t.Fatalf("jobs: [] warning: %v", w)
	}
	if j := jobs(); len(j) != 0 {
		t.Fatalf("after jobs: []: %v", j)
	}
}

// Config errors pass the sanitizer and stay readable: a param under a key
// named like a secret keeps its message ("PASSWORD: [redacted] string, got
// number" before), a quoted path before ": " is not a key ("passwd":
// "[redacted]" an IANA name), and user-info without a scheme in an address
// is masked (it was printed in clear).
func TestE2EConfigErrorsAreMaskedAndReadable(t *testing.T) {
	parallelE2E(t)
	plugins := filepath.Join(binDir, "plugins")
	params := tempConfig(t, isolated(t, "http: {listen: "+freeAddr(t)+"}\nplugins: {dir: "+plugins+"}\njobs:\n"+
		"  - id: a\n    plugin: shell\n    task: exec\n    schedule: \"@every 1h\"\n    params: {command: [echo], env: {PASSWORD: 5}}\n"))
	_, stderr, code := pacerCmd(t, nil, "validate", "--config", params)
	if want := "jobs[0].params.env[PASSWORD]: expected string, got number"; code != 2 || !strings.Contains(stderr, want) {
		t.Errorf("pacer validate: exit %d; stderr lacks %q:\n%s", code, want, stderr)
	}

	addrs := tempConfig(t, isolated(t, `http: {listen: "admin:listenpw-x1@127.0.0.1:23999"}
observability: {tracing: {exporter: otlp, endpoint: "user:otlppw-x3@collector:4317"}}
jobs:
  - {id: a, plugin: shell, task: exec, schedule: "@every 1h", timezone: "../../../etc/passwd"}
`))
	_, stderr, code = pacerCmd(t, nil, "validate", "--skip-plugins", "--config", addrs)
	for _, want := range []string{
		`http.listen: invalid address "[userinfo]@127.0.0.1:23999"`,
		`observability.tracing.endpoint: invalid address "[userinfo]@collector:4317"`,
		`unknown time zone "../../../etc/passwd": use an IANA name`,
	} {
		if code != 2 || !strings.Contains(stderr, want) {
			t.Errorf("pacer validate: exit %d; stderr lacks %q:\n%s", code, want, stderr)
		}
	}
	for _, secret := range []string{"listenpw-x1", "otlppw-x3"} {
		if strings.Contains(stderr, secret) {
			t.Errorf("pacer validate prints %q:\n%s", secret, stderr)
		}
	}
}

// Attack 20, Q6: a SIGHUP while pacer run starts (before the reloader
// sets its handler, once the plugins have started) ended the process with
// exit 129 and no log line; a deploy tool that writes the config and sends
// SIGHUP, or a `systemctl reload` right after `start`, killed a replica
// that was starting. It is dropped until the reloader runs. A SIGTERM
// then stops the runner cleanly once it has started.
func TestE2ESIGHUPWhileStartingIsHarmless(t *testing.T) {
	parallelE2E(t)
	httpAddr := freeAddr(t)
	p := startPacer(t, "e2e-hup", httpAddr, runnerConfig{node: "e2e-hup", cluster: "hup"}.head(t, httpAddr)+
		"jobs:\n  - {id: tick, plugin: shell, task: exec, schedule: '@every 1s', params: {command: [/bin/true]}}\n")
	// The first line comes before the plugins have started: the reloader
	// is not up yet.
	lines := p.waitLogs("its first line", 30*time.Second, func(ls []logLine) bool { return len(ls) > 0 })
	if len(match(lines, msgIs("scheduler started"))) > 0 {
		t.Log("the runner had started before its first line was read: the SIGHUP comes after the start on this run")
	}
	p.signal(syscall.SIGHUP)
	p.waitLogs("a run after the SIGHUP", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("run finished"))) > 0 })
	p.signal(syscall.SIGTERM)
	if code := p.wait(30 * time.Second); code != 0 {
		t.Fatalf("exit %d after SIGTERM, want 0", code)
	}

	// SIGTERM while starting: a clean stop once started, exit 0 (it was
	// 143, with no drain and no hand-over).
	q := startPacer(t, "e2e-term", httpAddr, runnerConfig{node: "e2e-term", cluster: "hup"}.head(t, httpAddr)+
		"jobs:\n  - {id: tick, plugin: shell, task: exec, schedule: '@every 1s', params: {command: [/bin/true]}}\n")
	q.waitLogs("its first line", 30*time.Second, func(ls []logLine) bool { return len(ls) > 0 })
	q.signal(syscall.SIGTERM)
	if code := q.wait(60 * time.Second); code != 0 {
		t.Fatalf("exit %d after a SIGTERM while starting, want 0", code)
	}
}

// What pacer validate warns about, pacer run logs at its start too: a
// plugins.cancel_grace that leaves a cancelled command's tree no room
// (attack 25, W1: accepted in silence by both; a command that ignored
// SIGTERM then got the shell plugin killed as hung, failing its other
// runs, and quarantined).
func TestE2ECancelGraceTooShortIsWarnedAbout(t *testing.T) {
	parallelE2E(t)
	httpAddr := freeAddr(t)
	cfg := runnerConfig{node: "e2e-grace", cluster: "grace", plugins: "dir: " + builtPlugins() + ", cancel_grace: 2s"}.head(t, httpAddr) +
		"jobs:\n  - {id: tick, plugin: shell, task: exec, schedule: '@every 1s', params: {command: [/bin/true]}}\n"
	const warning = "plugins.cancel_grace: 2s leaves a cancelled command no room"
	_, stderr, code := pacerCmd(t, nil, "validate", "--skip-plugins", "--config", tempConfig(t, cfg))
	if code != 0 || !strings.Contains(stderr, warning) {
		t.Fatalf("validate: exit %d, want 0 with the warning\n%s", code, stderr)
	}
	p := startPacer(t, "e2e-grace", httpAddr, cfg)
	p.waitLogs("the warning at the start", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, func(l logLine) bool {
			// where is the place, not the warning again (attack 28, F3).
			return l.str("level") == "WARN" && strings.HasPrefix(l.str("msg"), "config warning: 2s leaves a cancelled command no room") &&
				strings.HasSuffix(l.str("where"), ": plugins.cancel_grace") && regexp.MustCompile(`\.yaml:\d+: `).MatchString(l.str("where"))
		})) > 0
	})
}
