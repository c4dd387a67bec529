package pluginhost_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
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
func longJWT(n int) string {
	groups := make([]string, n)
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

// A shell task prints long lines, and a plugin prints them to its stdout:
// no logged piece shows 24 bytes of a secret, and no piece is over 4 KiB.
// A line up to 16 KiB is masked whole before it is cut into pieces
// (attack 32: a Cookie header's later piece (S1), a --client-secret's
// value cut from its flag (S2), a token in a URL cut at the piece's end
// (S9) and a long value's tail (S10) were logged in clear, each piece
// masked on its own). A longer line is cut first, at 16 KiB, into parts
// masked on their own: a JWT or a URL's user-info cut inside is marked on
// both sides and masked in every part (attack 14, K11: the JWT went out
// whole over three pieces, the password in the URL's first piece).
func TestLongLinesAreMaskedInEveryPiece(t *testing.T) {
	t.Parallel()
	jwt, huge := longJWT(300), longJWT(900) // about 9 and 26 KiB
	pw, hugePW := strings.Repeat("URLPWSECRET", 500), strings.Repeat("URLPWSECRET", 1600)
	cookie := "S1COOKIESECRET" + strings.Repeat("Z", 30)
	token := "ghp_" + strings.Repeat("A", 36)
	value := strings.Repeat("V", 5000) + "S10TAILSECRET"
	var lines []string
	lines = append(lines, "L1 token "+jwt, "L2 "+jwt, "L4 https://admin:"+pw+"@db.example/x",
		"L5 "+huge, "L6 https://admin:"+hugePW+"@db.example/y",
		"Cookie: "+strings.Repeat("a=1; ", 1000)+"session="+cookie)
	var secrets []string
	for n := 4060; n <= 4100; n += 3 { // the cut at every offset around 4 KiB
		cs := fmt.Sprintf("S2CLIENTSECRET%04dXXXXXXXXXXXX", n)
		lines = append(lines, strings.Repeat("x", n)+" --client-secret "+cs,
			"https://t.example.com/"+strings.Repeat("p", n-22)+"="+token+"&z=1")
		secrets = append(secrets, cs)
	}
	lines = append(lines, "x --token "+value, "x password\t"+value)
	text := strings.Join(lines, "\n") + "\n"
	secrets = append(secrets, jwt, huge, pw, hugePW, cookie, token, value[len(value)-24:])
	s, err := observability.NewSanitizer(observability.SanitizerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	check := func(t *testing.T, logged string) {
		t.Helper()
		for _, secret := range secrets {
			if r := leaked(logged, secret); r != "" {
				t.Errorf("the log shows %q", r)
			}
		}
		for _, want := range []string{"L1 token [jwt]\n", "L2 [jwt]\n", "L4 https://[userinfo]@db.example/x",
			"L5 [jwt]…", "…[jwt]", "L6 https://[userinfo]…", "https://…[userinfo]@db.example/y", "Cookie: [redacted]",
			"--client-secret [redacted]", "=[github_token]&z=1", "--token [redacted]"} {
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
		c := call("exec", map[string]any{"command": "cat " + path, "shell": true, "max_output_bytes": 1 << 20})
		c.Plugin = "shell"
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
		check(t, strings.Join(logged, "\n")+"\n")
	})

	t.Run("stray stdout", func(t *testing.T) {
		t.Parallel()
		var sink syncbuf.Buffer
		log, err := observability.NewLogger(&sink, slog.LevelInfo, "json", nil)
		if err != nil {
			t.Fatal(err)
		}
		b := setup(t, pluginhost.Options{Logger: log, LogLinesPerSecond: 1000, LogBurst: 1000})
		if _, err := b.host.Run(context.Background(), call("stdout", map[string]any{"message": text + "done"})); err != nil {
			t.Fatal(err)
		}
		waitForLog(t, "the stray output in the log", func() bool {
			return strings.Contains(sink.String(), `"msg":"done"`)
		}, sink.String)
		var msgs []string
		for _, l := range strings.Split(strings.TrimSpace(sink.String()), "\n") {
			var rec struct{ Msg, Source string }
			if err := json.Unmarshal([]byte(l), &rec); err != nil {
				t.Fatalf("not JSON: %s", l)
			}
			if rec.Source == "plugin-stdout" {
				if len(rec.Msg) > 4<<10 {
					t.Errorf("a piece of %d bytes", len(rec.Msg))
				}
				msgs = append(msgs, rec.Msg)
			}
		}
		check(t, strings.Join(msgs, "\n")+"\n")
	})
}
