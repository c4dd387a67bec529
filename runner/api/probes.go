package api

import (
	"errors"
	"fmt"
	"net"
	"net/http"
)

// probeServer serves /healthz and /readyz on a listener of their own
// (http.probe_listen). On the API's listener a probe's new connection
// waits for a slot of http.max_connections like any other, and a client
// that opens connections faster than the probe sends its request head can
// have it closed to make room; here only probes call. It is plain HTTP and
// serves nothing but the two probes (no job data, nothing that changes
// state), so it needs neither the token nor TLS: bind it where only the
// kubelet reaches it.
type probeServer struct {
	o      Options
	srv    *http.Server
	ln     net.Listener
	reject func(reason string) // the API's: one pacer_http_rejected_total
}

func newProbeServer(o Options, readyz http.HandlerFunc, reject func(string)) *probeServer {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", readyz)
	mux.HandleFunc("/", methodNotAllowed(mux, o.Sanitizer.String))
	return &probeServer{o: o, reject: reject, srv: newHTTPServer(mux, o.Logger)}
}

func (p *probeServer) start() error {
	ln, err := net.Listen("tcp", p.o.ProbeListen)
	if err != nil {
		return fmt.Errorf("http: listen on %s for the probes: %w (set http.probe_listen)", p.o.ProbeListen, err)
	}
	p.ln = ln
	limit := newLimitListener(ln, ProbeMaxConnections, p.reject, p.o.Logger)
	p.srv.ConnState = limit.connState
	go func() {
		if err := p.srv.Serve(limit); err != nil && !errors.Is(err, http.ErrServerClosed) {
			p.o.Logger.Error("probe server stopped", "error", err)
		}
	}()
	p.o.Logger.Info("probes listening", "addr", ln.Addr().String(), "scheme", "http", "max_connections", ProbeMaxConnections)
	return nil
}

// ProbeAddr is the probe listener's bound address, after Start ("" without
// one).
func (s *Server) ProbeAddr() string {
	if s.probe == nil || s.probe.ln == nil {
		return ""
	}
	return s.probe.ln.Addr().String()
}
