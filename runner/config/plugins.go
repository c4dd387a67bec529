package config

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/pacerun/pacer/internal/didyoumean"
)

// pluginEntry is an entry of plugins.checksums or plugins.paths, with its
// line, for CheckPlugins.
type pluginEntry struct {
	file string // the config file's name
	path string // key path, e.g. "plugins.checksums.shell"
	line int
	name string // the plugin's name: the entry's key
}

// recordPluginEntries remembers, after validation, where the entries of
// plugins.checksums and plugins.paths are.
func (d *decoder) recordPluginEntries(c *Config) {
	for _, m := range []struct {
		key     string
		entries map[string]string
	}{{"plugins.checksums", c.Plugins.Checksums}, {"plugins.paths", c.Plugins.Paths}} {
		for _, name := range sortedKeys(m.entries) {
			p := joinPath(m.key, name)
			c.pluginEntries = append(c.pluginEntries, pluginEntry{file: d.file, path: p, line: d.lineOf(p), name: name})
		}
	}
}

// CheckPlugins reports each entry of plugins.checksums and plugins.paths
// under a plugin name that no job uses and that has no binary: no
// executable file of that name in plugins.dir and, for a checksum, no
// plugins.paths entry; for a path, no executable file at it. Such a name is
// almost surely mistyped ("shel" for "shell"), and the entry meant for the
// real plugin did nothing: it ran unpinned, or from plugins.dir rather than
// its path. An entry for a plugin no job uses yet (one a later reload's jobs
// will) is fine when its binary is there.
//
// Each is a problem at the entry's line, naming the plugin meant when a
// plugin the jobs use or an executable in plugins.dir is close:
//
//	pacer.yaml:9: plugins.checksums.shel: no job uses plugin "shel" and it has no binary (no executable bin/plugins/shel, no plugins.paths entry): the checksum pins nothing (did you mean "shell"?); …
//
// Like CheckFiles it reads this machine's file system (plugins.dir and the
// paths, relative to the working directory), which Parse does not; pacer
// run and a reload refuse a config it reports, pacer validate too unless
// plugins.dir is not on its machine (PluginsDirHere).
func (c *Config) CheckPlugins() error {
	used := make(map[string]bool)
	var candidates []string // the names meant: jobs' plugins first, then plugins.dir's
	for _, j := range c.Jobs {
		if !used[j.Plugin] {
			used[j.Plugin] = true
			candidates = append(candidates, j.Plugin)
		}
	}
	candidates = append(candidates, c.dirPlugins()...)
	var probs []Problem
	for _, e := range c.pluginEntries {
		if used[e.name] {
			continue // the plugin host checks the binary of every plugin a job uses
		}
		inDir := filepath.Join(c.Plugins.Dir, e.name)
		if validDirName(e.name) && executable(inDir) == nil {
			continue
		}
		var what, why string
		if strings.HasPrefix(e.path, "plugins.checksums") {
			if _, ok := c.Plugins.Paths[e.name]; ok {
				continue // a binary the paths entry names, or a problem reported there
			}
			what = fmt.Sprintf("no executable %s, no plugins.paths entry", inDir)
			why = "the checksum pins nothing"
		} else {
			err := executable(c.Plugins.Paths[e.name])
			if err == nil {
				continue
			}
			what = fmt.Sprintf("%v, no executable %s", err, inDir)
			why = "the path is used for nothing"
		}
		msg := fmt.Sprintf("no job uses plugin %q and it has no binary (%s): %s", e.name, what, why)
		if s := didyoumean.Closest(e.name, candidates); s != "" {
			msg += fmt.Sprintf(" (did you mean %q?)", s)
		}
		msg += "; correct the name, or remove the entry"
		probs = append(probs, Problem{File: e.file, Line: e.line, Path: e.path, Msg: message("%s", msg)})
	}
	if len(probs) == 0 {
		return nil
	}
	return &Error{Problems: sortProblems(probs)}
}

// PluginsDirHere reports whether plugins.dir exists on this machine. Where
// it does not (pacer validate --skip-plugins in CI, say), CheckPlugins
// cannot tell a mistyped name from a plugin installed only where the runner
// runs.
func (c *Config) PluginsDirHere() bool {
	_, err := os.Stat(c.Plugins.Dir)
	return !errors.Is(err, fs.ErrNotExist)
}

// dirPlugins lists the executable files in plugins.dir named like a plugin,
// without an extension and not hidden or a backup ("shell", not
// "shell.orig", ".shell.swp" or "shell~"), as the plugin host lists them;
// none if the directory cannot be read.
func (c *Config) dirPlugins() []string {
	entries, _ := os.ReadDir(c.Plugins.Dir)
	var names []string
	for _, e := range entries {
		n := e.Name()
		if strings.HasPrefix(n, ".") || strings.HasSuffix(n, "~") || strings.Contains(n, ".") {
			continue
		}
		if executable(filepath.Join(c.Plugins.Dir, n)) == nil {
			names = append(names, n)
		}
	}
	slices.Sort(names)
	return names
}

// validDirName reports whether name can be a file's in plugins.dir, as the
// plugin host looks plugins up there.
func validDirName(name string) bool {
	return name != "" && name != "." && name != ".." && !strings.ContainsAny(name, `/\`)
}

// executable returns why path is not an executable regular file, or nil if
// it is, as the plugin host requires of a plugin's binary.
func executable(path string) error {
	info, err := os.Stat(path)
	switch {
	case err != nil:
		return err
	case !info.Mode().IsRegular() || info.Mode()&0o111 == 0:
		return fmt.Errorf("%s is not an executable file", path)
	}
	return nil
}
