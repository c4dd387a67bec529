package main

import (
	"bytes"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

// slowRestart answers a plugin restart after d (or when the client has
// gone), as a runner does whose plugin takes d to stop.
func slowRestart(d time.Duration) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost || r.URL.Path != "/api/v1/plugins/slow/restart" || r.URL.Query().Get("force") != "true" {
			http.Error(w, `{"error":"unexpected request"}`, http.StatusBadRequest)
			return
		}
		// Read whole, so that the server hears the client go away.
		if _, err := io.Copy(io.Discard, r.Body); err != nil {
			return
		}
		select {
		case <-time.After(d):
		case <-r.Context().Done():
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"plugin":{"name":"slow","state":"up","pid":42,"version":"1.0","restarts":1}}`))
	})
}

// S6: `pacer plugins restart NAME --force` of a plugin that took 10 s to
// stop gave up after 10 s, its wait for every call ("cannot reach the
// runner ... is it running?"), though the restart went through (the
// runner answered 200 after 10.4 s): the runner gives a stopping plugin
// up to 10 s before SIGKILL. The restart now waits as long as the runner
// may take to answer.
func TestPluginRestartOutwaitsTheRunnersStopGrace(t *testing.T) {
	t.Parallel()
	if restartTimeout <= 10*time.Second+5*time.Second {
		t.Errorf("restartTimeout %s: want well over the runner's 10 s kill grace", restartTimeout)
	}
	srv := httptest.NewServer(slowRestart(10*time.Second + 500*time.Millisecond))
	defer srv.Close()
	var stdout, stderr bytes.Buffer
	err := pluginsRestartCmd([]string{"slow", "--force", "--addr", srv.URL}, &stdout, &stderr)
	if err != nil {
		t.Fatalf("restart: %v\n%s", err, stderr.String())
	}
	if want := "restarted slow: up, pid 42, version 1.0\n"; stdout.String() != want {
		t.Errorf("stdout %q, want %q", stdout.String(), want)
	}
}

// A mutating request that was sent but not answered may have taken effect:
// the CLI says so, and how to check, not "is it running?" (S6). One never
// sent (nothing listens) is still "cannot reach the runner".
func TestUnansweredRestartMayHaveTakenEffect(t *testing.T) {
	t.Parallel()
	// The runner reads the request, then its connection drops (it was
	// killed, or its API's write timeout passed).
	dropped := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		conn, _, err := w.(http.Hijacker).Hijack()
		if err == nil {
			conn.Close()
		}
	}))
	defer dropped.Close()
	// Nothing listens at the address.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closed := "http://" + l.Addr().String()
	l.Close()
	for _, tc := range []struct {
		name, addr string
		want       []string
		not        string
	}{
		{"dropped", dropped.URL, []string{"no answer from the runner at " + dropped.URL, "may still be in progress, or may have taken effect",
			"`pacer plugins` shows whether slow restarted"}, "is it running?"},
		{"nothing listens", closed, []string{"cannot reach the runner at " + closed, "is it running?"}, "may have taken effect"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			err := pluginsRestartCmd([]string{"slow", "--force", "--addr", tc.addr}, &stdout, &stderr)
			if err == nil {
				t.Fatal("restart: no error")
			}
			printed := errorText(err)
			for _, w := range tc.want {
				if !strings.Contains(printed, w) {
					t.Errorf("printed %q, want it to say %q", printed, w)
				}
			}
			if strings.Contains(printed, tc.not) {
				t.Errorf("printed %q, which says %q", printed, tc.not)
			}
		})
	}

	// Unanswered in time: the same, whatever the request's wait.
	slow := httptest.NewServer(slowRestart(time.Hour))
	defer slow.Close()
	c := &clientFlags{addr: slow.URL, output: "table", timeout: 100 * time.Millisecond}
	err = restartPlugin(c, "slow", true, &bytes.Buffer{})
	if !errors.Is(err, errNoAnswer) || !strings.Contains(err.Error(), "within 100ms") || !strings.Contains(err.Error(), "Client.Timeout exceeded") {
		t.Fatalf("restart unanswered within its timeout: %v; want no answer within 100ms, which may have taken effect", err)
	}
}
