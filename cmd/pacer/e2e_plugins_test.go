package main

import (
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner/pluginhost"
)

// installBinary copies a built plugin to path, replacing it in place (a
// rename, as a package upgrade does).
func installBinary(t *testing.T, from, path string, mode os.FileMode) {
	t.Helper()
	src, err := os.Open(filepath.Join(binDir, "plugins", from))
	must(err)
	defer src.Close()
	tmp := path + ".new"
	dst, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	must(err)
	_, err = io.Copy(dst, src)
	must(err)
	must(dst.Close())
	must(os.Chmod(tmp, mode))
	must(os.Rename(tmp, path))
}

func pluginStatus(t *testing.T, p *proc) map[string]pluginhost.Status {
	t.Helper()
	out, code := p.cli(nil, "plugins", "-o", "json")
	var resp struct{ Plugins []pluginhost.Status }
	if code != 0 || json.Unmarshal([]byte(out), &resp) != nil {
		t.Fatalf("pacer plugins: exit %d\n%s", code, out)
	}
	m := map[string]pluginhost.Status{}
	for _, s := range resp.Plugins {
		m[s.Name] = s
	}
	return m
}

// Plugin identity through a real runner: a shell binary replaced in place by
// another plugin is refused when its process restarts (the run says why and
// `pacer plugins` shows the cause, not the old plugin up); `pacer plugins
// restart` brings the fixed one up at once; a reload rejected for an unknown
// plugin leaves no trace in /api/v1/plugins.
func TestE2EPluginIdentityAndRestart(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	bin := filepath.Join(t.TempDir(), "shell")
	installBinary(t, "shell", bin, 0o755)
	httpAddr := freeAddr(t)
	cfg := runnerConfig{node: "e2e-id", cluster: "id", http: "token_env: PACER_TEST_TOKEN",
		plugins: "dir: " + t.TempDir() + ", paths: {shell: " + bin + "}"}.head(t, httpAddr) + `jobs:
  - id: yearly
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    params: {command: [echo, hello]}
`
	p := startPacer(t, "e2e-id", httpAddr, cfg, "PACER_TEST_TOKEN=tok")
	p.waitLogs("leadership", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("became leader"))) > 0 })
	auth := []string{"PACER_API_TOKEN=tok"}
	before := pluginStatus(t, p)["shell"]
	if before.State != "up" {
		t.Fatalf("shell: %+v, want up", before)
	}

	installBinary(t, "testplugin", bin, 0o755)
	must(syscall.Kill(before.PID, syscall.SIGKILL))
	if out, code := p.cli(auth, "trigger", "yearly"); code != 0 {
		t.Fatalf("trigger: exit %d\n%s", code, out)
	}
	fin := p.waitLogs("the triggered run to fail", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, msgIs("run finished"))) > 0
	})
	run := match(fin, msgIs("run finished"))[0]
	for _, want := range []string{bin, `describes itself as plugin "testplugin"`, `with task "exec"`, "pacer plugins restart shell"} {
		if !strings.Contains(run.str("error"), want) {
			t.Errorf("run error %q lacks %q", run.str("error"), want)
		}
	}
	st := pluginStatus(t, p)["shell"]
	if st.State == "up" || st.Cause != pluginhost.CauseIdentity || st.Version != "" || len(st.Tasks) != 0 {
		t.Errorf("shell after the wrong binary: %+v; want down, cause identity, nothing of the old process", st)
	}
	if out, _ := p.cli(nil, "plugins"); !regexp.MustCompile(`(?m)^shell +(down|quarantined) +identity `).MatchString(out) ||
		!regexp.MustCompile(`(?m)^shell( \(quarantined until \S+\))?: `).MatchString(out) || !strings.Contains(out, `describes itself as plugin "testplugin"`) {
		t.Errorf("pacer plugins does not show the state, the cause and the error below the table:\n%s", out)
	}

	installBinary(t, "shell", bin, 0o755)
	if out, code := p.cli(nil, "plugins", "restart", "shell"); code == 0 || !strings.Contains(out, "401") {
		t.Errorf("restart without the token: exit %d\n%s", code, out)
	}
	out, code := p.cli(auth, "plugins", "restart", "shell")
	if code != 0 || !strings.Contains(out, "restarted shell: up") {
		t.Fatalf("pacer plugins restart shell: exit %d\n%s", code, out)
	}
	if st := pluginStatus(t, p)["shell"]; st.State != "up" || st.PID == before.PID || st.Cause != "" {
		t.Fatalf("shell after the restart: %+v", st)
	}

	// A reload naming a plugin that does not exist is rejected, and the
	// plugin list does not show it.
	must(os.WriteFile(p.configPath, []byte(cfg+"  - id: ghost\n    plugin: nosuch\n    task: x\n    schedule: \"0 0 0 1 1 *\"\n"), 0o644))
	p.signal(syscall.SIGHUP)
	p.waitLogs("the rejection", 30*time.Second, func(ls []logLine) bool {
		return len(match(ls, msgIs("config reload rejected; the last good config keeps running"))) > 0
	})
	names := []string{}
	for n := range pluginStatus(t, p) {
		names = append(names, n)
	}
	if slices.Contains(names, "nosuch") {
		t.Fatalf("a rejected reload left %q in /api/v1/plugins: %v", "nosuch", names)
	}
}

// A plugin that crashes at start with a secret on its stderr: the error the
// runner keeps for it quotes that stderr, and every answer that shows it
// (GET /api/v1/plugins, the restart's 503, pacer plugins -o json and its
// table) has the secret masked, as the log lines do. (last_error carried
// "password=..." in clear while the log masked it.)
func TestE2EPluginStartErrorIsMaskedInTheAPIAndCLI(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: starts real pacer processes (skipped with -short)")
	}
	const secret = "startpw-e2e9"
	bin := filepath.Join(t.TempDir(), "shell")
	installBinary(t, "shell", bin, 0o755)
	httpAddr := freeAddr(t)
	cfg := runnerConfig{node: "e2e-mask", cluster: "mask",
		plugins: "dir: " + t.TempDir() + ", paths: {shell: " + bin + "}"}.head(t, httpAddr) + `jobs:
  - id: yearly
    plugin: shell
    task: exec
    schedule: "0 0 0 1 1 *"
    params: {command: [echo, hello]}
`
	p := startPacer(t, "e2e-mask", httpAddr, cfg)
	p.waitLogs("leadership", 30*time.Second, func(ls []logLine) bool { return len(match(ls, msgIs("became leader"))) > 0 })
	before := pluginStatus(t, p)["shell"]
	if before.State != "up" {
		t.Fatalf("shell: %+v, want up", before)
	}
	// The new binary crashes before its handshake, as a Python plugin whose
	// import fails does.
	script := "#!/bin/sh\necho 'Traceback (most recent call last):' >&2\necho 'ModuleNotFoundError: No module named grpcx (db password=" + secret + ")' >&2\nexit 1\n"
	tmp := bin + ".new"
	must(os.WriteFile(tmp, []byte(script), 0o755))
	must(os.Rename(tmp, bin))
	must(syscall.Kill(before.PID, syscall.SIGKILL))

	out, code := p.cli(nil, "plugins", "restart", "shell")
	if code == 0 || strings.Contains(out, secret) {
		t.Errorf("pacer plugins restart shell: exit %d, want a failure with the secret masked\n%s", code, out)
	}
	req, err := http.NewRequest(http.MethodPost, p.httpURL+"/api/v1/plugins/shell/restart", nil)
	must(err)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	must(err)
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || strings.Contains(string(body), secret) || !strings.Contains(string(body), "password=[redacted]") {
		t.Errorf("POST /api/v1/plugins/shell/restart: %d, want 503 with the secret masked\n%s", resp.StatusCode, body)
	}

	resp, err = http.Get(p.httpURL + "/api/v1/plugins")
	must(err)
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.Contains(string(body), secret) || !strings.Contains(string(body), "password=[redacted]") {
		t.Errorf("GET /api/v1/plugins shows the plugin's stderr unmasked:\n%s", body)
	}
	st := pluginStatus(t, p)["shell"]
	if st.State == "up" || !strings.Contains(st.LastError, "grpcx") || strings.Contains(st.LastError, secret) {
		t.Errorf("pacer plugins -o json: %+v; want down, last_error quoting the stderr with the secret masked", st)
	}
	if out, _ := p.cli(nil, "plugins", "-o", "json"); strings.Contains(out, secret) {
		t.Errorf("pacer plugins -o json shows the secret:\n%s", out)
	}
	if out, _ := p.cli(nil, "plugins"); strings.Contains(out, secret) {
		t.Errorf("pacer plugins shows the secret:\n%s", out)
	}
	if raw := p.rawLogs(); strings.Contains(raw, secret) {
		t.Errorf("the log shows the secret")
	}
}
