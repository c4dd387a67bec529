package coord

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
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
		p := tlsProblem(ctx, cfg.Endpoints, cfg.TLS)
		if ctx.Err() != nil { // cut short: it says nothing of the handshake
			return nil
		}
		last, at = p, time.Now()
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
	var named tlsProblemError
	if check == nil || err == nil || errors.As(err, &named) {
		return err
	}
	if p := check(context.WithoutCancel(ctx)); p != nil {
		return fmt.Errorf("%w (%w)", err, tlsProblemError{p})
	}
	return err
}

// tlsProblemError is a TLS check's finding added to an error, which is
// then not added again on its way up.
type tlsProblemError struct{ error }

// tlsProbe runs the TLS check (Options.TLSCheck) beside a loop that must
// never wait for it: the fence's, whose keepalives the etcd client reports
// only as timed out when etcd starts refusing the replica's handshake
// mid-run (its CA changed). Before, the keepalive WARN lines, the
// self-fencing ERROR and the first no-session line named no cause for
// seconds (attack 31, M4). What a check finds is logged once, as it is
// found, and named on the lines that follow (problem).
type tlsProbe struct {
	ctx     context.Context // the session's: a check under way ends with it
	check   func(context.Context) error
	log     *slog.Logger
	running atomic.Bool
	found   atomic.Pointer[error]
	wg      sync.WaitGroup
}

func newTLSProbe(ctx context.Context, check func(context.Context) error, log *slog.Logger) *tlsProbe {
	return &tlsProbe{ctx: ctx, check: check, log: log}
}

// start begins a check unless one is under way (or there is nothing to
// check: no TLS).
func (p *tlsProbe) start() {
	if p.check == nil || !p.running.CompareAndSwap(false, true) {
		return
	}
	p.wg.Go(func() {
		defer p.running.Store(false)
		err := p.check(p.ctx)
		if p.ctx.Err() != nil {
			return
		}
		old := p.found.Swap(&err)
		if err != nil && (old == nil || *old == nil || (*old).Error() != err.Error()) {
			p.log.Warn("etcd refuses this replica's TLS handshake; its lease cannot be kept alive", "error", err)
		}
	})
}

// problem is what the last check found: nil for none, or none yet.
func (p *tlsProbe) problem() error {
	if e := p.found.Load(); e != nil {
		return *e
	}
	return nil
}

// attr is problem as a log attribute, or an empty one (which slog leaves out).
func (p *tlsProbe) attr() slog.Attr {
	if err := p.problem(); err != nil {
		return slog.Any("tls_problem", err)
	}
	return slog.Attr{}
}

// wait waits for a check under way; the session's end cuts it short.
func (p *tlsProbe) wait() { p.wg.Wait() }
