package pluginhost

import (
	"os"
	"strings"

	"github.com/pacerun/pacer/internal/pluginenv"
)

// BaseEnv names the variables of the runner's environment that every plugin
// process gets (and the shell plugin passes on to its commands):
// pluginenv.Base, the rule "pacer plugins check" and sdktest.Start apply too.
var BaseEnv = pluginenv.Base()

// processEnv is the environment a plugin process starts with: BaseEnv and
// Options.InheritEnv, never Options.DenyEnv. go-plugin adds its own
// handshake variables.
func (h *Host) processEnv() []string {
	return pluginenv.Process(os.Environ(), h.opts.InheritEnv, h.opts.DenyEnv)
}

// taskEnv resolves a job's inherit_env list against the runner's
// environment, for RunContext.env; nil when nothing matches.
func (h *Host) taskEnv(patterns []string) map[string]string {
	if len(patterns) == 0 {
		return nil
	}
	var m map[string]string
	for _, kv := range pluginenv.Select(os.Environ(), patterns, h.opts.DenyEnv) {
		k, v, _ := strings.Cut(kv, "=")
		if m == nil {
			m = map[string]string{}
		}
		m[k] = v
	}
	return m
}
