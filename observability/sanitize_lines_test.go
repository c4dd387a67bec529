package observability

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"strings"
	"testing"
)

// testKeyPEM returns a freshly generated private key in PEM, so that no file
// holds one, and its base64 body lines.
func testKeyPEM(t *testing.T, typ string) (string, []string) {
	t.Helper()
	var der []byte
	var err error
	switch typ {
	case "PRIVATE KEY": // PKCS #8 RSA, what openssl genpkey writes
		k, gerr := rsa.GenerateKey(rand.Reader, 2048)
		if gerr != nil {
			t.Fatal(gerr)
		}
		der, err = x509.MarshalPKCS8PrivateKey(k)
	case "EC PRIVATE KEY":
		k, gerr := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if gerr != nil {
			t.Fatal(gerr)
		}
		der, err = x509.MarshalECPrivateKey(k)
	}
	if err != nil {
		t.Fatal(err)
	}
	text := string(pem.EncodeToMemory(&pem.Block{Type: typ, Bytes: der}))
	lines := strings.Split(strings.TrimSuffix(text, "\n"), "\n")
	return text, lines[1 : len(lines)-1]
}

// TestPEMLinesMasksWholeBlock: a key logged line by line (as a task's output
// is) is masked from its BEGIN line through its END line; the lines around
// it are left to the sanitizer. Each line alone, String masks only the
// BEGIN line (the tester's finding).
func TestPEMLinesMasksWholeBlock(t *testing.T) {
	t.Parallel()
	s := mustSanitizer(t, SanitizerOptions{})
	for _, typ := range []string{"PRIVATE KEY", "EC PRIVATE KEY"} {
		t.Run(typ, func(t *testing.T) {
			t.Parallel()
			text, body := testKeyPEM(t, typ)
			in := append([]string{"before"}, strings.Split(strings.TrimSuffix(text, "\n"), "\n")...)
			in = append(in, "after 10.1.2.3")
			var p PEMLines
			var out []string
			for _, l := range in {
				out = append(out, s.String(p.Line(l)))
			}
			want := []string{"before"}
			for range len(body) + 2 {
				want = append(want, "[private_key]")
			}
			want = append(want, "after [ipv4]")
			if strings.Join(out, "\n") != strings.Join(want, "\n") {
				t.Fatalf("lines:\n%s\nwant\n%s", strings.Join(out, "\n"), strings.Join(want, "\n"))
			}
			// Without the state, the body leaks.
			if got := s.String(body[0]); got != body[0] {
				t.Fatalf("a body line alone is masked (%q): this test no longer shows why PEMLines exists", got)
			}
		})
	}
}

func TestPEMLines(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name     string
		in, want []string
	}{
		{"end line with text after it",
			[]string{"key: -----BEGIN RSA PRIVATE KEY-----", "MIIEow", "-----END RSA PRIVATE KEY----- done a@example.com"},
			[]string{"key: [private_key]", "[private_key]", "[private_key] done [email]"}},
		{"a whole block on one line opens nothing",
			[]string{"-----BEGIN PRIVATE KEY----- MIIE -----END PRIVATE KEY-----", "next"},
			[]string{"[private_key]", "next"}},
		{"a quoted marker opens nothing",
			[]string{`private_key="-----BEGIN PRIVATE KEY-----"`, "line 2", "line 3"},
			[]string{`private_key="[private_key]"`, "line 2", "line 3"}},
		{"a certificate is not a key",
			[]string{"-----BEGIN CERTIFICATE-----", "MIIB", "-----END CERTIFICATE-----"},
			[]string{"-----BEGIN CERTIFICATE-----", "MIIB", "-----END CERTIFICATE-----"}},
		{"an END line of another kind does not close",
			[]string{"-----BEGIN PRIVATE KEY-----", "-----END CERTIFICATE-----", "MIIE", "-----END PRIVATE KEY-----", "x"},
			[]string{"[private_key]", "[private_key]", "[private_key]", "[private_key]", "x"}},
		{"two blocks, and a new one after an END on its line",
			[]string{"-----BEGIN PRIVATE KEY-----", "AAAA", "-----END PRIVATE KEY----- -----BEGIN EC PRIVATE KEY-----", "BBBB", "-----END EC PRIVATE KEY-----", "y"},
			[]string{"[private_key]", "[private_key]", "[private_key] [private_key]", "[private_key]", "[private_key]", "y"}},
		{"openssh and pgp",
			[]string{"-----BEGIN OPENSSH PRIVATE KEY-----", "b3Bl", "-----END OPENSSH PRIVATE KEY-----", "-----BEGIN PGP PRIVATE KEY BLOCK-----", "", "lQ", "=abcd", "-----END PGP PRIVATE KEY BLOCK-----", "z"},
			[]string{"[private_key]", "[private_key]", "[private_key]", "[private_key]", "[private_key]", "[private_key]", "[private_key]", "[private_key]", "z"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s := mustSanitizer(t, SanitizerOptions{})
			var p PEMLines
			var got []string
			for _, l := range tc.in {
				got = append(got, s.String(p.Line(l)))
			}
			if strings.Join(got, "\n") != strings.Join(tc.want, "\n") {
				t.Fatalf("got\n%q\nwant\n%q", got, tc.want)
			}
		})
	}
}

// TestPEMBlockBounded: a BEGIN line with no END line masks at most
// maxPEMBlock bytes of the lines after it, line by line and in whole text
// alike; what follows is sanitized as usual.
func TestPEMBlockBounded(t *testing.T) {
	t.Parallel()
	s := mustSanitizer(t, SanitizerOptions{})
	line := strings.Repeat("A", 63) // 64 bytes with its newline
	n := maxPEMBlock/64 + 100
	lines := []string{"-----BEGIN PRIVATE KEY-----"}
	for range n {
		lines = append(lines, line)
	}
	lines = append(lines, "then alice@example.com")

	var p PEMLines
	masked, clear := 0, 0
	for _, l := range lines {
		switch out := s.String(p.Line(l)); out {
		case "[private_key]":
			masked++
		case line:
			clear++
		case "then [email]":
		default:
			t.Fatalf("line %q -> %q", l, out)
		}
	}
	if masked < maxPEMBlock/64-1 || masked > maxPEMBlock/64+1 || clear != n+1-masked {
		t.Fatalf("line by line: %d lines masked, %d clear, want about %d masked", masked, clear, maxPEMBlock/64)
	}

	out := s.String(strings.Join(lines, "\n"))
	rest := strings.TrimPrefix(out, "[private_key]\n")
	if rest == out || strings.Count(rest, line) < 90 || strings.Count(rest, line) > 110 || !strings.HasSuffix(out, "\nthen [email]") {
		t.Fatalf("whole text: %d lines left after the mask, want about 100; ends %q", strings.Count(rest, line), out[max(0, len(out)-40):])
	}
}
