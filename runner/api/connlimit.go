package api

import (
	"container/list"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// limitListener bounds the connections open at once (http.max_connections).
//
// The limit is taken when a connection is accepted, before its request is
// read, so that slow or idle clients cannot exhaust the server's memory and
// file descriptors. A limit that only refused new connections would let any
// client (no token needed: nothing is authenticated yet) hold every slot
// with idle connections or unfinished request heads, reopened under
// ReadHeaderTimeout, and take /healthz and /readyz down with the API, so the
// kubelet restarts a healthy replica. So at the limit a new connection
// takes the slot of the one that has waited longest without a request in
// progress (least recently active first):
//
//   - a connection not yet past its request head: accepted, in its TLS
//     handshake, or sending its head (http.StateNew; the server reports
//     StateActive only once a whole head is read);
//   - an idle keep-alive connection between requests (http.StateIdle);
//   - a connection whose handler has answered without reading the whole
//     request body (unreadBodies): the server, which reports StateActive
//     until the request is done, drains the rest of the body after the
//     answer, for up to ReadTimeout when the client never sends it.
//
// Those are closed (pacer_http_rejected_total{reason="connection_evicted"});
// a client whose connections wait closes nothing of a request being served.
// When none waits, a connection whose answer has been stuck in a write for
// longer than writeStall (its client takes nothing: one that pipelines
// requests and never reads) counts as waiting too, the longest stuck
// first: without it such clients held every slot as requests in progress
// and new connections, probes included, were refused (attack 15, F4).
// Only when every connection has a request in progress that is not stuck
// so (StateActive or hijacked: a handler runs, reads a body, or writes its
// answer) is the new one closed at once, as before (reason
// "connection_limit").
//
// The states come from http.Server.ConnState, which the server calls for
// HTTP/1.x only: New sets TLSNextProto to an empty map, so no HTTP/2.
type limitListener struct {
	net.Listener
	max    int
	reject func(reason string)
	log    *slog.Logger

	mu   sync.Mutex
	open int        // connections holding a slot
	idle *list.List // of *limitConn without a request in progress, least recently active first
	all  map[*limitConn]struct{}

	warnRefused, warnEvicted sync.Once
}

func newLimitListener(ln net.Listener, max int, reject func(string), log *slog.Logger) *limitListener {
	return &limitListener{Listener: ln, max: max, reject: reject, log: log, idle: list.New(), all: map[*limitConn]struct{}{}}
}

// limitConn is a connection holding one of the listener's slots until it
// is closed or evicted.
type limitConn struct {
	net.Conn
	l *limitListener
	// Guarded by l.mu.
	elem     *list.Element // in l.idle while the connection waits; nil otherwise
	released bool          // the slot is given back (closed or evicted)

	writing atomic.Int64 // when the write in progress began (UnixNano), 0 when none
}

// writeStall is how long a connection's write may be stuck before the
// limit may close the connection for a new one, as if it waited.
var writeStall = time.Second

func (c *limitConn) Write(p []byte) (int, error) {
	c.writing.Store(time.Now().UnixNano())
	defer c.writing.Store(0)
	return c.Conn.Write(p)
}

// stuck returns, with l.mu held, the connection whose write has been stuck
// longest, past writeStall, or nil.
func (l *limitListener) stuck() *limitConn {
	var victim *limitConn
	oldest := time.Now().Add(-writeStall).UnixNano()
	for c := range l.all {
		if since := c.writing.Load(); since != 0 && since < oldest {
			victim, oldest = c, since
		}
	}
	return victim
}

func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		lc := &limitConn{Conn: c, l: l}
		l.mu.Lock()
		var victim *limitConn
		switch {
		case l.open < l.max:
			l.open++
		case l.idle.Len() > 0:
			// The victim's slot passes to the new connection: open stays.
			victim = l.idle.Remove(l.idle.Front()).(*limitConn)
			victim.elem, victim.released = nil, true
			delete(l.all, victim)
		default:
			if victim = l.stuck(); victim != nil {
				victim.released = true
				delete(l.all, victim)
				break
			}
			l.mu.Unlock()
			// Counted before the close, so whoever sees the connection
			// closed also sees it counted.
			l.reject(RejectConnectionCap)
			_ = c.Close()
			l.warnRefused.Do(func() {
				l.log.Warn("http: connection limit reached; refusing connections until some close (http.max_connections; counted in pacer_http_rejected_total)",
					"max_connections", l.max)
			})
			continue
		}
		lc.elem = l.idle.PushBack(lc) // accepted: no request yet
		l.all[lc] = struct{}{}
		l.mu.Unlock()
		if victim != nil {
			l.reject(RejectConnectionEvicted)
			_ = victim.Conn.Close() // the server's read fails and it lets go of the connection
			l.warnEvicted.Do(func() {
				l.log.Warn("http: connection limit reached; closing the connection idle longest for each new one (http.max_connections; counted in pacer_http_rejected_total)",
					"max_connections", l.max)
			})
		}
		return lc, nil
	}
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	l := c.l
	l.mu.Lock()
	if !c.released {
		c.released = true
		l.open--
		delete(l.all, c)
		if c.elem != nil {
			l.idle.Remove(c.elem)
			c.elem = nil
		}
	}
	l.mu.Unlock()
	return err
}

// connState is the server's http.Server.ConnState: it moves a connection
// to the back of the idle list when it starts waiting (New, Idle) and takes
// it off while a request is in progress (Active, Hijacked).
func (l *limitListener) connState(c net.Conn, st http.ConnState) {
	if lc := asLimitConn(c); lc != nil {
		lc.setWaiting(st == http.StateNew || st == http.StateIdle)
	}
}

// setWaiting moves c to the back of the idle list (it waits: the next to
// be closed for a new connection after those waiting longer) or takes it
// off (a request is in progress).
func (c *limitConn) setWaiting(waiting bool) {
	l := c.l
	l.mu.Lock()
	defer l.mu.Unlock()
	if c.released {
		return
	}
	if c.elem != nil {
		l.idle.Remove(c.elem)
		c.elem = nil
	}
	if waiting {
		c.elem = l.idle.PushBack(c)
	}
}

// asLimitConn is the *limitConn under a connection the server got from the
// listener (a *tls.Conn over HTTPS), or nil.
func asLimitConn(c net.Conn) *limitConn {
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, _ := c.(*limitConn)
	return lc
}

// limitConnKey is the request context key of the request's *limitConn.
type limitConnKey struct{}

// withLimitConn is the server's http.Server.ConnContext: it puts the
// connection's *limitConn into its requests' contexts, for unreadBodies.
func withLimitConn(ctx context.Context, c net.Conn) context.Context {
	if lc := asLimitConn(c); lc != nil {
		return context.WithValue(ctx, limitConnKey{}, lc)
	}
	return ctx
}

// unreadBodies answers a request whose handler leaves part of its body
// unread (a refusal before the body is read: 401, 403, 405, 415, 429; a
// body over the limit) without waiting for that body, and lets the limit
// close its connection to make room while the server drains the rest.
//
// Without it, net/http reads up to 256 KiB of unread body before it writes
// the answer's header (to keep the connection), and after the handler
// returns it reads on until the body ends (finishRequest), the connection
// StateActive all along: a client that sent a whole head with
// Content-Length 100000 and two bytes of body, no token needed, got its
// answer and gave back its slot only after ReadTimeout (15 s), and a few
// such connections held every slot of http.max_connections, probes' new
// connections refused.
//
// So, for a request with a body (ContentLength not 0; -1 is chunked):
//   - the first write of the answer (WriteHeader, Write, Flush) while the
//     body is not read to its end sets "Connection: close", which skips
//     the read before the header: the answer goes out at once, and the
//     connection is closed after it rather than kept for another request;
//   - when the handler returns with the body not read to its end, the
//     answer is flushed and the connection counts as waiting for the limit
//     (limitConn.setWaiting), like an idle one: the server's drain goes on,
//     and ends when the client sends the rest, at ReadTimeout, or when the
//     limit closes the connection for a new one.
//
// Requests without a body and requests whose handler reads the body to its
// end (the API's JSON bodies) are served as before, keep-alive included.
// A handler that is reading a body still has a request in progress: a
// client that sends its body slowly to a handler that reads it keeps its
// slot until ReadTimeout.
//
// The flush before setWaiting puts the header and the body written so far
// on the wire before the connection can be closed; the answer's last chunk
// (it is chunked, its length unknown at the flush) follows when the handler
// returns, so a connection closed for a new one in between loses only that.
func unreadBodies(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength == 0 {
			h.ServeHTTP(w, r)
			return
		}
		body := &eofBody{ReadCloser: r.Body}
		cw := &closeWriter{ResponseWriter: w, body: body}
		// A copy: the server looks at its own request's Body (100
		// Continue, the read before the header) and must see its own.
		r2 := r.WithContext(r.Context())
		r2.Body = body
		h.ServeHTTP(cw, r2)
		if body.eof.Load() {
			return
		}
		if err := cw.FlushError(); err != nil {
			return // hijacked, or the client is gone: the server ends the connection
		}
		if lc, ok := r.Context().Value(limitConnKey{}).(*limitConn); ok {
			lc.setWaiting(true)
		}
	})
}

// eofBody is a request body that notes when it has been read to its end.
type eofBody struct {
	io.ReadCloser
	eof atomic.Bool
}

func (b *eofBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if errors.Is(err, io.EOF) {
		b.eof.Store(true)
	}
	return n, err
}

// closeWriter sets "Connection: close" on an answer written while its
// request's body is not read to its end (unreadBodies).
type closeWriter struct {
	http.ResponseWriter
	body    *eofBody
	started bool // the header is written
}

// start runs before the header is written.
func (w *closeWriter) start() {
	if w.started {
		return
	}
	w.started = true
	if !w.body.eof.Load() {
		w.Header().Set("Connection", "close")
	}
}

func (w *closeWriter) WriteHeader(code int) {
	// An informational header (103 Early Hints) is not the answer's.
	if code >= 200 || code == http.StatusSwitchingProtocols {
		w.start()
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *closeWriter) Write(b []byte) (int, error) {
	w.start()
	return w.ResponseWriter.Write(b)
}

// FlushError is what http.ResponseController.Flush calls.
func (w *closeWriter) FlushError() error {
	w.start()
	return http.NewResponseController(w.ResponseWriter).Flush()
}

// Flush is http.Flusher's.
func (w *closeWriter) Flush() { _ = w.FlushError() }

// Unwrap gives http.ResponseController the server's writer, for what
// closeWriter does not implement itself (deadlines, hijacking).
func (w *closeWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Interface guards.
var (
	_ http.Flusher                    = (*closeWriter)(nil)
	_ interface{ FlushError() error } = (*closeWriter)(nil)
)
