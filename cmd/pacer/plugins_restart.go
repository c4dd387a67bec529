package main

import (
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"

	"github.com/pacerun/pacer/internal/oneline"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// pluginsRestartCmd is `pacer plugins restart NAME [--force]`: a new process
// for the plugin, checked against the jobs, and the end of its quarantine.
func pluginsRestartCmd(args []string, stdout, stderr io.Writer) error {
	var c clientFlags
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
	path := "/api/v1/plugins/" + url.PathEscape(pos[0]) + "/restart"
	if *force {
		path += "?force=true"
	}
	var resp struct{ Plugin pluginhost.Status }
	if raw, err := c.do(http.MethodPost, path, nil, &resp, stdout); err != nil || raw {
		return err
	}
	p := resp.Plugin
	_, err = fmt.Fprintf(stdout, "restarted %s: %s, pid %d, version %s\n", oneline.Escape(p.Name), oneline.Escape(p.State), p.PID, oneline.Escape(orDash(p.Version)))
	return err
}
