// Command shell is Pacer's first-party plugin for running programs.
//
// Task "exec" runs a command (argv, no shell unless asked), captures a bounded
// copy of its combined output, maps the exit status to the run's outcome and
// exports the run's identity as PACER_* environment variables. Every process
// the command starts, including ones that call setsid or daemonise, ends
// with the run (package sdk/proctree): on timeout or cancellation after
// SIGTERM and a grace period, and when the command exits, whatever it left
// running is killed and noted in the output. Output beyond
// max_output_bytes is cut, and a last line says how many bytes were.
//
//	params:
//	  command: [/usr/local/bin/report, --since, 24h]   # or a string with shell: true
//	  shell: false            # run command[0] through /bin/sh -c
//	  dir: /srv/reports       # working directory
//	  env: {REPORT_FORMAT: csv}
//	  inherit_env: [AWS_PROFILE, PGPASS*]  # runner variables passed through (always:
//	                          # PATH, HOME, LANG, LC_*, TZ, TMPDIR, USER)
//	  max_output_bytes: 65536 # output bytes kept (default 65536, at least 1)
package main

import (
	"github.com/pacerun/pacer/sdk"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	sdk.Serve(sdk.Plugin{
		Name:    "shell",
		Version: version,
		Tasks: map[string]sdk.Task{
			"exec": sdk.Typed("Run a command; exit status 0 is success.", execTask),
		},
	})
}
