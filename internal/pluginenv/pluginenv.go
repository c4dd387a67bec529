// Package pluginenv is the rule for the environment a plugin process starts
// with. The runner's plugin host applies it, and so do the tools that
// promise to start a plugin as the runner does ("pacer plugins check",
// sdktest.Start), so that a plugin that reads a variable the runner never
// passes fails there too, not first in production.
//
// A plugin process gets the runner's variables named by Base, those the
// operator's plugins.inherit_env names, never a denied one (the API token's,
// the etcd password's), and go-plugin's handshake variables, which whoever
// starts the process adds.
package pluginenv

import (
	"slices"
	"strings"
)

// Base names the variables every plugin process gets from the runner's
// environment: what programs need to find things and speak the right
// language, nothing that is usually a secret. "LC_*" stands for every
// variable starting with LC_.
func Base() []string {
	return []string{"PATH", "HOME", "LANG", "LC_*", "TZ", "TMPDIR", "USER"}
}

// Process is the environment a plugin process starts with, taken from env
// (KEY=VALUE entries, as os.Environ gives them): the variables Base and
// inherit name (a name, or a prefix followed by "*"), except those in deny.
// It is sorted, so that it does not depend on the order of env.
func Process(env, inherit, deny []string) []string {
	return Select(env, append(Base(), inherit...), deny)
}

// Select returns the entries of env whose name matches one of patterns (a
// name, or a prefix followed by "*"), except those named in deny, sorted.
func Select(env, patterns, deny []string) []string {
	var out []string
	for _, kv := range env {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || name == "" || slices.Contains(deny, name) || !Matches(name, patterns) {
			continue
		}
		out = append(out, kv)
	}
	slices.Sort(out)
	return out
}

// Matches reports whether name matches one of patterns: equals a name, or
// starts with the prefix of a pattern ending in "*" (a bare "*" matches
// nothing).
func Matches(name string, patterns []string) bool {
	for _, p := range patterns {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if prefix != "" && strings.HasPrefix(name, prefix) {
				return true
			}
		} else if name == p {
			return true
		}
	}
	return false
}
