package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"math"
	"mime"
	"net"
	"net/http"
	"net/url"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/pacerun/pacer/internal/regfile"
)

// How the server bounds what one client can hold. A client that sends its
// headers and never its body is cut off after ReadTimeout (its connection
// closed sooner to make room at MaxConnections once its handler has
// answered without reading the body: unreadBodies); one that sends
// nothing after ReadHeaderTimeout; an idle keep-alive connection after
// IdleTimeout; a client that does not read its answer after WriteTimeout.
const (
	ReadHeaderTimeout = 5 * time.Second
	ReadTimeout       = 15 * time.Second
	WriteTimeout      = 30 * time.Second
	IdleTimeout       = 30 * time.Second
	MaxHeaderBytes    = 64 << 10

	// DefaultMaxConnections bounds the connections open at once when
	// Options.MaxConnections is 0.
	DefaultMaxConnections = 256
)

// Reasons a request or connection is refused: the values of
// pacer_http_rejected_total's reason label.
const (
	RejectUnauthorized  = "unauthorized"     // missing or wrong bearer token (401)
	RejectCrossOrigin   = "cross_origin"     // a browser request from another origin (403)
	RejectHost          = "host"             // a loopback API asked for by another host name: DNS rebinding (403)
	RejectContentType   = "content_type"     // a mutating call without a JSON content type (415)
	RejectRateLimited   = "rate_limited"     // over the mutating-call rate limit (429)
	RejectConnectionCap = "connection_limit" // over MaxConnections, none idle: closed at once
	// RejectConnectionEvicted counts the connections waiting without a
	// request in progress closed at MaxConnections to make room for a new
	// one (connlimit.go).
	RejectConnectionEvicted = "connection_evicted"
)

// RejectReasons are every value of pacer_http_rejected_total's reason label.
var RejectReasons = []string{RejectUnauthorized, RejectCrossOrigin, RejectHost, RejectContentType, RejectRateLimited, RejectConnectionCap, RejectConnectionEvicted}

// guard holds the server's request checks.
type guard struct {
	tokenSum [sha256.Size]byte // SHA-256 of the token; compared in constant time
	hasToken bool
	loopback bool // the listen address is loopback: Host must name this machine
	cop      *http.CrossOriginProtection
	limiter  *rate.Limiter // nil: no limit
	reject   func(reason string)
	log      *slog.Logger
	clean    func(string) string // the runner's sanitizer

	auditRefused *rate.Limiter // audit lines of refused calls
	suppressed   atomic.Int64  // refused calls not logged since the last line
	flushAfter   time.Duration // how soon a count of left-out lines is logged on its own
	flushMu      sync.Mutex
	flush        *time.Timer // pending flushSuppressed, or nil
}

// suppressedFlush is how soon after an audit line is left out a line says
// how many were, when no other audit line has said it by then.
const suppressedFlush = time.Second

func newGuard(o Options) *guard {
	g := &guard{
		hasToken: o.Token != "",
		tokenSum: sha256.Sum256([]byte(o.Token)),
		loopback: loopbackAddr(o.Listen),
		cop:      http.NewCrossOriginProtection(),
		log:      o.Logger,
		reject:   func(string) {},
		clean:    o.Sanitizer.String,

		auditRefused: rate.NewLimiter(10, 50),
		flushAfter:   suppressedFlush,
	}
	if o.RatePerSecond > 0 {
		g.limiter = rate.NewLimiter(rate.Limit(o.RatePerSecond), max(o.RateBurst, 1))
	}
	if o.Rejected != nil {
		for _, r := range RejectReasons {
			o.Rejected.WithLabelValues(r)
		}
		g.reject = func(reason string) { o.Rejected.WithLabelValues(reason).Inc() }
	}
	return g
}

// loopbackAddr reports whether a listen address is loopback only.
func loopbackAddr(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// wrap applies the checks every request gets: on a loopback listener the
// Host header must name this machine (a web page whose name an attacker
// points at 127.0.0.1, "DNS rebinding", would otherwise reach the API as
// same-origin), and answers are not to be sniffed or cached. The check
// comes before routing; a refused call that would have changed state (a
// POST route of mux) is audited like the other refusals.
func (g *guard) wrap(mux *http.ServeMux) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Content-Type-Options", "nosniff")
		w.Header().Set("Cache-Control", "no-store")
		if g.loopback && !localHost(r.Host) {
			g.reject(RejectHost)
			g.writeError(w, http.StatusForbidden, fmt.Sprintf("host %q refused: this API listens on loopback and answers only to localhost or a loopback address", r.Host))
			if _, pattern := mux.Handler(r); strings.HasPrefix(pattern, http.MethodPost+" ") {
				g.auditLine(r, http.StatusForbidden, pathValue(pattern, r, "id"), r.Header.Get("X-Correlation-ID"))
			}
			return
		}
		// url.Values drops a pair it cannot decode ("cursor=%%%"), which
		// would answer page one or the default limit as if asked for it.
		if _, err := url.ParseQuery(r.URL.RawQuery); err != nil {
			g.writeError(w, http.StatusBadRequest, fmt.Sprintf("malformed query string: %v", err))
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// pathValue returns the value of the wildcard {name} of pattern (a route
// that matched r) in r's path, as ServeMux would set it, before routing.
func pathValue(pattern string, r *http.Request, name string) string {
	_, pp, _ := strings.Cut(pattern, " ")
	ps, rs := strings.Split(pp, "/"), strings.Split(r.URL.EscapedPath(), "/")
	for i, seg := range ps {
		if seg == "{"+name+"}" && i < len(rs) {
			if v, err := url.PathUnescape(rs[i]); err == nil {
				return v
			}
		}
	}
	return ""
}

// localHost reports whether a Host header names this machine: localhost or
// a loopback address, with any port.
func localHost(host string) bool {
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// bearer reports whether r carries a bearer token, and whether it is the
// right one. The scheme is matched ignoring case (RFC 9110 section 11.1);
// tokens are compared as SHA-256 digests in constant time, so neither their
// content nor their length leaks through timing.
func (g *guard) bearer(r *http.Request) (presented, ok bool) {
	scheme, tok, found := strings.Cut(strings.TrimSpace(r.Header.Get("Authorization")), " ")
	if !found || !strings.EqualFold(scheme, "Bearer") {
		return false, false
	}
	tok = strings.TrimLeft(tok, " ")
	if tok == "" {
		return false, false
	}
	sum := sha256.Sum256([]byte(tok))
	return true, g.hasToken && subtle.ConstantTimeCompare(sum[:], g.tokenSum[:]) == 1
}

// UnauthorizedMessage is the error of a 401. It says what to send and where
// the runner reads the token in plain words: no "key: value" or "Bearer X"
// shapes, which the sanitizer the CLI and logs pass every error through
// would mask as credentials and leave unreadable.
const UnauthorizedMessage = `missing or wrong bearer token; send the header "Authorization" with the value "Bearer", a space and the token (the runner reads the token from the environment variable that http.token_env names)`

// authorize answers 401 unless the request carries the token (when one is
// configured).
func (g *guard) authorize(w http.ResponseWriter, r *http.Request) bool {
	if !g.hasToken {
		return true
	}
	if _, ok := g.bearer(r); ok {
		return true
	}
	g.reject(RejectUnauthorized)
	w.Header().Set("WWW-Authenticate", `Bearer realm="pacer"`)
	g.writeError(w, http.StatusUnauthorized, UnauthorizedMessage)
	return false
}

// mutating runs the checks of a call that changes state, in this order:
// cross-origin (403), JSON content type (415), token (401), rate limit
// (429). A browser can send a cross-site form or a text/plain POST without
// asking first; it cannot send application/json to another origin without
// a CORS preflight, which this server never grants.
func (g *guard) mutating(w http.ResponseWriter, r *http.Request) bool {
	if err := g.cop.Check(r); err != nil {
		g.reject(RejectCrossOrigin)
		g.writeError(w, http.StatusForbidden, "cross-origin request refused: a page of another site cannot call this API ("+err.Error()+")")
		return false
	}
	if mt, _, err := mime.ParseMediaType(r.Header.Get("Content-Type")); err != nil || mt != "application/json" {
		g.reject(RejectContentType)
		g.writeError(w, http.StatusUnsupportedMediaType,
			"mutating calls need Content-Type: application/json (the body may be empty or a JSON object)")
		return false
	}
	if !g.authorize(w, r) {
		return false
	}
	if g.limiter != nil {
		res := g.limiter.Reserve()
		if d := res.Delay(); d > 0 {
			res.Cancel()
			g.reject(RejectRateLimited)
			secs := int(math.Ceil(d.Seconds()))
			w.Header().Set("Retry-After", strconv.Itoa(max(secs, 1)))
			g.writeError(w, http.StatusTooManyRequests, fmt.Sprintf(
				"too many trigger, pause and resume calls (limit %g/s, burst %d, http.rate_limit): retry after %ds",
				float64(g.limiter.Limit()), g.limiter.Burst(), max(secs, 1)))
			return false
		}
	}
	return true
}

// statusWriter remembers the status a handler answered with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// audit logs one INFO line per call that changes state, refused ones
// included (see auditLine).
func (g *guard) audit(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		sw := &statusWriter{ResponseWriter: w}
		h(sw, r)
		corr := sw.Header().Get("X-Correlation-ID")
		if corr == "" {
			corr = r.Header.Get("X-Correlation-ID")
		}
		g.auditLine(r, sw.status, r.PathValue("id"), corr)
	}
}

// auditLine logs the audit line of a call that changes state: the action
// and job, the answer's status, the caller's correlation ID (the one a
// trigger answers with), where the call came from and whether it carried a
// token (and, with mutual TLS, the subject of the client's certificate).
// Lines of refused calls (401, 403, 415: the checks before the rate limit)
// are themselves limited, so that a flood of them cannot flood the log:
// past 10/s (bursts of 50) they are left out and counted, and the count
// (suppressed) goes on the next audit line of any kind, or, if none comes
// within flushAfter (1 s), on a line of its own. Caller-supplied fields are
// masked, then cut to 128 bytes (cut first, a token or an address cut in
// two would no longer be recognised: attack 14, K14).
func (g *guard) auditLine(r *http.Request, status int, job, corr string) {
	if refused := status == http.StatusUnauthorized || status == http.StatusForbidden ||
		status == http.StatusUnsupportedMediaType; refused && !g.auditRefused.Allow() {
		g.suppress()
		return
	}
	attrs := make([]any, 0, 18)
	if n := g.suppressed.Swap(0); n > 0 {
		attrs = append(attrs, "suppressed", n)
	}
	presented, _ := g.bearer(r)
	action := r.URL.Path[strings.LastIndexByte(r.URL.Path, '/')+1:]
	field := func(s string) string { return cut(g.clean(s)) }
	attrs = append(attrs, "action", field(action), "job", field(job), "status", status,
		"correlation_id", field(corr), "remote_addr", r.RemoteAddr, "token_presented", presented,
		"user_agent", field(r.UserAgent()))
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		// Verified by the handshake (mutual TLS): who the caller is.
		attrs = append(attrs, "client_cert", field(r.TLS.PeerCertificates[0].Subject.String()))
	}
	g.log.Info("api audit", attrs...)
}

// suppress counts an audit line left out, and makes sure the count is
// logged within flushAfter.
func (g *guard) suppress() {
	g.suppressed.Add(1)
	g.flushMu.Lock()
	defer g.flushMu.Unlock()
	if g.flush == nil {
		g.flush = time.AfterFunc(g.flushAfter, g.flushSuppressed)
	}
}

// flushSuppressed logs how many audit lines were left out since the last
// audit line, if any were: one "api audit" line with suppressed alone.
func (g *guard) flushSuppressed() {
	g.flushMu.Lock()
	g.flush = nil
	g.flushMu.Unlock()
	if n := g.suppressed.Swap(0); n > 0 {
		g.log.Info("api audit", "suppressed", n)
	}
}

// close logs a pending count of left-out audit lines at once (the server
// is stopping).
func (g *guard) close() {
	g.flushMu.Lock()
	t := g.flush
	g.flush = nil
	g.flushMu.Unlock()
	if t != nil {
		t.Stop()
	}
	if n := g.suppressed.Swap(0); n > 0 {
		g.log.Info("api audit", "suppressed", n)
	}
}

// cut bounds a caller-supplied string for a log line.
func cut(s string) string {
	const limit = 128
	if len(s) <= limit {
		return s
	}
	return strings.ToValidUTF8(s[:limit], "") + "…"
}

// methodNotAllowed answers a request that matched no route: 405 with Allow
// when the path exists under other methods, else 404.
func methodNotAllowed(mux *http.ServeMux, clean func(string) string) http.HandlerFunc {
	methods := []string{http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete}
	return func(w http.ResponseWriter, r *http.Request) {
		var allow []string
		for _, m := range methods {
			probe := r.Clone(r.Context())
			probe.Method = m
			if _, pattern := mux.Handler(probe); pattern != "" && pattern != "/" {
				allow = append(allow, m)
			}
		}
		if len(allow) > 0 {
			w.Header().Set("Allow", strings.Join(allow, ", "))
			writeCleanError(w, http.StatusMethodNotAllowed, clean(fmt.Sprintf("method %s not allowed on %s (allowed: %s)", r.Method, r.URL.Path, strings.Join(allow, ", "))))
			return
		}
		writeCleanError(w, http.StatusNotFound, clean(fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path)))
	}
}

// LoadTLS builds the server's TLS settings from PEM files: the certificate
// and key (read again whenever the certificate file changes, so a renewed
// certificate needs no restart) and, if clientCAFile is set, the CAs that
// must have signed every client's certificate (mutual TLS: a client without
// one cannot connect, to any endpoint).
func LoadTLS(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	kp := &keyPair{cert: certFile, key: keyFile}
	if _, err := kp.get(nil); err != nil {
		return nil, err
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, GetCertificate: kp.get}
	if clientCAFile != "" {
		pem, err := regfile.Read(clientCAFile, regfile.MaxPEMBytes)
		if err != nil {
			return nil, fmt.Errorf("http.tls.client_ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("http.tls.client_ca_file: %s holds no PEM certificate", clientCAFile)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// keyPair serves a certificate, loading it again when its file changes.
type keyPair struct {
	cert, key string
	mu        sync.Mutex
	mod       time.Time
	loaded    *tls.Certificate
}

func (k *keyPair) get(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	st, err := os.Stat(k.cert)
	if err != nil {
		if k.loaded != nil {
			return k.loaded, nil // keep serving the last good one
		}
		return nil, fmt.Errorf("http.tls.cert_file: %w", err)
	}
	if k.loaded != nil && st.ModTime().Equal(k.mod) {
		return k.loaded, nil
	}
	c, err := regfile.KeyPair(k.cert, k.key)
	if err != nil {
		if k.loaded != nil {
			return k.loaded, nil
		}
		return nil, fmt.Errorf("http.tls: load %s and %s: %w", k.cert, k.key, err)
	}
	k.loaded, k.mod = &c, st.ModTime()
	return k.loaded, nil
}
