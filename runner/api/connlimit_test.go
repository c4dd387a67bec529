package api_test

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/runner/api"
)

// TestConnectionLimit: when every connection has a request in progress,
// connections over MaxConnections are closed as soon as they are accepted;
// once some close, new ones are served again.
func TestConnectionLimit(t *testing.T) {
	t.Parallel()
	s := start(t, api.Options{MaxConnections: 3})
	var held []net.Conn
	for range 3 {
		c, err := net.Dial("tcp", s.srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		held = append(held, c)
		// A whole request head, and a body that never comes: the handler
		// reads it (the server's 100 Continue says so), a request in
		// progress that the limit does not close.
		fmt.Fprintf(c, "POST /api/v1/jobs/a/pause HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: %s\r\nContent-Length: 100\r\nExpect: 100-continue\r\n\r\n", jsonCT)
		_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil || !strings.HasPrefix(line, "HTTP/1.1 100") {
			t.Fatalf("held connection: %q %v, want 100 Continue", line, err)
		}
	}
	// A fourth is closed without an answer.
	c, err := net.Dial("tcp", s.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, _ = io.WriteString(c, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
	n, rerr := c.Read(make([]byte, 1))
	c.Close()
	if n > 0 || errors.Is(rerr, os.ErrDeadlineExceeded) {
		t.Fatalf("a connection over the limit was served: %d bytes, %v", n, rerr)
	}
	if got := testutil.ToFloat64(s.rejected.WithLabelValues(api.RejectConnectionCap)); got != 1 {
		t.Fatalf("rejected{reason=connection_limit} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(s.rejected.WithLabelValues(api.RejectConnectionEvicted)); got != 0 {
		t.Fatalf("rejected{reason=connection_evicted} = %v: a request in progress was closed", got)
	}
	for _, c := range held {
		c.Close()
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := http.Get(s.url + "/healthz")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("not served again after the held connections closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestConnectionLimitKeepsProbes (G9): a client holding every connection
// the limit allows, idle or with an unfinished request head, and opening
// more as they are closed, cannot take /healthz, /readyz and /metrics
// down: each new connection closes the one waiting longest, not itself.
// Before, the probes' connections were refused and the kubelet restarted
// a healthy replica. Over HTTPS too, where a connection in its handshake
// waits as well.
func TestConnectionLimitKeepsProbes(t *testing.T) {
	t.Parallel()
	const limit = 8
	p := newPKI(t)
	cfg, err := api.LoadTLS(p.cert, p.key, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		tls  *tls.Config
	}{{"http", nil}, {"https", cfg}} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := start(t, api.Options{MaxConnections: limit, TLS: tc.tls})
			client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			if tc.tls != nil {
				client = p.client(t, false)
				client.Transport.(*http.Transport).DisableKeepAlives = true
			}
			// hold opens a connection that waits: nothing sent (over
			// HTTPS: a handshake not begun), or a request head not
			// finished (over HTTPS: after the handshake).
			var held []net.Conn
			hold := func(i int) {
				c, err := net.Dial("tcp", s.srv.Addr())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				if i%2 == 1 {
					if tc.tls != nil {
						tc := tls.Client(c, &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1"})
						if err := tc.Handshake(); err != nil {
							t.Fatal(err)
						}
						c = tc
					}
					if _, err := io.WriteString(c, "GET /api/v1/jobs HTTP/1.1\r\nHost: 127.0.0.1\r\n"); err != nil {
						t.Fatal(err)
					}
				}
				held = append(held, c)
			}
			for round := range 3 {
				for i := range limit {
					hold(i)
				}
				for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
					resp, err := client.Get(s.url + path)
					if err != nil {
						t.Fatalf("round %d: %s with %d connections waiting: %v", round, path, limit, err)
					}
					resp.Body.Close()
					if resp.StatusCode != 200 {
						t.Fatalf("round %d: %s: %d", round, path, resp.StatusCode)
					}
				}
			}
			// The first connection held waited longest: the first probe
			// closed it.
			_ = held[0].SetReadDeadline(time.Now().Add(10 * time.Second))
			if n, err := held[0].Read(make([]byte, 1)); n > 0 || errors.Is(err, os.ErrDeadlineExceeded) {
				t.Errorf("the longest-waiting connection is still open: %d bytes, %v", n, err)
			}
			if got := testutil.ToFloat64(s.rejected.WithLabelValues(api.RejectConnectionEvicted)); got < 1 {
				t.Errorf("rejected{reason=connection_evicted} = %v", got)
			}
			if got := testutil.ToFloat64(s.rejected.WithLabelValues(api.RejectConnectionCap)); got != 0 {
				t.Errorf("rejected{reason=connection_limit} = %v: a connection was refused while others waited", got)
			}
		})
	}
}
