package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// An error found before a request is sent (a usage error, a TLS file that
// cannot be read, an address no request can go to) is reported once, at
// once: trigger, pause and resume repeated it six times over 31 s (attack
// 23, U6).
func TestMutateDoesNotRepeatWhatNoRequestCanFix(t *testing.T) {
	t.Parallel()
	var requests atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { requests.Add(1) }))
	defer srv.Close()
	for _, tc := range []struct {
		args  []string
		usage bool
		want  string
	}{
		{[]string{"--addr", srv.URL, "--cert-file", "c.pem"}, true, "--cert-file and --key-file go together"},
		{[]string{"--addr", srv.URL, "--ca-file", filepath.Join(t.TempDir(), "none.pem")}, false, "--ca-file: "},
		{[]string{"--addr", "ftp://127.0.0.1:1"}, true, "want an http:// or https:// address"},
		{[]string{"--addr", "http://a b:1"}, true, "--addr http://a b:1 (env PACER_ADDR): "},
	} {
		for _, cmd := range []string{"pause", "trigger"} {
			var out, errOut bytes.Buffer
			err := run(append([]string{cmd, "j"}, tc.args...), &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tc.want) || errors.Is(err, errUsage) != tc.usage {
				t.Errorf("%s %q: %v, want an error with %q (usage error: %v)", cmd, tc.args, err, tc.want, tc.usage)
			}
			if strings.Contains(errOut.String(), "trying again") {
				t.Errorf("%s %q: repeated:\n%s", cmd, tc.args, errOut.String())
			}
		}
	}
	if n := requests.Load(); n != 0 {
		t.Errorf("%d requests sent", n)
	}
}

// writeCA writes the PEM of srv's certificate (httptest's, for 127.0.0.1,
// ::1 and example.com, self-signed) to a file for --ca-file.
func writeCA(t *testing.T, srv *httptest.Server) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(f, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

// A TLS error over a certificate says what to do, not "cannot reach the
// runner (is it running?)", and is not repeated; --server-name verifies
// the runner's certificate for a name other than --addr's host, as through
// kubectl port-forward (attack 23, U12).
func TestTLSErrorsSayWhatToDo(t *testing.T) {
	t.Parallel()
	ok := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Write([]byte(`{"job":"j","state":"applied"}`))
	})
	quiet := log.New(io.Discard, "", 0) // the handshake errors are the test's
	srv := httptest.NewUnstartedServer(ok)
	srv.Config.ErrorLog = quiet
	srv.StartTLS()
	defer srv.Close()
	ca := writeCA(t, srv)
	port := srv.URL[strings.LastIndexByte(srv.URL, ':'):]

	mtls := httptest.NewUnstartedServer(ok)
	mtls.Config.ErrorLog = quiet
	mtls.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: x509.NewCertPool()}
	mtls.StartTLS()
	defer mtls.Close()
	mtlsCA := writeCA(t, mtls)
	// Under TLS 1.2 the runner refuses the handshake itself ("bad
	// certificate"), not after the request.
	mtls12 := httptest.NewUnstartedServer(ok)
	mtls12.Config.ErrorLog = quiet
	mtls12.TLS = &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, ClientCAs: x509.NewCertPool(), MaxVersion: tls.VersionTLS12}
	mtls12.StartTLS()
	defer mtls12.Close()
	mtls12CA := writeCA(t, mtls12)
	// A client certificate no CA of the runner's signed: httptest's own.
	kp := srv.TLS.Certificates[0]
	key, err := x509.MarshalPKCS8PrivateKey(kp.PrivateKey)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(t.TempDir(), "client.pem"), filepath.Join(t.TempDir(), "client-key.pem")
	if os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: kp.Certificate[0]}), 0o600) != nil ||
		os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: key}), 0o600) != nil {
		t.Fatal("cannot write the client certificate")
	}

	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown authority", []string{"--addr", srv.URL}, "certificate signed by unknown authority; the runner's certificate is not signed by a CA this machine trusts: give the CA that signed it with --ca-file"},
		{"another name", []string{"--addr", "https://localhost" + port, "--ca-file", ca}, "not localhost; the runner's certificate does not name the host of --addr: use an address it names, or give a name it holds with --server-name"},
		{"client certificate required", []string{"--addr", mtls.URL, "--ca-file", mtlsCA}, "the runner requires a client certificate (http.tls.client_ca_file): give one with --cert-file and --key-file"},
		{"client certificate required, TLS 1.2", []string{"--addr", mtls12.URL, "--ca-file", mtls12CA},
			"if it requires a client certificate (http.tls.client_ca_file), give one with --cert-file and --key-file"},
		{"client certificate refused", []string{"--addr", mtls.URL, "--ca-file", mtlsCA, "--cert-file", certFile, "--key-file", keyFile},
			"the runner refused the client certificate of --cert-file: it must be valid and signed by a CA of the runner's http.tls.client_ca_file"},
	} {
		for _, cmd := range []string{"status", "pause"} {
			var out, errOut bytes.Buffer
			args := append([]string{cmd}, tc.args...)
			if cmd == "pause" {
				args = append(args, "j")
			}
			err := run(args, &out, &errOut)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.HasPrefix(err.Error(), "TLS with the runner at ") ||
				strings.Contains(err.Error(), "is it running") || strings.Contains(err.Error(), "may still be in progress") {
				t.Errorf("%s, %s: %v\nwant %q", tc.name, cmd, err, tc.want)
			}
			if exitCode(err) != 1 || strings.Contains(errOut.String(), "trying again") {
				t.Errorf("%s, %s: exit %d, repeated:\n%s", tc.name, cmd, exitCode(err), errOut.String())
			}
		}
	}

	var out, errOut bytes.Buffer
	if err := run([]string{"pause", "j", "--addr", "https://localhost" + port, "--ca-file", ca, "--server-name", "example.com"}, &out, &errOut); err != nil ||
		!strings.Contains(out.String(), "paused j") {
		t.Errorf("--server-name example.com: %v, printed %q", err, out.String())
	}
}

// Plain http:// to a runner that answers in TLS says so, once (attack 24,
// V3: a bare "400 Bad Request"); a read the runner took but did not
// answer says that, not "is it running? set --addr" (V4: it runs, there).
func TestWrongSchemeAndUnansweredReadSayWhatHappened(t *testing.T) {
	t.Parallel()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer tlsSrv.Close()
	plain := "http://" + strings.TrimPrefix(tlsSrv.URL, "https://")
	var out, errOut bytes.Buffer
	err := pauseCmd("pause")([]string{"--addr", plain, "j"}, &out, &errOut)
	if err == nil || !strings.Contains(errorText(err), "answers in TLS: use https:// in --addr") || strings.Contains(errOut.String(), "trying again") {
		t.Errorf("pause over http:// to a TLS runner: %v\n%s", err, errOut.String())
	}

	release := make(chan struct{})
	hung := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { <-release }))
	defer hung.Close()
	defer close(release)
	c := &clientFlags{addr: hung.URL}
	_, err = c.send(http.MethodGet, "/api/v1/jobs", nil, 200*time.Millisecond)
	if err == nil || !strings.Contains(err.Error(), "it took the request but did not answer") || strings.Contains(err.Error(), "is it running?") {
		t.Errorf("a read the runner took and did not answer: %v", err)
	}
}
