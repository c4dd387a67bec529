package api_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
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

// TestConnectionLimitKeepsProbesPastUnsentBodies (attack 14, K2): a client
// holding every connection the limit allows with whole request heads whose
// bodies never come (Content-Length 100000, 2 bytes sent; to /healthz, and
// to a write path without the token: no token needed) cannot take the
// probes down. Each such request is answered at once (405, 401) with
// "Connection: close", and its connection then waits, so a probe's new
// connection closes one. Before, net/http read the unread body before
// answering and after, until ReadTimeout (15 s): the answers came after
// it, the connections counted as requests in progress, and the probes were
// refused (connection_limit). Over HTTPS too.
func TestConnectionLimitKeepsProbesPastUnsentBodies(t *testing.T) {
	t.Parallel()
	const limit = 4
	// Well under ReadTimeout: what the server answers only once the read
	// timeout cuts the body off does not arrive within it.
	const prompt = api.ReadTimeout / 3
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
			s := start(t, api.Options{MaxConnections: limit, TLS: tc.tls, Token: "secret"})
			client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
			if tc.tls != nil {
				client = p.client(t, false)
				client.Transport.(*http.Transport).DisableKeepAlives = true
			}
			client.Timeout = prompt
			var stalled []net.Conn
			for i := range limit {
				c, err := net.Dial("tcp", s.srv.Addr())
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { c.Close() })
				if tc.tls != nil {
					tc := tls.Client(c, &tls.Config{RootCAs: p.pool, ServerName: "127.0.0.1"})
					if err := tc.Handshake(); err != nil {
						t.Fatal(err)
					}
					c = tc
				}
				path, ct, want := "/healthz", "", http.StatusMethodNotAllowed
				if i%2 == 1 {
					path, ct, want = "/api/v1/jobs/a/pause", "Content-Type: "+jsonCT+"\r\n", http.StatusUnauthorized
				}
				if _, err := fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\n%sContent-Length: 100000\r\n\r\n{\"", path, ct); err != nil {
					t.Fatal(err)
				}
				_ = c.SetReadDeadline(time.Now().Add(prompt))
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err == nil {
					_, err = io.ReadAll(resp.Body)
					resp.Body.Close()
				}
				if err != nil {
					t.Fatalf("POST %s with its body unsent: no answer within %v: %v", path, prompt, err)
				}
				if resp.StatusCode != want || !resp.Close {
					t.Fatalf("POST %s with its body unsent: %d, Connection: close %v; want %d and close", path, resp.StatusCode, resp.Close, want)
				}
				stalled = append(stalled, c)
			}
			// The server still reads the unsent bodies; the connections
			// wait all the same.
			deadline := time.Now().Add(prompt)
			for api.WaitingConnections(s.srv) != limit {
				if time.Now().After(deadline) {
					t.Fatalf("%d of %d connections with unsent bodies wait, after %v", api.WaitingConnections(s.srv), limit, prompt)
				}
				time.Sleep(5 * time.Millisecond)
			}
			for _, path := range []string{"/healthz", "/readyz", "/metrics"} {
				resp, err := client.Get(s.url + path)
				if err != nil {
					t.Fatalf("%s with %d connections whose bodies never come: %v", path, limit, err)
				}
				resp.Body.Close()
				if resp.StatusCode != 200 {
					t.Fatalf("%s: %d", path, resp.StatusCode)
				}
			}
			// The first answered waited longest: the first probe closed it.
			_ = stalled[0].SetReadDeadline(time.Now().Add(prompt))
			if n, err := stalled[0].Read(make([]byte, 1)); n > 0 || errors.Is(err, os.ErrDeadlineExceeded) {
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

// TestReadBodiesKeepTheirConnection: requests whose handler reads the
// whole body (the API's JSON bodies), and requests without one, keep their
// connection for the next request as before unreadBodies; a body left
// unread closes it.
func TestReadBodiesKeepTheirConnection(t *testing.T) {
	t.Parallel()
	s := start(t, api.Options{Token: "secret"})
	c, err := net.Dial("tcp", s.srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(10 * time.Second))
	br := bufio.NewReader(c)
	for _, tc := range []struct {
		req   string
		want  int
		close bool
	}{
		{"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, false},
		{"POST /api/v1/jobs/a/pause HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer secret\r\nContent-Type: " + jsonCT + "\r\nContent-Length: 2\r\n\r\n{}", 200, false},
		{"POST /api/v1/jobs/a/resume HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer secret\r\nContent-Type: " + jsonCT + "\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n", 200, false},
		{"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n", 200, false},
		{"POST /api/v1/jobs/a/pause HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: " + jsonCT + "\r\nContent-Length: 2\r\n\r\n{}", 401, true},
	} {
		if _, err := io.WriteString(c, tc.req); err != nil {
			t.Fatal(err)
		}
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%q: %v", tc.req, err)
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.want || resp.Close != tc.close {
			t.Fatalf("%q: %d, Connection: close %v; want %d, %v", tc.req, resp.StatusCode, resp.Close, tc.want, tc.close)
		}
	}
}

// TestProbeListenerAnswersWhileTheAPIIsFull (attack 12, H2): with
// http.probe_listen set, /healthz and /readyz have a listener of their own,
// so clients that fill http.max_connections cannot crowd out the kubelet.
// Here every connection the API allows has a request in progress (a pause
// whose body never comes, token given: its handler reads the body), so the
// API closes a new connection at once, probes included; the probe listener
// answers them, and serves nothing else.
func TestProbeListenerAnswersWhileTheAPIIsFull(t *testing.T) {
	t.Parallel()
	const limit = 4
	s := start(t, api.Options{MaxConnections: limit, Token: "secret", ProbeListen: "127.0.0.1:0"})
	for range limit {
		c, err := net.Dial("tcp", s.srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		if _, err := fmt.Fprintf(c, "POST /api/v1/jobs/a/pause HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer secret\r\n"+
			"Content-Type: %s\r\nContent-Length: 100\r\n\r\n{\"", jsonCT); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(api.ReadTimeout / 3)
	for api.BusyConnections(s.srv) != limit {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections have a request in progress", api.BusyConnections(s.srv), limit)
		}
		time.Sleep(5 * time.Millisecond)
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	if resp, err := client.Get(s.url + "/healthz"); err == nil {
		resp.Body.Close()
		t.Fatalf("the API answered /healthz (%d) with every connection busy: the test does not fill it", resp.StatusCode)
	}
	probes := "http://" + s.srv.ProbeAddr()
	for _, c := range []struct {
		method, path string
		want         int
	}{
		{"GET", "/healthz", 200}, {"GET", "/readyz", 200},
		{"GET", "/metrics", 404}, {"GET", "/api/v1/jobs", 404}, {"POST", "/api/v1/jobs/a/pause", 404}, {"POST", "/healthz", 405},
	} {
		req, _ := http.NewRequest(c.method, probes+c.path, nil)
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("probe listener: %s %s with the API full: %v", c.method, c.path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("probe listener: %s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.want)
		}
	}
	if got := testutil.ToFloat64(s.rejected.WithLabelValues(api.RejectConnectionCap)); got != 1 {
		t.Errorf("rejected{reason=connection_limit} = %v, want 1 (the API's /healthz)", got)
	}
	if !strings.Contains(s.logs.String(), `"msg":"probes listening"`) {
		t.Errorf("no \"probes listening\" line:\n%s", s.logs.String())
	}
}

// TestConnectionLimitEvictsConnectionsStuckInAWrite (attack 15, F4): a
// client that pipelines requests on every connection the limit allows and
// never reads the answers holds them as requests in progress, the
// server's writes stuck. Such a connection, stuck past the write stall,
// is closed for a new one as a waiting one would be, so a probe's new
// connection is served. Before, every new connection was refused
// (connection_limit) until the write timeout, 30 s.
func TestConnectionLimitEvictsConnectionsStuckInAWrite(t *testing.T) {
	const limit = 4
	api.SetWriteStall(t.Cleanup, 200*time.Millisecond)
	s := start(t, api.Options{MaxConnections: limit})
	dialer := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 2048)
		}); err != nil {
			return err
		}
		return serr
	}}
	// Each answer is a 404 naming a 4 KiB path: a few hundred fill the
	// socket buffers.
	req := "GET /" + strings.Repeat("x", 4096) + " HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
	var wg sync.WaitGroup
	t.Cleanup(wg.Wait) // after the connections close (cleanups run last first)
	for range limit {
		c, err := dialer.Dial("tcp", s.srv.Addr())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 5000 {
				if _, err := io.WriteString(c, req); err != nil {
					return // closed
				}
			}
		}()
	}
	deadline := time.Now().Add(20 * time.Second)
	for api.StuckWrites(s.srv) != limit {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d connections have a write stuck", api.StuckWrites(s.srv), limit)
		}
		time.Sleep(10 * time.Millisecond)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, path := range []string{"/healthz", "/readyz"} {
		resp, err := client.Get(s.url + path)
		if err != nil {
			t.Fatalf("%s with every connection's answer stuck: %v", path, err)
		}
		resp.Body.Close()
		if resp.StatusCode != 200 {
			t.Fatalf("%s: %d", path, resp.StatusCode)
		}
	}
	if got := testutil.ToFloat64(s.rejected.WithLabelValues(api.RejectConnectionEvicted)); got < 1 {
		t.Errorf("rejected{reason=connection_evicted} = %v", got)
	}
	if got := testutil.ToFloat64(s.rejected.WithLabelValues(api.RejectConnectionCap)); got != 0 {
		t.Errorf("rejected{reason=connection_limit} = %v: a connection was refused while others were stuck", got)
	}
}

// A second runner beside the first, on the same probe port: Start fails
// naming http.probe_listen, and lets go of the API's port it had bound.
func TestProbeListenerPortTaken(t *testing.T) {
	t.Parallel()
	first := start(t, api.Options{ProbeListen: "127.0.0.1:0"})
	s := api.New(api.Options{Listen: "127.0.0.1:0", ProbeListen: first.srv.ProbeAddr(), Registry: prometheus.NewRegistry()})
	err := s.Start()
	if err == nil {
		_ = s.Stop(context.Background())
		t.Fatal("a second server started on a probe port in use")
	}
	if !strings.Contains(err.Error(), "set http.probe_listen") || !strings.Contains(err.Error(), first.srv.ProbeAddr()) {
		t.Errorf("error %q does not name the address and http.probe_listen", err)
	}
	ln, lerr := net.Listen("tcp", s.Addr())
	if lerr != nil {
		t.Fatalf("the API's port %s is still held after the probe listener failed: %v", s.Addr(), lerr)
	}
	ln.Close()
}
