package api

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/coord"
)

func (s *Server) routes(mux *http.ServeMux) {
	c := s.o.Control
	mux.HandleFunc("GET /api/v1/jobs", s.read(s.jobsPage))
	mux.HandleFunc("GET /api/v1/jobs/{id}", s.read(func(w http.ResponseWriter, r *http.Request) {
		j, err := c.Job(r.PathValue("id"))
		if err != nil {
			s.writeErr(w, err)
			return
		}
		writeJSON(w, http.StatusOK, j)
	}))
	mux.HandleFunc("POST /api/v1/jobs/{id}/trigger", s.write(func(w http.ResponseWriter, r *http.Request) {
		corr := r.Header.Get("X-Correlation-ID") // checked by s.write
		key, err := idempotencyKey(r)
		if err != nil {
			s.writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		t, err := c.Trigger(r.Context(), r.PathValue("id"), corr, caller(r), key)
		if err != nil {
			s.writeErr(w, err)
			return
		}
		w.Header().Set("X-Correlation-ID", t.CorrelationID)
		replayed(w, t.Replayed)
		writeJSON(w, http.StatusAccepted, t)
	}))
	for verb, paused := range map[string]bool{"pause": true, "resume": false} {
		mux.HandleFunc("POST /api/v1/jobs/{id}/"+verb, s.write(func(w http.ResponseWriter, r *http.Request) {
			key, err := idempotencyKey(r)
			if err != nil {
				s.writeError(w, http.StatusBadRequest, err.Error())
				return
			}
			p, err := c.SetPaused(r.Context(), r.PathValue("id"), paused, caller(r), key)
			if err != nil {
				s.writeErr(w, err)
				return
			}
			replayed(w, p.Replayed)
			code := http.StatusOK
			if p.State == runner.StateUnconfirmed {
				code = http.StatusAccepted
			}
			writeJSON(w, code, p)
		}))
	}
	mux.HandleFunc("GET /api/v1/runs", s.read(s.runsPage))
	mux.HandleFunc("GET /api/v1/cluster", s.read(func(w http.ResponseWriter, r *http.Request) {
		st, err := c.Cluster(r.Context())
		s.cleanCluster(&st)
		if err != nil {
			// etcd cannot be read: 503, with what this replica knows by
			// itself besides the error (runner.ClusterView).
			writeJSON(w, http.StatusServiceUnavailable, st)
			return
		}
		writeJSON(w, http.StatusOK, st)
	}))
}

// cleanCluster sanitizes the texts of a cluster view that may name etcd's
// endpoints and credentials, copying what it shares: the errors, the
// reasons that quote them, and the etcd endpoint itself, which is shown as
// the log shows it ("http://[userinfo]@host:2379": cluster.etcd.endpoints
// may carry a user and password, and this call needs no token by default;
// attack 23, U7).
func (s *Server) cleanCluster(v *runner.ClusterView) {
	v.Error = s.clean(v.Error)
	if v.Etcd != nil {
		e := *v.Etcd
		e.Endpoint, e.Error, e.QuotaError = s.clean(e.Endpoint), s.clean(e.Error), s.clean(e.QuotaError)
		v.Etcd = &e
	}
	if v.JobSetView != nil {
		js := *v.JobSetView
		js.NotLeading = s.clean(js.NotLeading)
		js.Replicas = slices.Clone(js.Replicas)
		for i := range js.Replicas {
			js.Replicas[i].Reason = s.clean(js.Replicas[i].Reason)
		}
		v.JobSetView = &js
	}
}

// read wraps a read-only handler: authenticated only with AuthAll.
func (s *Server) read(h http.HandlerFunc) http.HandlerFunc {
	if !s.o.AuthAll {
		return h
	}
	return func(w http.ResponseWriter, r *http.Request) {
		if s.guard.authorize(w, r) {
			h(w, r)
		}
	}
}

// write wraps a mutating handler: the checks of guard.mutating (origin,
// content type, token, rate limit), a bounded body that, if present, must
// be a JSON object, and an audit line.
func (s *Server) write(h http.HandlerFunc) http.HandlerFunc {
	return s.guard.audit(func(w http.ResponseWriter, r *http.Request) {
		if !s.guard.mutating(w, r) {
			return
		}
		// Every call that changes state logs the caller's correlation ID
		// in its audit line: one the logs would mask is refused here, as a
		// trigger's is, so that the caller finds its request by the ID it
		// sent (attack 25, W11: pause and resume logged "[ipv4]").
		if err := s.validCorrelationID(r.Header.Get("X-Correlation-ID")); err != nil {
			s.writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		canon := []byte("{}") // the body's canonical JSON (sorted keys, no spacing)
		if r.Body != nil && r.Method != http.MethodGet {
			body, err := io.ReadAll(http.MaxBytesReader(w, r.Body, maxBody))
			var tooBig *http.MaxBytesError
			switch {
			case errors.As(err, &tooBig):
				s.writeError(w, http.StatusRequestEntityTooLarge, fmt.Sprintf("request body over %d bytes", maxBody))
				return
			case err != nil:
				s.writeError(w, http.StatusBadRequest, "reading request body: "+err.Error())
				return
			case len(strings.TrimSpace(string(body))) > 0:
				var obj map[string]any
				if err := json.Unmarshal(body, &obj); err != nil || obj == nil {
					why := "null" // what decodes into a nil map
					if err != nil {
						why = err.Error()
					}
					s.writeError(w, http.StatusBadRequest, "request body must be empty or a JSON object: "+why)
					return
				}
				canon, _ = json.Marshal(obj)
			}
		}
		// An idempotency key reused with another body is refused (422);
		// the same object written another way, or no body and {}, is the
		// same body.
		sum := sha256.Sum256(canon)
		r = r.WithContext(runner.WithBodyDigest(r.Context(), hex.EncodeToString(sum[:16])))
		h(w, r)
	})
}

// writeErr maps an error to a status: unknown job 404, a bad listing query
// 400, an idempotency key reused for another request 422, a trigger
// request bound reached 429 (the job's) or 503 (the cluster's), else 503
// (etcd). A 503 says whether the request was stored: a mutating call that
// may have been is answered otherwise (State "unconfirmed"), never with an
// error. A 503 because etcd did not answer says so, since when this replica
// has not heard from etcd, and what to check (etcdNoAnswer).
func (s *Server) writeErr(w http.ResponseWriter, err error) {
	var full *coord.LimitError
	switch {
	case errors.Is(err, runner.ErrUnknownJob):
		s.writeError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, runner.ErrBadQuery):
		s.writeError(w, http.StatusBadRequest, err.Error())
	case errors.Is(err, runner.ErrIdempotencyMismatch):
		s.writeError(w, http.StatusUnprocessableEntity, err.Error())
	case errors.As(err, &full):
		w.Header().Set("Retry-After", strconv.Itoa(retryAfterFull))
		code := http.StatusServiceUnavailable
		if full.PerJob {
			code = http.StatusTooManyRequests
		}
		s.writeError(w, code, err.Error())
	case errors.Is(err, coord.ErrNotStored):
		s.writeError(w, http.StatusServiceUnavailable, err.Error()+"; nothing was stored: repeating the request is safe")
	case etcdNoAnswer(err):
		s.writeNoAnswer(w, err)
	default:
		s.writeError(w, http.StatusServiceUnavailable, err.Error())
	}
}

// etcdContact is what a store that talks to etcd tells of its connection
// (coord.Coordinator).
type etcdContact interface {
	// LastContact is the send time of the newest request etcd answered
	// (zero: none since the start).
	LastContact() time.Time
}

// etcdNoAnswer reports whether err means etcd did not answer in time, or
// could not be reached: a deadline, or the etcd client's Unavailable or
// DeadlineExceeded (no leader, a request timed out, no connection).
func etcdNoAnswer(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var coded interface{ Code() codes.Code } // rpctypes.EtcdError
	if errors.As(err, &coded) {
		return coded.Code() == codes.Unavailable || coded.Code() == codes.DeadlineExceeded
	}
	if st, ok := status.FromError(err); ok {
		return st.Code() == codes.Unavailable || st.Code() == codes.DeadlineExceeded
	}
	return false
}

// writeNoAnswer answers 503 for a request etcd did not answer, in the words
// of pacer status: which replica, since when it has not heard from etcd,
// and what to check. last_contact is that time (RFC 3339), when known.
func (s *Server) writeNoAnswer(w http.ResponseWriter, err error) {
	node, since := "", "etcd's last answer is not known here"
	var contact time.Time
	if c := s.o.Control; c != nil {
		if c.Node != "" {
			node = " " + c.Node
		}
		if ec, ok := c.Store.(etcdContact); ok {
			contact = ec.LastContact()
			since = "not heard from etcd since it started"
			if !contact.IsZero() {
				since = fmt.Sprintf("last heard from etcd at %s, %s ago", contact.UTC().Format(time.RFC3339), roundAgo(time.Since(contact)))
			}
		}
	}
	body := map[string]any{"error": s.clean(fmt.Sprintf("%v; etcd did not answer replica%s in time (%s): "+
		"check that etcd is up and not overloaded, that this replica's cluster.etcd.endpoints are right and reachable from its machine, "+
		"or ask another replica", err, node, since))}
	if !contact.IsZero() {
		body["last_contact"] = contact.UTC()
	}
	writeJSON(w, http.StatusServiceUnavailable, body)
}

// roundAgo rounds a time since an event for a message: tenths of a second
// below 10s, else whole seconds.
func roundAgo(d time.Duration) time.Duration {
	if d < 10*time.Second {
		return d.Round(100 * time.Millisecond)
	}
	return d.Round(time.Second)
}

// retryAfterFull is the Retry-After, in seconds, of an answer that a
// trigger request bound is reached: about the time a leader takes to decide
// what is pending.
const retryAfterFull = 5

// replayed marks an answer given from an earlier request with the same
// Idempotency-Key.
func replayed(w http.ResponseWriter, yes bool) {
	if yes {
		w.Header().Set("Idempotent-Replayed", "true")
	}
}

// maxIdempotencyKey bounds an Idempotency-Key's length.
const maxIdempotencyKey = 255

// idempotencyKey reads the Idempotency-Key header (draft-ietf-httpapi-
// idempotency-key-header): 1 to 255 printable ASCII characters without
// spaces, double quotes or backslashes, bare or between double quotes (which
// are not part of it). A structured-field string may hold spaces and escaped
// quotes; this one may not, so the key reads the same in logs, records and
// the CLI (docs/operations.md says the same). Empty when absent.
func idempotencyKey(r *http.Request) (string, error) {
	vs := r.Header.Values("Idempotency-Key")
	if len(vs) == 0 {
		return "", nil
	}
	if len(vs) > 1 {
		return "", errors.New("Idempotency-Key: sent more than once; send one key")
	}
	k := vs[0]
	if len(k) >= 2 && k[0] == '"' && k[len(k)-1] == '"' {
		k = k[1 : len(k)-1]
	}
	switch {
	case k == "":
		return "", errors.New("Idempotency-Key: empty; send a unique string per request, such as a UUID")
	case len(k) > maxIdempotencyKey:
		return "", fmt.Errorf("Idempotency-Key: %d characters; at most %d", len(k), maxIdempotencyKey)
	}
	for _, c := range k {
		if c <= ' ' || c > '~' || c == '"' || c == '\\' {
			return "", errors.New(`Idempotency-Key: must be printable ASCII without spaces, quotes or backslashes`)
		}
	}
	return k, nil
}

// validCorrelationID checks a caller's X-Correlation-ID (none: the runner
// makes one) with the runner's sanitizer, so that its record, log lines and
// span carry the same ID (observability.CheckCorrelationID).
func (s *Server) validCorrelationID(id string) error {
	if id == "" {
		return nil
	}
	if err := observability.CheckCorrelationID(id, s.o.Sanitizer); err != nil {
		return fmt.Errorf("X-Correlation-ID: %w", err)
	}
	return nil
}

func caller(r *http.Request) string {
	if ua := r.Header.Get("User-Agent"); ua != "" {
		return "api (" + ua + ")"
	}
	return "api"
}
