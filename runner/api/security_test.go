package api_test

import (
	"bufio"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/internal/syncbuf"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/api"
	"github.com/pacerun/pacer/runner/schedule"
)

// started is a Server bound to a loopback port, as the runner starts it.
type started struct {
	srv      *api.Server
	url      string
	store    *memStore
	rejected *prometheus.CounterVec
	logs     *lockedBuffer
}

func start(t *testing.T, o api.Options) *started {
	t.Helper()
	r := runner.New(runner.Options{})
	r.SetJobs([]*runner.Job{{ID: "a", Plugin: "shell", Task: "exec", Spec: "@every 5s", Schedule: schedule.Every(5 * time.Second)}})
	store := &memStore{paused: map[string]bool{}}
	logs := &lockedBuffer{}
	rejected := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "pacer_http_rejected_total", Help: "x"}, []string{"reason"})
	if o.Listen == "" {
		o.Listen = "127.0.0.1:0"
	}
	o.Registry, o.Logger, o.Rejected = prometheus.NewRegistry(), slog.New(slog.NewJSONHandler(logs, nil)), rejected
	o.Control = &runner.Control{Runner: r, Store: store}
	s := api.New(o)
	if err := s.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = s.Stop(ctx)
		// The client side of kept-alive connections, for goleak.
		http.DefaultClient.CloseIdleConnections()
	})
	scheme := "http"
	if o.TLS != nil {
		scheme = "https"
	}
	return &started{srv: s, url: scheme + "://" + s.Addr(), store: store, rejected: rejected, logs: logs}
}

// lockedBuffer collects the API's log.
type lockedBuffer struct{ syncbuf.Buffer }

// lines are the log's lines whose message is msg.
func (l *lockedBuffer) lines(msg string) []map[string]any {
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(l.String()))
	for sc.Scan() {
		var m map[string]any
		if json.Unmarshal(sc.Bytes(), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// do sends one request and returns the status, the decoded JSON body and
// the response headers.
func do(t *testing.T, c *http.Client, method, url string, hdr ...string) (int, map[string]any, http.Header) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
			continue
		}
		req.Header.Set(hdr[i], hdr[i+1])
	}
	if c == nil {
		c = http.DefaultClient
	}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var body map[string]any
	_ = json.NewDecoder(resp.Body).Decode(&body)
	return resp.StatusCode, body, resp.Header
}

const jsonCT = "application/json"

// TestBearerScheme: the scheme is case-insensitive, and only the exact token
// passes (a prefix, a longer token or another scheme do not).
func TestBearerScheme(t *testing.T) {
	t.Parallel()
	s := start(t, api.Options{Token: "s3cret"})
	for _, tc := range []struct {
		auth string
		want int
	}{
		{"Bearer s3cret", 200}, {"bearer s3cret", 200}, {"BEARER s3cret", 200}, {"bEaReR   s3cret", 200},
		{"Bearer s3cre", 401}, {"Bearer s3cretX", 401}, {"Basic s3cret", 401}, {"s3cret", 401}, {"Bearer", 401}, {"", 401},
	} {
		code, body, hdr := do(t, nil, "POST", s.url+"/api/v1/jobs/a/pause", "Content-Type", jsonCT, "Authorization", tc.auth)
		if code != tc.want {
			t.Errorf("Authorization %q: status %d (%v), want %d", tc.auth, code, body, tc.want)
		}
		if code == 401 && hdr.Get("WWW-Authenticate") == "" {
			t.Errorf("401 without WWW-Authenticate")
		}
	}
	if got := testutil.ToFloat64(s.rejected.WithLabelValues(api.RejectUnauthorized)); got != 6 {
		t.Errorf("rejected{reason=unauthorized} = %v, want 6", got)
	}
}

// TestBrowserCannotMutate: without a token (a loopback runner by default), a
// web page of another site must not pause or trigger: a request with a
// foreign Origin or Sec-Fetch-Site is refused for its origin, and a form or
// text/plain POST (which a browser sends cross-site without asking first)
// for its content type even when an old browser sends no Origin; the CLI's
// request (JSON, no Origin) and a same-origin one pass.
func TestBrowserCannotMutate(t *testing.T) {
	t.Parallel()
	s := start(t, api.Options{})
	host := strings.TrimPrefix(s.url, "http://")
	for _, tc := range []struct {
		name string
		hdr  []string
		want int
	}{
		{"form from another site", []string{"Content-Type", "application/x-www-form-urlencoded", "Origin", "http://evil.example"}, 403},
		{"form, no Origin (an old browser)", []string{"Content-Type", "application/x-www-form-urlencoded"}, 415},
		{"text/plain, no Origin", []string{"Content-Type", "text/plain"}, 415},
		{"no content type", nil, 415},
		{"json with a foreign origin", []string{"Content-Type", jsonCT, "Origin", "http://evil.example"}, 403},
		{"json cross-site fetch", []string{"Content-Type", jsonCT, "Sec-Fetch-Site", "cross-site"}, 403},
		{"json same-site fetch of another port", []string{"Content-Type", jsonCT, "Sec-Fetch-Site", "same-site"}, 403},
		{"cli", []string{"Content-Type", jsonCT}, 200},
		{"json with charset", []string{"Content-Type", "application/json; charset=utf-8"}, 200},
		{"same origin", []string{"Content-Type", jsonCT, "Origin", "http://" + host, "Sec-Fetch-Site", "same-origin"}, 200},
	} {
		code, body, _ := do(t, nil, "POST", s.url+"/api/v1/jobs/a/pause", tc.hdr...)
		if code != tc.want {
			t.Errorf("%s: status %d (%v), want %d", tc.name, code, body, tc.want)
		}
	}
	if got := testutil.ToFloat64(s.rejected.WithLabelValues(api.RejectCrossOrigin)); got != 4 {
		t.Errorf("rejected{reason=cross_origin} = %v, want 4", got)
	}
	if got := testutil.ToFloat64(s.rejected.WithLabelValues(api.RejectContentType)); got != 3 {
		t.Errorf("rejected{reason=content_type} = %v, want 3", got)
	}
}

// TestDNSRebindingRefused: a loopback API answers only requests whose Host
// names this machine, so a page whose domain an attacker resolves to
// 127.0.0.1 cannot reach it as "same-origin".
func TestDNSRebindingRefused(t *testing.T) {
	t.Parallel()
	s := start(t, api.Options{})
	_, port, _ := net.SplitHostPort(s.srv.Addr())
	for host, want := range map[string]int{
		"evil.example:" + port: 403, "evil.example": 403, "10.0.0.1:" + port: 403,
		"localhost:" + port: 200, "127.0.0.1:" + port: 200, "[::1]:" + port: 200, "LOCALHOST": 200,
	} {
		code, body, _ := do(t, nil, "GET", s.url+"/api/v1/jobs", "Host", host)
		if code != want {
			t.Errorf("Host %s: status %d (%v), want %d", host, code, body, want)
		}
	}
}

// TestMethodNotAllowed: a wrong method on a known path answers 405 with
// Allow; an unknown path 404.
func TestMethodNotAllowed(t *testing.T) {
	t.Parallel()
	s := start(t, api.Options{})
	for _, tc := range []struct {
		method, path string
		want         int
		allow        string
	}{
		{"POST", "/healthz", 405, "GET, HEAD"},
		{"DELETE", "/api/v1/jobs", 405, "GET, HEAD"},
		{"GET", "/api/v1/jobs/a/trigger", 405, "POST"},
		{"PUT", "/api/v1/jobs/a/pause", 405, "POST"},
		{"POST", "/metrics", 405, "GET, HEAD"},
		{"GET", "/api/v1/nope", 404, ""},
	} {
		code, body, hdr := do(t, nil, tc.method, s.url+tc.path)
		if code != tc.want || hdr.Get("Allow") != tc.allow {
			t.Errorf("%s %s: status %d Allow %q (%v), want %d %q", tc.method, tc.path, code, hdr.Get("Allow"), body, tc.want, tc.allow)
		}
		if e, _ := body["error"].(string); e == "" {
			t.Errorf("%s %s: no JSON error", tc.method, tc.path)
		}
	}
}

// TestRateLimit: mutating calls over the bucket answer 429 with Retry-After;
// reads are not limited.
func TestRateLimit(t *testing.T) {
	t.Parallel()
	s := start(t, api.Options{RatePerSecond: 0.01, RateBurst: 3})
	for i := range 3 {
		if code, body, _ := do(t, nil, "POST", s.url+"/api/v1/jobs/a/pause", "Content-Type", jsonCT); code != 200 {
			t.Fatalf("call %d: %d %v", i, code, body)
		}
	}
	code, body, hdr := do(t, nil, "POST", s.url+"/api/v1/jobs/a/resume", "Content-Type", jsonCT)
	retry, err := strconv.Atoi(hdr.Get("Retry-After"))
	if code != 429 || err != nil || retry < 1 || retry > 100 || !strings.Contains(body["error"].(string), "http.rate_limit") {
		t.Fatalf("over the limit: %d Retry-After %q %v", code, hdr.Get("Retry-After"), body)
	}
	for range 10 {
		if code, _, _ := do(t, nil, "GET", s.url+"/api/v1/jobs"); code != 200 {
			t.Fatalf("read limited: %d", code)
		}
	}
}

// TestAuditLines: every pause, resume and trigger, refused ones included,
// logs one INFO line with the action, job, status, correlation ID, remote
// address and whether a token was presented (never the token).
func TestAuditLines(t *testing.T) {
	t.Parallel()
	s := start(t, api.Options{Token: "s3cret"})
	do(t, nil, "POST", s.url+"/api/v1/jobs/a/trigger", "Content-Type", jsonCT, "Authorization", "Bearer s3cret", "X-Correlation-ID", "corr-7")
	do(t, nil, "POST", s.url+"/api/v1/jobs/a/pause", "Content-Type", jsonCT, "Authorization", "Bearer wrong")
	do(t, nil, "POST", s.url+"/api/v1/jobs/a/resume", "Content-Type", jsonCT)
	do(t, nil, "GET", s.url+"/api/v1/jobs")
	lines := s.logs.lines("api audit")
	if len(lines) != 3 {
		t.Fatalf("%d audit lines, want 3: %v", len(lines), lines)
	}
	want := []struct {
		action  string
		status  float64
		corr    string
		present bool
	}{{"trigger", 202, "corr-7", true}, {"pause", 401, "", true}, {"resume", 401, "", false}}
	for i, w := range want {
		l := lines[i]
		if l["level"] != "INFO" || l["action"] != w.action || l["job"] != "a" || l["status"] != w.status ||
			l["correlation_id"] != w.corr || l["token_presented"] != w.present || !strings.HasPrefix(l["remote_addr"].(string), "127.0.0.1:") {
			t.Errorf("audit line %d = %v, want action %s status %v correlation_id %q token_presented %v", i, l, w.action, w.status, w.corr, w.present)
		}
	}
	if strings.Contains(s.logs.String(), "s3cret") {
		t.Error("a log line holds the token")
	}
}

// TestAuditFloodBounded: a flood of refused calls (here without the token)
// does not flood the log: past the burst their audit lines are counted, and
// a later line says how many were left out; caller-supplied fields are cut.
func TestAuditFloodBounded(t *testing.T) {
	t.Parallel()
	s := start(t, api.Options{Token: "s3cret"})
	long := strings.Repeat("c", 1000)
	const flood = 200
	for range flood {
		do(t, nil, "POST", s.url+"/api/v1/jobs/a/pause", "Content-Type", jsonCT, "X-Correlation-ID", long)
	}
	if n := len(s.logs.lines("api audit")); n >= flood || n < 50 {
		t.Fatalf("%d audit lines for %d refused calls, want the burst (50) and what the rate (10/s) allows", n, flood)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		do(t, nil, "POST", s.url+"/api/v1/jobs/a/pause", "Content-Type", jsonCT)
		lines := s.logs.lines("api audit")
		if n, _ := lines[len(lines)-1]["suppressed"].(float64); n > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no audit line says how many were left out")
		}
		time.Sleep(20 * time.Millisecond)
	}
	for _, l := range s.logs.lines("api audit") {
		if c, _ := l["correlation_id"].(string); len(c) > 131 {
			t.Fatalf("correlation_id of %d bytes in an audit line", len(c))
		}
	}
	if got := testutil.ToFloat64(s.rejected.WithLabelValues(api.RejectUnauthorized)); got < flood {
		t.Fatalf("rejected{reason=unauthorized} = %v, want every refusal counted", got)
	}
}

// testPKI is a CA with a server certificate for 127.0.0.1 and a client
// certificate, written as PEM files into a temporary directory.
type testPKI struct {
	dir                   string
	ca, cert, key         string // server
	clientCert, clientKey string
	pool                  *x509.CertPool
}

func newPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "pacer test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	p := &testPKI{dir: dir, pool: x509.NewCertPool()}
	p.pool.AddCert(caCert)
	p.ca = writePEM(t, dir, "ca.pem", "CERTIFICATE", caDER)
	issue := func(name string, usage x509.ExtKeyUsage, serial int64) (string, string) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl := &x509.Certificate{SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
			ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
			IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"}}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, caCert, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		kb, _ := x509.MarshalECPrivateKey(key)
		return writePEM(t, dir, name+".pem", "CERTIFICATE", der), writePEM(t, dir, name+"-key.pem", "EC PRIVATE KEY", kb)
	}
	p.cert, p.key = issue("server", x509.ExtKeyUsageServerAuth, 2)
	p.clientCert, p.clientKey = issue("client", x509.ExtKeyUsageClientAuth, 3)
	return p
}

func writePEM(t *testing.T, dir, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func (p *testPKI) client(t *testing.T, withCert bool) *http.Client {
	t.Helper()
	cfg := &tls.Config{RootCAs: p.pool}
	if withCert {
		c, err := tls.LoadX509KeyPair(p.clientCert, p.clientKey)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{c}
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 10 * time.Second}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

// TestHTTPSAndMutualTLS: with a certificate the API speaks HTTPS only; with
// a client CA too, a client without a certificate signed by it cannot
// connect at all, and one with such a certificate is served.
func TestHTTPSAndMutualTLS(t *testing.T) {
	t.Parallel()
	p := newPKI(t)

	cfg, err := api.LoadTLS(p.cert, p.key, "")
	if err != nil {
		t.Fatal(err)
	}
	s := start(t, api.Options{TLS: cfg})
	if code, _, _ := do(t, p.client(t, false), "GET", s.url+"/healthz"); code != 200 {
		t.Fatalf("https: %d", code)
	}
	if resp, err := http.Get("http://" + s.srv.Addr() + "/healthz"); err == nil {
		resp.Body.Close()
		if resp.StatusCode == 200 {
			t.Fatal("plain HTTP served by an HTTPS API")
		}
	}

	cfg, err = api.LoadTLS(p.cert, p.key, p.ca)
	if err != nil {
		t.Fatal(err)
	}
	m := start(t, api.Options{TLS: cfg})
	if _, err := p.client(t, false).Get(m.url + "/healthz"); err == nil {
		t.Fatal("mutual TLS: a client without a certificate was served")
	}
	if code, body, _ := do(t, p.client(t, true), "POST", m.url+"/api/v1/jobs/a/pause", "Content-Type", jsonCT); code != 200 {
		t.Fatalf("mutual TLS with a client certificate: %d %v", code, body)
	}
	if a := m.logs.lines("api audit"); len(a) != 1 || a[0]["client_cert"] != "CN=client" {
		t.Fatalf("audit line under mutual TLS: %v, want client_cert CN=client", a)
	}

	for _, tc := range []struct{ cert, key, ca, want string }{
		{filepath.Join(p.dir, "missing.pem"), p.key, "", "http.tls.cert_file"},
		{p.ca, p.key, "", "http.tls: load"},
		{p.cert, p.key, filepath.Join(p.dir, "missing.pem"), "http.tls.client_ca_file"},
		{p.cert, p.key, p.key, "holds no PEM certificate"},
	} {
		if _, err := api.LoadTLS(tc.cert, tc.key, tc.ca); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("LoadTLS(%s, %s, %s) = %v, want %q", tc.cert, tc.key, tc.ca, err, tc.want)
		}
	}
}

// Attack 14, K14: caller-supplied audit fields are masked before they are
// cut to 128 bytes. Cut first, a GitHub token or an e-mail address at the
// cut was no longer recognised, and its first part was logged.
func TestAuditFieldsMaskedBeforeTheCut(t *testing.T) {
	t.Parallel()
	s := start(t, api.Options{Token: "s3cret"})
	token := "ghp_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
	do(t, nil, "POST", s.url+"/api/v1/jobs/a/trigger", "Content-Type", jsonCT,
		"User-Agent", strings.Repeat("x", 100)+" "+token)
	do(t, nil, "POST", s.url+"/api/v1/jobs/a/pause", "Content-Type", jsonCT,
		"User-Agent", strings.Repeat("x", 118)+" alice.secret@example.com")
	lines := s.logs.lines("api audit")
	if len(lines) != 2 {
		t.Fatalf("%d audit lines, want 2: %v", len(lines), lines)
	}
	for i, want := range []string{"[github_token]", "[email]"} {
		ua, _ := lines[i]["user_agent"].(string)
		if !strings.Contains(ua, want[:4]) || strings.Contains(ua, "ghp_aB") || strings.Contains(ua, "alice.sec") {
			t.Errorf("audit line %d user_agent %q: want the secret masked (%s) before the cut", i, ua, want)
		}
	}
}

// A FIFO renamed over the certificate file does not block the handshake:
// the last good certificate is served, and a certificate renamed back in
// is served after it (attack 14, K8: every HTTPS request, the probes
// included, hung until a restart).
func TestTLSCertificateFileTurnedIntoAFIFO(t *testing.T) {
	t.Parallel()
	p := newPKI(t)
	cfg, err := api.LoadTLS(p.cert, p.key, "")
	if err != nil {
		t.Fatal(err)
	}
	first, err := cfg.GetCertificate(nil)
	if err != nil {
		t.Fatal(err)
	}
	saved, err := os.ReadFile(p.cert)
	if err != nil {
		t.Fatal(err)
	}
	fifo := filepath.Join(p.dir, "fifo.tmp")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	if err := os.Rename(fifo, p.cert); err != nil {
		t.Fatal(err)
	}
	type got struct {
		c   *tls.Certificate
		err error
	}
	done := make(chan got, 1)
	go func() {
		c, err := cfg.GetCertificate(nil)
		done <- got{c, err}
	}()
	select {
	case g := <-done:
		if g.err != nil || g.c != first {
			t.Fatalf("with a FIFO for cert_file: %v, %v; want the last good certificate", g.c, g.err)
		}
	case <-time.After(5 * time.Second):
		if f, err := os.OpenFile(p.cert, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close() // end the blocked read
		}
		<-done
		t.Fatal("the handshake blocked reading a FIFO for cert_file")
	}
	back := filepath.Join(p.dir, "back.tmp")
	if err := os.WriteFile(back, saved, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(back, p.cert); err != nil {
		t.Fatal(err)
	}
	if c, err := cfg.GetCertificate(nil); err != nil || c == nil {
		t.Fatalf("after the certificate was renamed back: %v, %v", c, err)
	}
}
