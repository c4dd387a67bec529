package pluginhost_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/pacerun/pacer/internal/syncbuf"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// A private key as openssl genpkey writes it, fresh for each test (no file
// holds one), and its base64 body lines.
func privateKeyPEM(t *testing.T) (string, []string) {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(k)
	if err != nil {
		t.Fatal(err)
	}
	text := string(pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}))
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	return text, lines[1 : len(lines)-1]
}

// A shell task that prints a private key (cat key.pem): the plugin logs its
// output line by line; the host masks the whole block, so that after the
// runner's sanitizer no line of the key is left (before, only the BEGIN line
// was masked).
func TestTaskOutputPrivateKeyMaskedWhole(t *testing.T) {
	t.Parallel()
	b := setup(t, pluginhost.Options{})
	key, body := privateKeyPEM(t)
	path := filepath.Join(t.TempDir(), "k.pem")
	if err := os.WriteFile(path, []byte(key), 0o600); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var logged []string
	s, err := observability.NewSanitizer(observability.SanitizerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c := call("exec", map[string]any{"command": "echo before; cat " + path + "; echo after", "shell": true})
	c.Plugin = "shell"
	c.OnLog = func(l pluginhost.LogRecord) {
		mu.Lock()
		defer mu.Unlock()
		logged = append(logged, s.String(l.Message)) // what the runner's logger writes
	}
	if _, err := b.host.Run(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	want := []string{"before"}
	for range len(body) + 2 {
		want = append(want, "[private_key]")
	}
	want = append(want, "after")
	if strings.Join(logged, "\n") != strings.Join(want, "\n") {
		t.Fatalf("logged lines:\n%s\nwant\n%s", strings.Join(logged, "\n"), strings.Join(want, "\n"))
	}
}

// A plugin's stray stdout (a print in the task): a private key is masked
// whole, and a secret past the first 32 KiB of a long line is not cut in two
// by the line splitter.
func TestPluginStdoutSecretsMasked(t *testing.T) {
	t.Parallel()
	var sink syncbuf.Buffer
	log, err := observability.NewLogger(&sink, slog.LevelInfo, "json", nil)
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, pluginhost.Options{Logger: log})
	key, body := privateKeyPEM(t)
	token := "gh" + "p_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
	for _, msg := range []string{
		"key follows\n" + key + "done",
		strings.Repeat("x", 32760) + " " + token + " tail",
		strings.Repeat("x", 32760) + " password=hunter2secret tail",
	} {
		if _, err := b.host.Run(context.Background(), call("stdout", map[string]any{"message": msg})); err != nil {
			t.Fatal(err)
		}
	}
	// The lines reach the log after the run, through go-plugin's stdout
	// stream: wait for the last one.
	waitForLog(t, "the stray output in the log", func() bool {
		return strings.Count(sink.String(), ` tail","plugin":"testplugin","source":"plugin-stdout"`) == 2
	}, sink.String)
	out := sink.String()
	for _, l := range body {
		if strings.Contains(out, l) {
			t.Fatalf("a line of the private key is in the log: %q", l)
		}
	}
	for _, leak := range []string{token[:8], token[len(token)-8:], "hunter2", "2secret"} {
		if strings.Contains(out, leak) {
			t.Fatalf("%q is in the log", leak)
		}
	}
	if n := strings.Count(out, `"msg":"[private_key]"`); n != len(body)+2 {
		t.Fatalf("%d lines of [private_key], want %d", n, len(body)+2)
	}
}

// waitForLog waits up to 20 s for cond.
func waitForLog(t *testing.T, what string, cond func() bool, log func() string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; the log:\n%s", what, log())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// longJWT is an HS256 JWT whose payload holds 300 group claims, as an
// identity provider issues them: 8,911 bytes, over two log pieces.
func longJWT() string {
	groups := make([]string, 300)
	for i := range groups {
		groups[i] = fmt.Sprintf(`"JWTSECRETGROUP%04d"`, i)
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." +
		enc.EncodeToString([]byte(`{"sub":"x","groups":[`+strings.Join(groups, ",")+`]}`)) + "." +
		"SIGjwtsecretsignature0123456789abcdefghij"
}

// leaked returns the first run of 24 bytes of secret that out shows, or "".
func leaked(out, secret string) string {
	runs := make(map[string]bool, len(secret))
	for i := 0; i+24 <= len(secret); i++ {
		runs[secret[i:i+24]] = true
	}
	for i := 0; i+24 <= len(out); i++ {
		if runs[out[i:i+24]] {
			return out[i : i+24]
		}
	}
	return ""
}

// A shell task prints a JWT and a URL's password longer than a log piece
// (4 KiB), and a plugin prints them to its stdout: no logged piece shows
// 24 bytes of either, and the pieces carry the placeholders (attack 14,
// K11: the JWT went out whole over three pieces, the password in the
// URL's first piece).
func TestLongJWTAndUserinfoMaskedInEveryPiece(t *testing.T) {
	t.Parallel()
	jwt := longJWT()
	pw := strings.Repeat("URLPWSECRET", 500)
	text := "L1 token " + jwt + "\nL2 " + jwt + "\nL4 https://admin:" + pw + "@db.example/x\n"
	s, err := observability.NewSanitizer(observability.SanitizerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, logged string) {
		t.Helper()
		for _, secret := range []string{jwt, pw} {
			if r := leaked(logged, secret); r != "" {
				t.Errorf("the log shows %q", r)
			}
		}
		for _, want := range []string{"L1 token [jwt]…", "L2 [jwt]…", "…[jwt]", "L4 https://[userinfo]…", "https://…[userinfo]@db.example/x"} {
			if !strings.Contains(logged, want) {
				t.Errorf("no %q in the log", want)
			}
		}
	}

	t.Run("task output", func(t *testing.T) {
		t.Parallel()
		b := setup(t, pluginhost.Options{})
		path := filepath.Join(t.TempDir(), "longsec.txt")
		if err := os.WriteFile(path, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		var mu sync.Mutex
		var logged []string
		c := shellCall("cat " + path)
		c.OnLog = func(l pluginhost.LogRecord) {
			mu.Lock()
			defer mu.Unlock()
			if len(l.Message) > 4<<10 {
				t.Errorf("a piece of %d bytes", len(l.Message))
			}
			logged = append(logged, s.String(l.Message)) // what the runner's logger writes
		}
		if _, err := b.host.Run(context.Background(), c); err != nil {
			t.Fatal(err)
		}
		mu.Lock()
		defer mu.Unlock()
		if len(logged) < 7 {
			t.Fatalf("%d lines logged, want the three lines in pieces:\n%s", len(logged), strings.Join(logged, "\n"))
		}
		check(t, strings.Join(logged, "\n"))
	})

	t.Run("stray stdout", func(t *testing.T) {
		t.Parallel()
		var sink syncbuf.Buffer
		log, err := observability.NewLogger(&sink, slog.LevelInfo, "json", nil)
		if err != nil {
			t.Fatal(err)
		}
		b := setup(t, pluginhost.Options{Logger: log})
		if _, err := b.host.Run(context.Background(), call("stdout", map[string]any{"message": text + "done"})); err != nil {
			t.Fatal(err)
		}
		waitForLog(t, "the stray output in the log", func() bool {
			return strings.Contains(sink.String(), `"msg":"done"`)
		}, sink.String)
		check(t, sink.String())
	})
}
