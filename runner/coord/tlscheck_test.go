package coord_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
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
	dir := t.TempDir()
	ca, caKey := newCA(t, "right CA")
	other, _ := newCA(t, "other CA")
	write := func(name, typ string, der []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	issue := func(name string, usage x509.ExtKeyUsage) (string, string) {
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
		return write(name+".pem", "CERTIFICATE", der), write(name+"-key.pem", "EC PRIVATE KEY", kb)
	}
	caFile, otherFile := write("ca.pem", "CERTIFICATE", ca.Raw), write("other.pem", "CERTIFICATE", other.Raw)
	serverCert, serverKey := issue("etcd", x509.ExtKeyUsageServerAuth)
	clientCert, clientKey := issue("pacer", x509.ExtKeyUsageClientAuth)

	client, peer := etcdtest.Addrs(t)
	cfg := embed.NewConfig()
	cfg.Name, cfg.Dir, cfg.LogLevel = "tls", filepath.Join(dir, "etcd"), "error"
	cu, pu := url.URL{Scheme: "https", Host: client}, url.URL{Scheme: "http", Host: peer}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{cu}, []url.URL{cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{pu}, []url.URL{pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.ClientTLSInfo = transport.TLSInfo{CertFile: serverCert, KeyFile: serverKey, TrustedCAFile: caFile, ClientCertAuth: true}
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

	endpoint := "https://" + client
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
	cc, err := coord.ClientConfig(coord.ClientOptions{Endpoints: []string{endpoint}, CAFile: caFile, DialTimeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(cc)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
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
	cc, err = coord.ClientConfig(coord.ClientOptions{Endpoints: []string{"https://" + closed}, CAFile: caFile, DialTimeout: time.Second})
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
