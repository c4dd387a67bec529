package coord_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/embed"

	"github.com/pacerun/pacer/internal/etcdembed/etcdtest"
	"github.com/pacerun/pacer/internal/syncbuf"
	"github.com/pacerun/pacer/runner/coord"
)

// An etcd that asks for a client certificate, reached without one or
// through a CA that did not sign its certificate: the etcd client only
// times out, and TLSCheck names the handshake's failure (attack 27, R4:
// every line said "context deadline exceeded", and the advice was to
// check that etcd is up). With the right configuration it finds nothing,
// and an endpoint nobody listens on is no TLS matter.
func TestTLSCheckNamesTheHandshakesFailure(t *testing.T) {
	pki := newPKI(t)
	endpoint := "https://" + startTLSEtcd(t, pki)
	caFile, otherFile, clientCert, clientKey := pki.caFile, pki.otherFile, pki.clientCert, pki.clientKey
	for _, tc := range []struct {
		name string
		o    coord.ClientOptions
		want string // in the check's answer; "": none
	}{
		{"no client certificate", coord.ClientOptions{CAFile: caFile}, "certificate"},
		{"another CA", coord.ClientOptions{CAFile: otherFile, CertFile: clientCert, KeyFile: clientKey}, "x509"},
		{"right", coord.ClientOptions{CAFile: caFile, CertFile: clientCert, KeyFile: clientKey}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.o.Endpoints, tc.o.DialTimeout = []string{endpoint}, time.Second
			cc, err := coord.ClientConfig(tc.o)
			if err != nil {
				t.Fatal(err)
			}
			got := coord.TLSCheck(cc)(context.Background())
			switch {
			case tc.want == "" && got != nil:
				t.Fatalf("check: %v, want none", got)
			case tc.want != "" && (got == nil || !strings.Contains(got.Error(), tc.want) || !strings.Contains(got.Error(), "cluster.etcd.tls")):
				t.Fatalf("check: %v, want the handshake's failure naming %q and cluster.etcd.tls", got, tc.want)
			}
			t.Logf("%s: %v", tc.name, got)
		})
	}
	// What the on-call engineer reads: the state's error (pacer status,
	// /api/v1/cluster) names the certificate.
	cc, cli := tlsClient(t, coord.ClientOptions{Endpoints: []string{endpoint}, CAFile: caFile})
	c := coord.New(coord.Options{Client: cli, Cluster: "tls", Node: "a", RequestTimeout: time.Second, TLSCheck: coord.TLSCheck(cc)})
	if _, err := c.State(context.Background()); err == nil || !strings.Contains(err.Error(), "read elections: context deadline exceeded (the TLS handshake") ||
		!strings.Contains(err.Error(), "certificate required") {
		t.Fatalf("state: %v, want the timeout and the handshake's failure", err)
	}
	// The watches' and the member record's WARN lines name it too (attack
	// 28, F4: they said only "context deadline exceeded").
	var logs syncbuf.Buffer
	log := slog.New(slog.NewJSONHandler(&logs, nil))
	check := coord.TLSCheck(cc)
	c = coord.New(coord.Options{Client: cli, Cluster: "tls", Node: "a", RequestTimeout: time.Second, TLSCheck: check, Logger: log})
	ms := coord.NewMembership(coord.MembershipOptions{Client: cli, Cluster: "tls", Node: "a", LeaseTTL: 5 * time.Second,
		RequestTimeout: time.Second, JobSet: coord.JobSet{Fingerprint: "f"}, Logger: log, TLSCheck: check})
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { c.WatchPaused(ctx, func(map[string]bool) {}, nil) })
	wg.Go(func() { ms.Run(ctx) })
	for _, msg := range []string{"watch interrupted; re-reading", "member watch interrupted", "member record not published"} {
		waitFor(t, "a WARN line "+msg+" naming the handshake", 30*time.Second, func() bool {
			for _, l := range strings.Split(logs.String(), "\n") {
				if strings.Contains(l, msg) && strings.Contains(l, "the TLS handshake with etcd") && strings.Contains(l, "certificate required") {
					return true
				}
			}
			return false
		})
	}
	cancel()
	wg.Wait()
	// Nobody listens: the caller's error (unreachable) says it all.
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	closed := l.Addr().String()
	l.Close()
	cc, err := coord.ClientConfig(coord.ClientOptions{Endpoints: []string{"https://" + closed}, CAFile: caFile, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	if got := coord.TLSCheck(cc)(context.Background()); got != nil {
		t.Fatalf("check of a closed port: %v, want none", got)
	}
	// A server that closes the connection on the client's hello (an etcd
	// serving plain HTTP, attack 31: the check said only "EOF", and asked
	// for the CA and certificates), or answers in plain text: the check
	// says it does not seem to speak TLS. One that does not answer at all
	// (a stalled etcd) is no TLS matter.
	for _, srv := range []struct {
		name  string
		serve func(net.Conn)
		want  string // "": none
	}{
		{"closes on the hello", func(c net.Conn) { _, _ = c.Read(make([]byte, 1024)); c.Close() }, "does not seem to speak TLS"},
		{"plain text", func(c net.Conn) { _, _ = c.Write([]byte("HTTP/1.1 400 Bad Request\r\n\r\n")); c.Close() }, "does not seem to speak TLS"},
		{"silent", func(c net.Conn) { <-t.Context().Done(); c.Close() }, ""},
	} {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		go func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				go srv.serve(c)
			}
		}()
		cc, err := coord.ClientConfig(coord.ClientOptions{Endpoints: []string{"https://" + l.Addr().String()}, CAFile: caFile, DialTimeout: time.Second})
		if err != nil {
			t.Fatal(err)
		}
		got := coord.TLSCheck(cc)(context.Background())
		l.Close()
		switch {
		case srv.want == "" && got != nil:
			t.Errorf("check of a server that %s: %v, want none", srv.name, got)
		case srv.want != "" && (got == nil || !strings.Contains(got.Error(), srv.want)):
			t.Errorf("check of a server that %s: %v, want it to say %q", srv.name, got, srv.want)
		}
	}
	if plain, _ := coord.ClientConfig(coord.ClientOptions{Endpoints: []string{"http://" + closed}}); coord.TLSCheck(plain) != nil {
		t.Fatal("a check without TLS")
	}
}

// pki is a CA's files for a TLS etcd and its clients, and another CA's.
type pki struct {
	dir                             string
	ca, other                       *x509.Certificate
	caKey, otherKey                 *ecdsa.PrivateKey
	caFile, otherFile               string
	serverCert, serverKey           string // signed by ca
	clientCert, clientKey           string // signed by ca
	otherServerCert, otherServerKey string // signed by other
}

func newPKI(t *testing.T) *pki {
	p := &pki{dir: t.TempDir()}
	p.ca, p.caKey = newCA(t, "right CA")
	p.other, p.otherKey = newCA(t, "other CA")
	p.caFile, p.otherFile = p.write(t, "ca.pem", "CERTIFICATE", p.ca.Raw), p.write(t, "other.pem", "CERTIFICATE", p.other.Raw)
	p.serverCert, p.serverKey = p.issue(t, "etcd", p.ca, p.caKey, x509.ExtKeyUsageServerAuth)
	p.clientCert, p.clientKey = p.issue(t, "pacer", p.ca, p.caKey, x509.ExtKeyUsageClientAuth)
	p.otherServerCert, p.otherServerKey = p.issue(t, "etcd-other", p.other, p.otherKey, x509.ExtKeyUsageServerAuth)
	return p
}

func (p *pki) write(t *testing.T, name, typ string, der []byte) string {
	t.Helper()
	path := filepath.Join(p.dir, name)
	if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

// issue writes a certificate for 127.0.0.1 signed by ca, and its key.
func (p *pki) issue(t *testing.T, name string, ca *x509.Certificate, caKey *ecdsa.PrivateKey, usage x509.ExtKeyUsage) (string, string) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(time.Now().UnixNano()), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{usage}, KeyUsage: x509.KeyUsageDigitalSignature,
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := x509.MarshalECPrivateKey(key)
	return p.write(t, name+".pem", "CERTIFICATE", der), p.write(t, name+"-key.pem", "EC PRIVATE KEY", kb)
}

// startTLSEtcd starts an etcd that serves its clients TLS with p's server
// certificate and asks them for one p's CA signed; it returns its address.
func startTLSEtcd(t *testing.T, p *pki) string {
	t.Helper()
	client, peer := etcdtest.Addrs(t)
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir, cfg.LogLevel = "tls", filepath.Join(p.dir, "etcd"), "error"
	cu, pu := url.URL{Scheme: "https", Host: client}, url.URL{Scheme: "http", Host: peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: p.serverCert, KeyFile: p.serverKey, TrustedCAFile: p.caFile, ClientCertAuth: true}
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(e.Close)
	select {
	case <-e.Server.ReadyNotify():
	case <-time.After(30 * time.Second):
		t.Fatal("etcd did not start")
	}
	return client
}

// tlsClient is a client made with o (a dial timeout of a second), and its
// configuration; closed at the test's end.
func tlsClient(t *testing.T, o coord.ClientOptions) (clientv3.Config, *clientv3.Client) {
	t.Helper()
	o.DialTimeout = time.Second
	cc, err := coord.ClientConfig(o)
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cli.Close() })
	return cc, cli
}

func newCA(t *testing.T, name string) (*x509.Certificate, *ecdsa.PrivateKey) {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	return cert, key
}

// etcd that starts refusing the replica mid-run (a CA changed: etcd's
// certificate is now signed by one the replica does not trust) makes its
// keepalives time out, and nothing more from the etcd client. The lines
// that follow name the handshake's failure: a WARN line as soon as the
// check finds it, the self-fencing ERROR, and the first no-session line
// (attack 31, M4: for seconds they named no cause).
func TestKeepalivesFailingOnTheHandshakeNameIt(t *testing.T) {
	pki := newPKI(t)
	fw := newSwitchedForwarder(t, startTLSEtcd(t, pki))
	cc, cli := tlsClient(t, coord.ClientOptions{Endpoints: []string{"https://" + fw.addr()}, CAFile: pki.caFile,
		CertFile: pki.clientCert, KeyFile: pki.clientKey})
	var logs syncbuf.Buffer
	c := coord.New(coord.Options{Client: cli, Cluster: "tls", Node: "a", LeaseTTL: 3 * time.Second, RequestTimeout: time.Second,
		TLSCheck: coord.TLSCheck(cc), Logger: slog.New(slog.NewJSONHandler(&logs, nil))})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	waitFor(t, "a leads", 30*time.Second, func() bool { return c.Term() != nil })

	fw.refuse(pki.otherServerCert, pki.otherServerKey)
	const session = "no etcd session (it ended, or could not be opened); trying again"
	waitFor(t, "the session ends", 30*time.Second, func() bool { return strings.Contains(logs.String(), session) })
	lines := strings.Split(logs.String(), "\n")
	find := func(msg string) (int, string) {
		for i, l := range lines {
			if strings.Contains(l, `"msg":"`+msg) {
				return i, l
			}
		}
		t.Fatalf("no line %q in:\n%s", msg, logs.String())
		return 0, ""
	}
	const cause = "the TLS handshake with etcd at " // the check's words
	found, l := find("etcd refuses this replica's TLS handshake")
	if !strings.Contains(l, cause) || !strings.Contains(l, "x509") {
		t.Errorf("the check's line names no handshake failure: %s", l)
	}
	fenced, l := find("self-fencing")
	if !strings.Contains(l, `"tls_problem":"`+cause) || found > fenced {
		t.Errorf("the self-fencing line (line %d, the check's %d) names no handshake failure: %s", fenced, found, l)
	}
	if _, l := find(session); !strings.Contains(l, cause) || strings.Count(l, cause) != 1 {
		t.Errorf("the first no-session line names the handshake failure %d times, want once: %s", strings.Count(l, cause), l)
	}
	if n := strings.Count(logs.String(), "etcd refuses this replica's TLS handshake"); n != 1 {
		t.Errorf("the check's finding logged %d times, want once", n)
	}
}

// switchedForwarder passes TCP connections on to an address until told to
// refuse: then it closes them, and shakes hands with every new one as a
// TLS server with another certificate, which the client does not trust.
type switchedForwarder struct {
	t       *testing.T
	ln      net.Listener
	to      string
	mu      sync.Mutex
	conns   []net.Conn
	refused *tls.Config
	wg      sync.WaitGroup
}

func newSwitchedForwarder(t *testing.T, to string) *switchedForwarder {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &switchedForwarder{t: t, ln: ln, to: to}
	f.wg.Go(f.accept)
	t.Cleanup(func() {
		ln.Close()
		f.mu.Lock()
		for _, c := range f.conns {
			c.Close()
		}
		f.mu.Unlock()
		f.wg.Wait()
	})
	return f
}

func (f *switchedForwarder) addr() string { return f.ln.Addr().String() }

func (f *switchedForwarder) accept() {
	for {
		in, err := f.ln.Accept()
		if err != nil {
			return
		}
		f.mu.Lock()
		refused := f.refused
		f.conns = append(f.conns, in)
		f.mu.Unlock()
		if refused != nil {
			f.wg.Go(func() {
				defer in.Close()
				_ = in.SetDeadline(time.Now().Add(5 * time.Second))
				_ = tls.Server(in, refused).Handshake()
			})
			continue
		}
		out, err := net.Dial("tcp", f.to)
		if err != nil {
			in.Close()
			continue
		}
		f.mu.Lock()
		f.conns = append(f.conns, out)
		f.mu.Unlock()
		f.wg.Go(func() { _, _ = io.Copy(out, in); out.Close() })
		f.wg.Go(func() { _, _ = io.Copy(in, out); in.Close() })
	}
}

// refuse cuts the connections passed on, and answers new ones with the
// certificate in certFile.
func (f *switchedForwarder) refuse(certFile, keyFile string) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refused = &tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"h2"}}
	for _, c := range f.conns {
		c.Close()
	}
	f.conns = nil
}
