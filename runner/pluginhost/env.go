package pluginhost

import (
	"os"
	"slices"
	"strings"
)

// BaseEnv names the variables of the runner's environment that every plugin
// process gets (and the shell plugin passes on to its commands): what
// programs need to find things and speak the right language, nothing that
// is usually a secret. "LC_*" stands for every variable starting with LC_.
var BaseEnv = []string{"PATH", "HOME", "LANG", "LC_*", "TZ", "TMPDIR", "USER"}

// environ selects from env (KEY=VALUE entries, as os.Environ gives them)
// the variables whose name matches one of patterns, a name or a prefix
// followed by "*", except those in deny. The result is sorted, so a plugin
// process's environment does not depend on the order of the runner's.
func environ(env, patterns, deny []string) []string {
	var out []string
	for _, kv := range env {
		name, _, ok := strings.Cut(kv, "=")
		if !ok || name == "" || slices.Contains(deny, name) || !matchesAny(name, patterns) {
			continue
		}
		out = append(out, kv)
	}
	slices.Sort(out)
	return out
}

func matchesAny(name string, patterns []string) bool {
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

// processEnv is the environment a plugin process starts with: BaseEnv and
// Options.InheritEnv, never Options.DenyEnv. go-plugin adds its own
// handshake variables.
func (h *Host) processEnv() []string {
	return environ(os.Environ(), append(slices.Clone(BaseEnv), h.opts.InheritEnv...), h.opts.DenyEnv)
}

// taskEnv resolves a job's inherit_env list against the runner's
// environment, for RunContext.env; nil when nothing matches.
func (h *Host) taskEnv(patterns []string) map[string]string {
	if len(patterns) == 0 {
		return nil
	}
	var m map[string]string
	for _, kv := range environ(os.Environ(), patterns, h.opts.DenyEnv) {
		k, v, _ := strings.Cut(kv, "=")
		if m == nil {
			m = map[string]string{}
		}
		m[k] = v
	}
	return m
}
