package api

import (
	"container/list"
	"crypto/tls"
	"log/slog"
	"net"
	"net/http"
	"sync"
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
//   - an idle keep-alive connection between requests (http.StateIdle).
//
// Those are closed (pacer_http_rejected_total{reason="connection_evicted"});
// a client whose connections wait closes nothing of a request being served.
// Only when every connection has a request in progress (StateActive or
// hijacked: a handler runs, reads a body, or writes its answer) is the new
// one closed at once, as before (reason "connection_limit").
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

	warnRefused, warnEvicted sync.Once
}

func newLimitListener(ln net.Listener, max int, reject func(string), log *slog.Logger) *limitListener {
	return &limitListener{Listener: ln, max: max, reject: reject, log: log, idle: list.New()}
}

// limitConn is a connection holding one of the listener's slots until it
// is closed or evicted.
type limitConn struct {
	net.Conn
	l *limitListener
	// Guarded by l.mu.
	elem     *list.Element // in l.idle while the connection waits; nil otherwise
	released bool          // the slot is given back (closed or evicted)
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
		default:
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
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	lc, ok := c.(*limitConn)
	if !ok {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if lc.released {
		return
	}
	if lc.elem != nil {
		l.idle.Remove(lc.elem)
		lc.elem = nil
	}
	if st == http.StateNew || st == http.StateIdle {
		lc.elem = l.idle.PushBack(lc)
	}
}
