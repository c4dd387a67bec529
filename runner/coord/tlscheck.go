package coord

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// TLSCheck returns what says why the TLS handshake with cfg's etcd
// endpoints fails, or nil if cfg uses no TLS. The etcd client only ever
// reports "context deadline exceeded" when its handshakes fail (a client
// certificate forgotten, a CA that did not sign etcd's certificate): its
// gRPC connections retry behind the requests' deadlines, so an on-call
// engineer saw a timeout and checked that etcd was up (attack 27, R4).
// The check dials each endpoint and shakes hands as the client would; its
// answer is kept for checkEvery, so that a replica that cannot reach etcd
// does not dial it again for every line it logs.
func TLSCheck(cfg clientv3.Config) func(context.Context) error {
	if cfg.TLS == nil {
		return nil
	}
	var (
		mu   sync.Mutex
		at   time.Time
		last error
	)
	return func(ctx context.Context) error {
		mu.Lock()
		defer mu.Unlock()
		if !at.IsZero() && time.Since(at) < checkEvery {
			return last
		}
		last, at = tlsProblem(ctx, cfg.Endpoints, cfg.TLS), time.Now()
		return last
	}
}

const checkEvery = 10 * time.Second

// tlsProblem shakes hands with each endpoint that uses TLS (https://, or no
// scheme, as the etcd client does when TLS is configured) and returns the
// first failure of the handshake itself. An endpoint that cannot be
// reached at all is no TLS problem: the caller's error says that already.
func tlsProblem(ctx context.Context, endpoints []string, tc *tls.Config) error {
	for _, ep := range endpoints {
		addr := ep
		if strings.Contains(ep, "://") {
			u, err := url.Parse(ep)
			if err != nil || u.Scheme != "https" {
				continue
			}
			addr = u.Host
		}
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			continue
		}
		c := tc.Clone()
		if c.ServerName == "" {
			c.ServerName = host
		}
		c.NextProtos = []string{"h2"} // as gRPC offers
		err = handshake(ctx, addr, c)
		if err != nil && notTLS(err) {
			return fmt.Errorf("the TLS handshake with etcd at %s fails: %v: the endpoint does not seem to speak TLS (an etcd "+
				"serving plain http://?): give its endpoint as http:// in cluster.etcd.endpoints and leave cluster.etcd.tls out, "+
				"or have etcd serve TLS (--cert-file, --key-file, https:// in --listen-client-urls)", addr, err)
		}
		if err != nil {
			return fmt.Errorf("the TLS handshake with etcd at %s fails: %v: check cluster.etcd.tls (ca_file must hold the CA "+
				"that signed etcd's certificate, for the name in cluster.etcd.endpoints; cert_file and key_file a client "+
				"certificate that etcd's --trusted-ca-file accepts, if etcd asks for one)", addr, err)
		}
	}
	return nil
}

// notTLS says whether a handshake's failure means the server answered,
// but not in TLS: it closed the connection on the client's hello (an etcd
// serving plain HTTP/2 does, attack 31; or reset it, when it closed
// before the hello came), or sent something else.
func notTLS(err error) bool {
	var rh tls.RecordHeaderError
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, syscall.ECONNRESET) || errors.As(err, &rh)
}

// handshake dials addr and completes a TLS handshake with c. A server that
// refuses the client's certificate says so after the handshake under TLS
// 1.3, in an alert the first read gets; a read that times out (the server
// waits for the client to speak first) means it took it.
func handshake(ctx context.Context, addr string, c *tls.Config) error {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	d := tls.Dialer{NetDialer: &net.Dialer{}, Config: c}
	conn, err := d.DialContext(ctx, "tcp", addr)
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		return nil // not reached: no handshake to judge
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, context.DeadlineExceeded) {
		return nil // a server that does not answer (stalled): no handshake to judge
	}
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	_, err = conn.Read(make([]byte, 1))
	if err != nil && strings.Contains(err.Error(), "remote error: tls:") {
		return err
	}
	return nil // data, a timeout, or a close after the handshake: not a TLS matter
}

// WithTLSProblem adds to err, an etcd request's failure, why the TLS
// handshake with etcd fails, if it does (Options.TLSCheck).
func (c *Coordinator) WithTLSProblem(ctx context.Context, err error) error {
	return withTLSProblem(ctx, c.opts.TLSCheck, err)
}

// withTLSProblem is the Membership's WithTLSProblem.
func (m *Membership) withTLSProblem(ctx context.Context, err error) error {
	return withTLSProblem(ctx, m.o.TLSCheck, err)
}

func withTLSProblem(ctx context.Context, check func(context.Context) error, err error) error {
	if check == nil || err == nil {
		return err
	}
	if p := check(context.WithoutCancel(ctx)); p != nil {
		return fmt.Errorf("%w (%v)", err, p)
	}
	return err
}
