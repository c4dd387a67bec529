// Package api serves the runner's HTTP endpoints: health, readiness,
// Prometheus metrics, and the JSON API for jobs, runs, plugins and the
// cluster. Every error is a JSON object {"error": "..."} with a fitting
// status. Mutating calls need the bearer token when one is configured.
package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/pacerun/pacer/runner"
)

// Options configure a Server.
type Options struct {
	Listen   string // host:port
	Registry *prometheus.Registry
	// Ready reports whether the runner can do its work (etcd reachable ...).
	Ready func(context.Context) error
	// Plugins lists the plugins and their state, for GET /api/v1/plugins.
	Plugins func() any
	// Control serves the job API; nil leaves it out.
	Control *runner.Control
	// Token, if set, is required as "Authorization: Bearer <token>" on
	// mutating calls, and on every /api/ call when AuthAll is set.
	Token   string
	AuthAll bool
	Logger  *slog.Logger
}

// maxBody bounds request bodies.
const maxBody = 64 << 10

// Server is the runner's HTTP server.
type Server struct {
	o   Options
	srv *http.Server
	ln  net.Listener
}

// New builds the server; Start binds it.
func New(o Options) *Server {
	mux := http.NewServeMux()
	s := &Server{o: o, srv: &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, MaxHeaderBytes: 64 << 10}}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
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
		writeJSON(w, http.StatusOK, map[string]any{"plugins": o.Plugins()})
	}))
	if o.Control != nil {
		s.routes(mux)
	}
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no such endpoint: %s %s", r.Method, r.URL.Path))
	})
	return s
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	if s.o.Ready != nil {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		if err := s.o.Ready(ctx); err != nil {
			writeJSON(w, http.StatusServiceUnavailable, map[string]string{"status": "unready", "error": err.Error()})
			return
		}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
}

// Start binds the listen address and serves in the background.
func (s *Server) Start() error {
	ln, err := net.Listen("tcp", s.o.Listen)
	if err != nil {
		return fmt.Errorf("http: listen on %s: %w (set http.listen)", s.o.Listen, err)
	}
	s.ln = ln
	go func() {
		if err := s.srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			s.o.Logger.Error("http server stopped", "error", err)
		}
	}()
	s.o.Logger.Info("http listening", "addr", ln.Addr().String())
	return nil
}

// Addr is the bound address, after Start.
func (s *Server) Addr() string { return s.ln.Addr().String() }

// Stop shuts the server down gracefully within ctx.
func (s *Server) Stop(ctx context.Context) error { return s.srv.Shutdown(ctx) }

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}

// Handler is the server's HTTP handler, for tests and embedding.
func (s *Server) Handler() http.Handler { return s.srv.Handler }
