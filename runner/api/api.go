// Package api serves the runner's HTTP endpoints: health, readiness,
// Prometheus metrics, and the JSON API for jobs, runs, plugins and the
// cluster. Every error is a JSON object {"error": "..."} with a fitting
// status. Mutating calls need the bearer token when one is configured.
//
// What guards the server (security.go), from the socket inwards: a cap on
// open connections (at the cap, one waiting without a request in progress,
// or else one whose answer is stuck in a write, is closed for the new one,
// else the new one: connlimit.go), optional TLS
// (mutual with a client CA), read, write, idle and header timeouts; an
// answer that leaves its request's body unread goes out at once and closes
// the connection (unreadBodies); then for every request a Host check on a
// loopback listener (DNS rebinding); for calls that change state, in order,
// a cross-origin check, a JSON content type, the token, a rate limit and a
// bounded JSON body, each refusal counted by reason, and one audit line per
// call. A method a known path does not take answers 405 with Allow.
package api

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pacerun/pacer/internal/oneline"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// Options configure a Server.
type Options struct {
	Listen   string // host:port
	Registry *prometheus.Registry
	// Ready reports whether the runner can do its work (etcd reachable ...).
	Ready func(context.Context) error
	// Plugins lists the plugins and their state, for GET /api/v1/plugins.
	Plugins func() any
	// RestartPlugin restarts a plugin's process (clearing its quarantine),
	// for POST /api/v1/plugins/{name}/restart; nil leaves it out. It returns
	// the plugin's status, and an error wrapping pluginhost.ErrPluginNotFound
	// (404), pluginhost.ErrPluginBusy (409) or why the start failed (503).
	RestartPlugin func(ctx context.Context, name string, force bool) (any, error)
	// Control serves the job API; nil leaves it out.
	Control *runner.Control
	// Token, if set, is required as "Authorization: Bearer <token>" on
	// mutating calls, and on every /api/ call when AuthAll is set.
	Token   string
	AuthAll bool
	Logger  *slog.Logger
	// TLS, if set, serves HTTPS (see LoadTLS).
	TLS *tls.Config
	// MaxConnections bounds the connections open at once
	// (DefaultMaxConnections).
	MaxConnections int
	// RatePerSecond and RateBurst bound the mutating calls (a token
	// bucket); RatePerSecond 0 means no limit.
	RatePerSecond float64
	RateBurst     int
	// Rejected, if set, counts refused requests and connections by reason
	// (pacer_http_rejected_total).
	Rejected *prometheus.CounterVec
	// Sanitizer is the runner's: a caller's X-Correlation-ID it would mask
	// is refused. nil: observability.DefaultSanitizer.
	Sanitizer *observability.Sanitizer
	// ProbeListen, if set, also serves /healthz and /readyz (and nothing
	// else) on a listener of their own, plain HTTP, with its own
	// connection limit (ProbeMaxConnections): clients of the API that
	// fill http.max_connections cannot crowd out the kubelet's probes.
	ProbeListen string
}

// ProbeMaxConnections bounds the connections open at once on the probe
// listener: a kubelet opens one per probe, and nothing else should call.
const ProbeMaxConnections = 32

// maxBody bounds request bodies.
const maxBody = 64 << 10

// Server is the runner's HTTP server.
type Server struct {
	o     Options
	srv   *http.Server
	ln    net.Listener
	limit *limitListener // after Start
	guard *guard
	probe *probeServer // nil without Options.ProbeListen
}

// New builds the server; Start binds it.
func New(o Options) *Server {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.MaxConnections <= 0 {
		o.MaxConnections = DefaultMaxConnections
	}
	mux := http.NewServeMux()
	g := newGuard(o)
	s := &Server{o: o, guard: g, srv: newHTTPServer(g.wrap(mux), o.Logger)}
	s.srv.TLSConfig = o.TLS
	mux.HandleFunc("GET /healthz", healthz)
	mux.HandleFunc("GET /readyz", s.readyz)
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Registry, promhttp.HandlerOpts{
		EnableOpenMetrics: true,
		ErrorLog:          slog.NewLogLogger(o.Logger.Handler(), slog.LevelError),
	}))
	mux.HandleFunc("GET /api/v1/plugins", s.read(func(w http.ResponseWriter, _ *http.Request) {
		if o.Plugins == nil {
			writeJSON(w, http.StatusOK, map[string]any{"plugins": []any{}})
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"plugins": s.cleanPlugins(o.Plugins())})
	}))
	if o.RestartPlugin != nil {
		mux.HandleFunc("POST /api/v1/plugins/{name}/restart", s.write(s.restartPlugin))
	}
	if o.Control != nil {
		s.routes(mux)
	}
	mux.HandleFunc("/", methodNotAllowed(mux, s.clean))
	if o.ProbeListen != "" {
		s.probe = newProbeServer(o, s.readyz, g.reject)
	}
	return s
}

// newHTTPServer is an HTTP/1.x server of h with the API's timeouts and
// bounds, whose answers that leave a request's body unread close their
// connection (unreadBodies); the listener it serves is a limitListener.
func newHTTPServer(h http.Handler, log *slog.Logger) *http.Server {
	return &http.Server{
		Handler:     unreadBodies(h),
		ConnContext: withLimitConn, // for unreadBodies
		// HTTP/1.x only, as before (the TLS config offers no "h2"), and
		// now said so: the connection limit reads each connection's state
		// from ConnState, which HTTP/2 connections skip (connlimit.go).
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout:       ReadTimeout,
		WriteTimeout:      WriteTimeout,
		IdleTimeout:       IdleTimeout,
		MaxHeaderBytes:    MaxHeaderBytes,
		ErrorLog:          slog.NewLogLogger(log.Handler(), slog.LevelDebug),
	}
}

func healthz(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.o.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.o.Ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unready", "error": s.clean(err.Error())})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// restartPlugin serves POST /api/v1/plugins/{name}/restart[?force=true].
func (s *Server) restartPlugin(w http.ResponseWriter, r *http.Request) {
	force := false
	if f := r.URL.Query().Get("force"); f != "" {
		var err error
		if force, err = strconv.ParseBool(f); err != nil {
			s.writeError(w, http.StatusBadRequest, fmt.Sprintf("force=%q: want true or false", f))
			return
		}
	}
	st, err := s.o.RestartPlugin(r.Context(), r.PathValue("name"), force)
	st = s.cleanPlugins(st)
	switch {
	case err == nil:
		writeJSON(w, http.StatusOK, map[string]any{"plugin": st})
	case errors.Is(err, pluginhost.ErrPluginNotFound) && st == nil:
		s.writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, pluginhost.ErrPluginBusy):
		writeJSON(w, http.StatusConflict, map[string]any{"error": s.clean(err.Error()), "plugin": st})
	default:
		// A start failure quotes what the plugin wrote to stderr.
		writeJSON(w, http.StatusServiceUnavailable, map[string]any{"error": s.clean(err.Error()), "plugin": st})
	}
}

// clean is msg through the runner's sanitizer: every error text an answer
// carries (a plugin's stderr in a start failure, an etcd endpoint in an
// etcd error) is masked as in the log lines.
func (s *Server) clean(msg string) string { return s.o.Sanitizer.String(msg) }

// cleanLine is text a plugin supplied, as one line: masked, then its
// control characters escaped.
func (s *Server) cleanLine(text string) string { return oneline.Escape(s.clean(text)) }

// cleanPlugins sanitizes the error texts of plugin statuses (the host keeps
// them sanitized already; an Options.Plugins from elsewhere may not), and
// what the plugin says of itself in Describe (its version, its SDK's, its
// tasks' names and descriptions): masked like a log line, each control
// character written as an escape ("\n", "\x1b"), so that no plugin can
// show a secret, forge a row of "pacer plugins" or drive the terminal. The
// params schemas are JSON, which no client prints raw.
func (s *Server) cleanPlugins(v any) any {
	switch t := v.(type) {
	case pluginhost.Status:
		t.Error, t.LastError = s.clean(t.Error), s.clean(t.LastError)
		t.Version, t.SDKVersion = s.cleanLine(t.Version), s.cleanLine(t.SDKVersion)
		if t.Tasks != nil {
			tasks := make([]pluginhost.TaskInfo, len(t.Tasks))
			for i, ti := range t.Tasks {
				ti.Name, ti.Description = s.cleanLine(ti.Name), s.cleanLine(ti.Description)
				tasks[i] = ti
			}
			t.Tasks = tasks
		}
		return t
	case []pluginhost.Status:
		out := make([]pluginhost.Status, len(t))
		for i, st := range t {
			out[i] = s.cleanPlugins(st).(pluginhost.Status)
		}
		return out
	}
	return v
}

// Start binds the listen address and serves in the background. An API
// without a token that anyone can reach is announced with one WARN line.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.o.Listen)
	if err != nil {
		return fmt.Errorf("http: listen on %s: %w (set http.listen)", s.o.Listen, err)
	}
	s.ln = ln
	s.limit = newLimitListener(ln, s.o.MaxConnections, s.guard.reject, s.o.Logger)
	s.srv.ConnState = s.limit.connState
	served := net.Listener(s.limit)
	scheme := "http"
	if s.o.TLS != nil {
		served, scheme = tls.NewListener(served, s.o.TLS), "https"
	}
	go func() {
		if err := s.srv.Serve(served); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.o.Logger.Error("http server stopped", "error", err)
		}
	}()
	addr := ln.Addr().String()
	s.o.Logger.Info("http listening", "addr", addr, "scheme", scheme, "auth", s.authMode(), "max_connections", s.o.MaxConnections)
	if s.probe != nil {
		if err := s.probe.start(); err != nil {
			// The listener too, at once: the server closes it only once
			// its Serve goroutine has begun.
			_ = s.srv.Close()
			_ = ln.Close()
			return err
		}
	}
	mtls := s.o.TLS != nil && s.o.TLS.ClientAuth == tls.RequireAndVerifyClientCert
	switch {
	case s.o.Token != "" || mtls:
	case loopbackAddr(s.o.Listen):
		s.o.Logger.Warn("no API token is set, so any program on this machine can pause, resume and trigger jobs; "+
			"set http.token_env to require one", "addr", addr)
	default:
		s.o.Logger.Warn("no API token is set and other machines can reach the API (http.insecure_no_auth), so anyone who "+
			"can connect can pause, resume and trigger jobs; set http.token_env to require one", "addr", addr)
	}
	return nil
}

// authMode names how callers authenticate, for the start-up log line.
func (s *Server) authMode() string {
	var modes []string
	if s.o.TLS != nil && s.o.TLS.ClientAuth == tls.RequireAndVerifyClientCert {
		modes = append(modes, "client certificate")
	}
	if s.o.Token != "" {
		modes = append(modes, "bearer token")
	}
	if len(modes) == 0 {
		return "none"
	}
	return strings.Join(modes, " and ")
}

// Addr is the bound address, after Start.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Stop shuts the server down gracefully within ctx, and logs how many audit
// lines were left out since the last one, if any.
func (s *Server) Stop(ctx context.Context) error {
	err := s.srv.Shutdown(ctx)
	if s.probe != nil {
		err = errors.Join(err, s.probe.srv.Shutdown(ctx))
	}
	s.guard.close()
	return err
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

// writeError answers with a JSON error, its text through the runner's
// sanitizer: many quote what the caller sent (a limit, a host, a path),
// which may hold a secret (attack 16, G1).
func (s *Server) writeError(w http.ResponseWriter, code int, msg string) {
	writeCleanError(w, code, s.clean(msg))
}

func (g *guard) writeError(w http.ResponseWriter, code int, msg string) {
	writeCleanError(w, code, g.clean(msg))
}

func writeCleanError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// Handler is the server's HTTP handler, for tests and embedding: every
// check but the connection limit and TLS, which belong to the listener.
func (s *Server) Handler() http.Handler { return s.srv.Handler }
