package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"

	"github.com/pacerun/pacer/internal/oneline"
	"github.com/pacerun/pacer/runner/api"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// pluginsRestartCmd is `pacer plugins restart NAME [--force]`: a new process
// for the plugin, checked against the jobs, and the end of its quarantine.
func pluginsRestartCmd(args []string, stdout, stderr io.Writer) error {
	c := clientFlags{timeout: restartTimeout}
	fs := flag.NewFlagSet("plugins restart", flag.ContinueOnError)
	fs.SetOutput(stderr)
	c.register(fs)
	force := fs.Bool("force", false, "restart even while runs are in progress (they fail as crashed)")
	pos, err := parseInterspersed(fs, args)
	if err != nil {
		return fmt.Errorf("%w: %w", errUsage, err)
	}
	if len(pos) != 1 {
		return fmt.Errorf("%w: usage: pacer plugins restart NAME [--force] [--addr URL] [--token T]", errUsage)
	}
	return restartPlugin(&c, pos[0], *force, stdout)
}

// restartTimeout bounds the wait for a restart's answer. The runner stops
// the old process (giving it up to pluginhost's 10 s kill grace before
// SIGKILL), waits for what it left to die, and starts the new one; its API
// answers within api.WriteTimeout or not at all. The wait used to be the
// 10 s of every call, as long as the kill grace: a restart of a plugin
// that took all of it to stop went through after the CLI had given up
// (S6).
const restartTimeout = api.WriteTimeout + 5*time.Second

// restartPlugin asks the runner to restart plugin name, and prints the
// new process.
func restartPlugin(c *clientFlags, name string, force bool, stdout io.Writer) error {
	path := "/api/v1/plugins/" + url.PathEscape(name) + "/restart"
	if force {
		path += "?force=true"
	}
	var resp struct{ Plugin pluginhost.Status }
	raw, err := c.do(http.MethodPost, path, nil, &resp, stdout)
	if errors.Is(err, errNoAnswer) {
		return fmt.Errorf("%w; `pacer plugins` shows whether %s restarted (its PID and RESTARTS), before you ask again", err, oneline.Escape(name))
	}
	if err != nil || raw {
		return err
	}
	p := resp.Plugin
	_, err = fmt.Fprintf(stdout, "restarted %s: %s, pid %d, version %s\n", oneline.Escape(p.Name), oneline.Escape(p.State), p.PID, oneline.Escape(orDash(p.Version)))
	return err
}
