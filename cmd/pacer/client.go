package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/pacerun/pacer/runner/pluginhost"
)

// clientFlags are the flags of the subcommands that talk to a runner's API.
type clientFlags struct {
	addr   string
	output string
}

func (c *clientFlags) register(fs *flag.FlagSet) {
	def := os.Getenv("PACER_ADDR")
	if def == "" {
		def = "http://127.0.0.1:9464"
	}
	fs.StringVar(&c.addr, "addr", def, "runner API address (env PACER_ADDR)")
	fs.StringVar(&c.output, "o", "table", "output format: table or json")
}

// get fetches path from the runner's API into v, passing raw JSON to stdout
// when -o json is set.
func (c *clientFlags) get(path string, v any, stdout io.Writer) (raw bool, err error) {
	addr := strings.TrimSuffix(c.addr, "/")
	if !strings.Contains(addr, "://") {
		addr = "http://" + addr
	}
	hc := &http.Client{Timeout: 10 * time.Second}
	resp, err := hc.Get(addr + path)
	if err != nil {
		return false, fmt.Errorf("cannot reach the runner at %s: %w (is it running? set --addr or PACER_ADDR)", addr, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 16<<20))
	if err != nil {
		return false, err
	}
	if resp.StatusCode != http.StatusOK {
		var e struct{ Error string }
		if json.Unmarshal(body, &e) == nil && e.Error != "" {
			return false, fmt.Errorf("%s: %s", resp.Status, e.Error)
		}
		return false, fmt.Errorf("%s from %s%s", resp.Status, addr, path)
	}
	switch c.output {
	case "json":
		_, err := stdout.Write(body)
		return true, err
	case "table":
		return false, json.Unmarshal(body, v)
	default:
		return false, fmt.Errorf("%w: -o %q: want table or json", errUsage, c.output)
	}
}

func pluginsCmd(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("plugins", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var c clientFlags
	c.register(fs)
	if err := fs.Parse(args); err != nil {
		return fmt.Errorf("%w: %v", errUsage, err)
	}
	var resp struct{ Plugins []pluginhost.Status }
	if raw, err := c.get("/api/v1/plugins", &resp, stdout); err != nil || raw {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PLUGIN\tSTATE\tVERSION\tPID\tRESTARTS\tTASKS")
	for _, p := range resp.Plugins {
		var tasks []string
		for _, t := range p.Tasks {
			tasks = append(tasks, t.Name)
		}
		state := p.State
		if p.Quarantined != nil {
			state += " until " + p.Quarantined.Format(time.RFC3339)
		}
		if p.Error != "" {
			state += " (" + p.Error + ")"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%s\n", p.Name, state, orDash(p.Version), orDash(pid(p.PID)), p.Restarts, orDash(strings.Join(tasks, ", ")))
	}
	return tw.Flush()
}

func pid(p int) string {
	if p == 0 {
		return ""
	}
	return fmt.Sprint(p)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
