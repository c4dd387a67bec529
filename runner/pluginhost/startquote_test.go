package pluginhost_test

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pacerun/pacer/runner/pluginhost"
)

// Attack 14, K3: a start failure quotes the end of the plugin's stderr (in
// the API's answers and the log), masked as the log masks the same lines.
// Before the fix the quote was cut first and masked after: a private key
// longer than the quote lost its BEGIN line, a long password its key, and
// the rest of each went out as it was.
func TestStartFailureQuotesStderrMasked(t *testing.T) {
	t.Parallel()
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der})
	password := strings.Repeat("LongSecretValue", 100) // 1,500 bytes
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	keyFile := write("key.pem", string(keyPEM))
	script := func(name, body string) string {
		p := write(name, "#!/bin/sh\n"+body+"\nexit 1\n")
		if err := os.Chmod(p, 0o755); err != nil {
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name, plugin, secret, want string
	}{
		{"private key", script("key", `echo "starting" >&2; cat "`+keyFile+`" >&2; echo "fatal: cannot start" >&2`),
			string(keyPEM), "[private_key]\\nfatal: cannot start"},
		{"long password", script("password", `printf 'DB_PASSWORD=%s\n' "`+password+`" >&2`), password, "[redacted]"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			b := setup(t, pluginhost.Options{Paths: map[string]string{"p": tc.plugin}})
			c := call("echo", nil)
			c.Plugin = "p"
			_, err := b.host.Run(context.Background(), c)
			if err == nil {
				t.Fatal("the plugin started")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) {
				t.Errorf("error %q lacks %q", msg, tc.want)
			}
			// No 24 bytes of the secret in a row, wherever the quote begins.
			secret := strings.ReplaceAll(strings.ReplaceAll(tc.secret, "-----BEGIN PRIVATE KEY-----", ""), "-----END PRIVATE KEY-----", "")
			for _, line := range strings.Split(secret, "\n") {
				for i := 0; i+24 <= len(line); i += 8 {
					if strings.Contains(msg, line[i:i+24]) {
						t.Fatalf("the error quotes the secret (%q): %s", line[i:i+24], msg)
					}
				}
			}
			for _, st := range b.host.Status() {
				if st.Name == "p" && (strings.Contains(st.LastError, secret[len(secret)/2:len(secret)/2+24]) || strings.Contains(st.Error, secret[len(secret)/2:len(secret)/2+24])) {
					t.Fatalf("the plugin's status quotes the secret: %+v", st)
				}
			}
		})
	}
}
