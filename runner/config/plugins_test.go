package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// writeExec writes a file with the given mode to dir and returns its path.
func writeExec(t *testing.T, dir, name string, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte("#!/bin/sh\n"), mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestCheckPlugins: an entry of plugins.checksums or plugins.paths under a
// name no job uses and that has no binary is a problem at its own line,
// with the name meant among the jobs' plugins and plugins.dir's executables
// (attack 14, K5: "shel" was accepted, and the job's plugin "shell" ran
// unpinned). An entry for a plugin no job uses but whose binary is there
// (one a later reload's jobs will use) is fine.
func TestCheckPlugins(t *testing.T) {
	t.Parallel()
	dir, other := t.TempDir(), t.TempDir()
	writeExec(t, dir, "shell", 0o755)
	writeExec(t, dir, "http", 0o755)
	writeExec(t, dir, "backup.orig", 0o755) // not a plugin's name: never suggested
	writeExec(t, dir, "notes", 0o644)       // not executable: no binary
	pathed := writeExec(t, other, "custom", 0o755)
	sum := "'sha256:" + strings.Repeat("0", 64) + "'"
	src := y(
		"plugins:",
		"  dir: "+dir,
		"  checksums:",
		"    shell: "+sum,  // a job uses it
		"    shel: "+sum,   // 5: mistyped
		"    http: "+sum,   // no job yet, its binary is in dir
		"    custom: "+sum, // no job yet, its binary is in plugins.paths
		"    backup: "+sum, // 8: no binary, nothing close but a backup file
		"    notes: "+sum,  // 9: not executable
		"    mailr: "+sum,  // 10: mistyped, a job's plugin not installed here
		"  paths: {htp: /nonexistent/htp, custom: "+pathed+", 'shell': "+other+"}", // 11: htp mistyped
		"jobs:",
		"  - {id: a, plugin: shell, task: run, schedule: '@hourly'}",
		"  - {id: b, plugin: mailer, task: run, schedule: '@hourly'}",
	)
	cfg, err := Parse("pacer.yaml", src)
	if err != nil {
		t.Fatal(err)
	}
	if !cfg.PluginsDirHere() {
		t.Error("PluginsDirHere() = false for an existing directory")
	}
	err = cfg.CheckPlugins()
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("CheckPlugins() = %v, want a *Error", err)
	}
	want := []string{
		`pacer.yaml:5: plugins.checksums.shel: no job uses plugin "shel" and it has no binary (no executable ` + filepath.Join(dir, "shel") +
			`, no plugins.paths entry): the checksum pins nothing (did you mean "shell"?); correct the name, or remove the entry`,
		`pacer.yaml:8: plugins.checksums.backup: no job uses plugin "backup" and it has no binary (no executable ` + filepath.Join(dir, "backup") +
			`, no plugins.paths entry): the checksum pins nothing; correct the name, or remove the entry`,
		`pacer.yaml:9: plugins.checksums.notes: no job uses plugin "notes" and it has no binary (no executable ` + filepath.Join(dir, "notes") +
			`, no plugins.paths entry): the checksum pins nothing; correct the name, or remove the entry`,
		`pacer.yaml:10: plugins.checksums.mailr: no job uses plugin "mailr" and it has no binary (no executable ` + filepath.Join(dir, "mailr") +
			`, no plugins.paths entry): the checksum pins nothing (did you mean "mailer"?); correct the name, or remove the entry`,
		`pacer.yaml:11: plugins.paths.htp: no job uses plugin "htp" and it has no binary (stat /nonexistent/htp: no such file or directory, ` +
			`no executable ` + filepath.Join(dir, "htp") + `): the path is used for nothing (did you mean "http"?); correct the name, or remove the entry`,
	}
	var got []string
	for _, p := range cerr.Problems {
		got = append(got, p.String())
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("CheckPlugins():\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// TestCheckPluginsWithoutThePluginsDir: where plugins.dir does not exist,
// a name no job uses has no binary there (pacer run refuses it), and
// PluginsDirHere says so, for pacer validate to tell that apart from a
// machine without the plugins installed. Entries for the jobs' plugins are
// left to the plugin host.
func TestCheckPluginsWithoutThePluginsDir(t *testing.T) {
	t.Parallel()
	missing := filepath.Join(t.TempDir(), "plugins")
	sum := "'sha256:" + strings.Repeat("0", 64) + "'"
	cfg, err := Parse("pacer.yaml", y(
		"plugins:",
		"  dir: "+missing,
		"  checksums: {shell: "+sum+", shel: "+sum+"}",
		"jobs: [{id: a, plugin: shell, task: run, schedule: '@hourly'}]",
	))
	if err != nil {
		t.Fatal(err)
	}
	if cfg.PluginsDirHere() {
		t.Error("PluginsDirHere() = true for a directory that does not exist")
	}
	err = cfg.CheckPlugins()
	want := `pacer.yaml:3: plugins.checksums.shel: no job uses plugin "shel" and it has no binary`
	if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Count(err.Error(), "\n") != 0 {
		t.Errorf("CheckPlugins() = %v, want one problem starting %q", err, want)
	}
}
