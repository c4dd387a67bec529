// Command http is Pacer's first-party plugin for health checks and webhooks.
//
// Task "request" sends one HTTP request, checks the response status against
// the expected ones and keeps a bounded copy of the response body as the
// run's output. It passes the run on to the server as X-Correlation-ID and
// X-Pacer-Run-ID headers (unless the job sets them) and identifies itself as
// User-Agent pacer-http/<version>. Cancellation and the run's deadline stop
// the request at once; timeout, if set, bounds it further. URLs in messages
// and results lose their user-info and have query values masked; header
// values are never shown.
//
//	params:
//	  url: https://api.internal/health     # required, absolute http(s)
//	  method: GET                          # default GET
//	  headers: {Authorization: Bearer ..., Content-Type: application/json}
//	  body: '{"event": "nightly"}'
//	  expect_status: [2xx, 304]            # codes or classes; default [2xx]
//	  timeout: 10s                         # Go duration; the run's deadline applies too
//	  follow_redirects: true               # default true, at most 10
//	  max_response_bytes: 65536            # body kept in the output (default 65536, 1 to 1048576)
//	  tls:
//	    ca_file: /etc/pacer/ca.pem         # replaces the system roots
//	    cert_file: /etc/pacer/client.pem   # client certificate, with key_file
//	    key_file: /etc/pacer/client-key.pem
//	    server_name: api.internal
//	    insecure_skip_verify: false
//
// The result's data holds status, duration_ms, response_bytes (the body's
// size, counted up to 4 MiB past max_response_bytes), truncated and url (the
// final URL after redirects). A status outside expect_status fails the run,
// with the data still filled in.
package main

import (
	"github.com/pacerun/pacer/sdk"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func main() {
	sdk.Serve(sdk.Plugin{
		Name:    "http",
		Version: version,
		Tasks: map[string]sdk.Task{
			"request": sdk.Typed("Send an HTTP request; an expected status (default 2xx) is success.", requestTask),
		},
	})
}
