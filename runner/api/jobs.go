package api

import (
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"unicode"

	"github.com/pacerun/pacer/runner"
)

func (s *Server) routes(mux *http.ServeMux) {
	c := s.o.Control
	mux.HandleFunc("GET /api/v1/jobs", s.read(func(w http.ResponseWriter, _ *http.Request) {
		writeJSON(w, http.StatusOK, map[string]any{"jobs": c.Jobs()})
	}))
	mux.HandleFunc("GET /api/v1/jobs/{id}", s.read(func(w http.ResponseWriter, r *http.Request) {
		j, err := c.Job(r.PathValue("id"))
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, j)
	}))
	mux.HandleFunc("POST /api/v1/jobs/{id}/trigger", s.write(func(w http.ResponseWriter, r *http.Request) {
		corr := r.Header.Get("X-Correlation-ID")
		if err := validCorrelationID(corr); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		t, err := c.Trigger(r.Context(), r.PathValue("id"), corr, caller(r))
		if err != nil {
			writeErr(w, err)
			return
		}
		w.Header().Set("X-Correlation-ID", t.CorrelationID)
		writeJSON(w, http.StatusAccepted, t)
	}))
	for verb, paused := range map[string]bool{"pause": true, "resume": false} {
		mux.HandleFunc("POST /api/v1/jobs/{id}/"+verb, s.write(func(w http.ResponseWriter, r *http.Request) {
			id := r.PathValue("id")
			if err := c.SetPaused(r.Context(), id, paused, caller(r)); err != nil {
				writeErr(w, err)
				return
			}
			writeJSON(w, http.StatusOK, map[string]any{"job": id, "paused": paused})
		}))
	}
	mux.HandleFunc("GET /api/v1/runs", s.read(func(w http.ResponseWriter, r *http.Request) {
		job := r.URL.Query().Get("job")
		if job == "" {
			writeError(w, http.StatusBadRequest, "query parameter job is required: /api/v1/runs?job=ID")
			return
		}
		limit := 20
		if l := r.URL.Query().Get("limit"); l != "" {
			n, err := strconv.Atoi(l)
			if err != nil || n < 1 || n > 1000 {
				writeError(w, http.StatusBadRequest, fmt.Sprintf("limit %q: want a number from 1 to 1000", l))
				return
			}
			limit = n
		}
		runs, err := c.Runs(r.Context(), job, limit)
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"job": job, "runs": runs})
	}))
	mux.HandleFunc("GET /api/v1/cluster", s.read(func(w http.ResponseWriter, r *http.Request) {
		st, err := c.Cluster(r.Context())
		if err != nil {
			writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, st)
	}))
}

// read wraps a read-only handler: authenticated only with AuthAll.
func (s *Server) read(h http.HandlerFunc) http.HandlerFunc {
	if !s.o.AuthAll {
		return h
	}
	return s.write(h)
}

// write wraps a mutating handler: bearer token (when configured) and a
// bounded body that, if present, must be a JSON object.
func (s *Server) write(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if s.o.Token != "" {
			got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
			if !ok || subtle.ConstantTimeCompare([]byte(got), []byte(s.o.Token)) != 1 {
				w.Header().Set("WWW-Authenticate", `Bearer realm="pacer"`)
				writeError(w, http.StatusUnauthorized, "missing or wrong bearer token: send Authorization: Bearer <token> (the runner reads it from http.token_env)")
				return
			}
		}
		if r.Body != nil && r.Method != http.MethodGet {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
			var tooBig *http.MaxBytesError
			switch {
			case errors.As(err, &tooBig):
				writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", maxBody))
				return
			case err != nil:
				writeError(w, http.StatusBadRequest, "reading request body: "+err.Error())
				return
			case len(strings.TrimSpace(string(body))) > 0:
				var obj map[string]any
				if err := json.Unmarshal(body, &obj); err != nil {
					writeError(w, http.StatusBadRequest, "request body must be empty or a JSON object: "+err.Error())
					return
				}
			}
		}
		h(w, r)
	}
}

// writeErr maps an error to a status: unknown job 404, else 503 (etcd).
func writeErr(w http.ResponseWriter, err error) {
	if errors.Is(err, runner.ErrUnknownJob) {
		writeError(w, http.StatusNotFound, err.Error())
		return
	}
	writeError(w, http.StatusServiceUnavailable, err.Error())
}

func validCorrelationID(id string) error {
	if len(id) > 128 {
		return fmt.Errorf("X-Correlation-ID is %d characters; at most 128", len(id))
	}
	for _, r := range id {
		if !unicode.IsPrint(r) || unicode.IsSpace(r) {
			return errors.New("X-Correlation-ID must be printable, without spaces")
		}
	}
	return nil
}

func caller(r *http.Request) string {
	if ua := r.Header.Get("User-Agent"); ua != "" {
		return "api (" + ua + ")"
	}
	return "api"
}
