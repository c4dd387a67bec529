package linesplit_test

import (
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pacerun/pacer/internal/linesplit"
	"github.com/pacerun/pacer/observability"
)

// split cuts s into pieces with Cut, as the shell plugin and the plugin
// host do.
func split(s string, limit int) []string {
	var out []string
	b := []byte(s)
	for len(b) > limit {
		n := linesplit.Cut(b, limit)
		out = append(out, string(b[:n]))
		b = linesplit.Rest(b, n)
	}
	return append(out, string(b))
}

// Secrets the sanitizer recognises, single words and the shapes it reads
// across spaces (built from parts, so that no file holds a whole token).
var secrets = []string{
	"gh" + "p_wWPw5k4aXcaT4fNP0UcnZwJUVFk6LO0pINUx",
	"AK" + "IAIOSFODNN7EXAMPLE",
	"alice@example.com",
	"https://bob:pw9s3cr3t@db.internal/x",
	"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl",
	"password=hunter2secret",
	"password: hunter2secret",
	"secret = s3cr3tvalue",
	`{"api_key": "k123secret"}`,
	"map[password:abc123 user:bob]",
	"Authorization: Bearer zq9xv8w7abc",
	"Authorization: Basic dXNlcjpwYXNz",
	"4111 1111 1111 1111",
	"3782 822463 10005",
	"DE89 3704 0044 0532 0130 00",
	"GB82 WEST 1234 5698 7654 32",
	"+49 30 12345678",
	"+1 (415) 555-2671",
	"+44 (0)20 7946 0958",
	"-----BEGIN RSA PRIVATE KEY----- MIIEow -----END RSA PRIVATE KEY-----",
	"10.91.82.73:5432",
}

// TestCutKeepsSecretsWhole: wherever a secret falls relative to the limit,
// sanitizing the pieces one by one shows no part of it that sanitizing the
// whole line masks; with a plain cut at the limit (what the shell plugin
// and the SDK did), the secrets the tester planted at the boundary leak.
func TestCutKeepsSecretsWhole(t *testing.T) {
	t.Parallel()
	s, err := observability.NewSanitizer(observability.SanitizerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	const limit = 256
	for _, secret := range secrets {
		for off := limit - len(secret) - 2; off <= limit+2; off++ {
			pad := strings.Repeat("lorem ", off/6) + strings.Repeat("x", off%6)
			if off%6 != 0 {
				pad += " "
			}
			line := pad + secret + " tail words after it"
			want := s.String(line)
			// The pieces pass through a PEMLines, then the sanitizer, as a
			// run's log records do in the runner.
			var got strings.Builder
			var pem observability.PEMLines
			for _, p := range split(line, limit) {
				if len(p) > limit || p == "" {
					t.Fatalf("piece of %d bytes (limit %d)", len(p), limit)
				}
				got.WriteString(s.String(pem.Line(p)))
			}
			for _, w := range strings.Fields(secret) {
				if !strings.Contains(want, w) && strings.Contains(got.String(), w) {
					t.Fatalf("secret %q at offset %d: %q leaks\n pieces %q\n got  %q\n want %q", secret, len(pad), w, split(line, limit), got.String(), want)
				}
			}
		}
	}

	// The tester's lines: a token or a password just past 32 KiB - 8.
	for _, secret := range []string{secrets[0], "password=hunter2secret"} {
		line := strings.Repeat("x", 32760) + " " + secret + " tail"
		hard := []string{line[:32768], line[32768:]}
		if strings.Contains(s.String(hard[1]), secret[8:]) == false {
			t.Fatalf("a cut at the limit no longer shows the secret's end: the test does not test the cut")
		}
		for _, p := range split(line, 32768) {
			if out := s.String(p); strings.Contains(out, secret[8:]) || strings.Contains(out, secret[:12]) {
				t.Errorf("piece shows part of %q: %q", secret, out[max(0, len(out)-80):])
			}
		}
	}
}

func TestCut(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name  string
		in    string
		limit int
		want  string // the first piece
	}{
		{"fits", "short line", 20, "short line"},
		{"at a space", "aaaa bbbb cccc dddd", 12, "aaaa bbbb "},
		{"not after a key", "aaaa bbbb key: value tail", 17, "aaaa bbbb "},
		{"not before a separator", "aaaaaaaa key = value", 16, "aaaaaaaa "},
		{"not after a scheme", "aaaaaaaaaaaaaaaaaaaa Bearer tok", 30, "aaaaaaaaaaaaaaaaaaaa "},
		{"not between digit groups", "aaaaaaaaaaaaaa 4111 1111 1111 1111", 28, "aaaaaaaaaaaaaa "},
		{"minified json", `{"a":"bbbbbbbbbbbb","password":"x"}`, 30, `{"a":"bbbbbbbbbbbb",`},
		{"query string", "/cb?aaaaaaaaaaaaaaa=1&token=abc", 28, "/cb?aaaaaaaaaaaaaaa=1&"},
		{"one long word", strings.Repeat("y", 40), 16, strings.Repeat("y", 16)},
		{"utf-8", strings.Repeat("é", 20), 15, strings.Repeat("é", 7)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := linesplit.Cut(tc.in, tc.limit)
			if got := tc.in[:n]; got != tc.want {
				t.Fatalf("Cut(%q, %d): first piece %q, want %q", tc.in, tc.limit, got, tc.want)
			}
			if !utf8.ValidString(tc.in[:n]) {
				t.Fatalf("cut inside a character")
			}
			if b := linesplit.Cut([]byte(tc.in), tc.limit); b != n {
				t.Fatalf("[]byte: %d, string: %d", b, n)
			}
		})
	}
}

func FuzzCut(f *testing.F) {
	f.Add("aaaa bbbb cccc", 5)
	f.Add("x: 4111 1111", 7)
	f.Fuzz(func(t *testing.T, s string, limit int) {
		if limit <= 0 || limit > 1<<16 {
			return
		}
		n := linesplit.Cut(s, limit)
		if n > len(s) || len(s) > limit && (n <= 0 || n > limit) || len(s) <= limit && n != len(s) {
			t.Fatalf("Cut(%q, %d) = %d", s, limit, n)
		}
	})
}

// TestRestCarriesTheKey: a value longer than a piece is cut inside; each
// later piece starts with its key again, so the sanitizer masks every piece
// of it (attack 3, B5: "password=S3KRITi7" + 6000 A + "S3KRITi8" as one
// word showed "AAAA…S3KRITi8" in the second log line).
func TestRestCarriesTheKey(t *testing.T) {
	t.Parallel()
	s := observability.DefaultSanitizer()
	long := strings.Repeat("A", 6000)
	for _, tc := range []struct{ line, carried string }{
		{"password=S3KRITi7" + long + "S3KRITi8", "password=…"},
		{"x password=S3KRITi7" + long + "S3KRITi8 tail", "password=…"},
		{`{"user":"bob","password":"S3KRITi7` + long + `S3KRITi8"}`, `"password":"…`},
		{`"{\"password\":\"S3KRITi7` + long + `S3KRITi8\"}"`, `\"password\":\"…`},
		{"GET /cb?a=1&token=S3KRITi7" + long + "S3KRITi8 HTTP/1.1", "token=…"},
		{"password: S3KRITi7" + long + "S3KRITi8", "password: …"},
		{"secret = S3KRITi7" + long + "S3KRITi8", "secret = …"},
		{"Authorization: Basic S3KRITi7" + long + "S3KRITi8", "Authorization: Basic …"},
		{"Bearer S3KRITi7" + long + "S3KRITi8", "Bearer …"},
		{"password:=S3KRITi7" + long + "S3KRITi8", "password:=…"},
	} {
		pieces := split(tc.line, 4096)
		if len(pieces) < 2 {
			t.Fatalf("%.40q: not cut", tc.line)
		}
		for i, p := range pieces {
			if len(p) > 4096+len(tc.carried) {
				t.Fatalf("%.40q: piece %d has %d bytes", tc.line, i, len(p))
			}
			if i > 0 && !strings.HasPrefix(p, tc.carried) {
				t.Errorf("%.40q: piece %d starts %.40q, want %q", tc.line, i, p, tc.carried)
			}
			if out := s.String(p); strings.Contains(out, "S3KRIT") || strings.Contains(out, "AAAAAAAA") {
				t.Errorf("%.40q: piece %d sanitized shows the value: %.80q", tc.line, i, out[max(0, len(out)-80):])
			}
		}
	}
	// Nothing is carried between words, nor for a word that is no value.
	for _, line := range []string{
		strings.Repeat("word ", 2000),
		strings.Repeat("x", 6000),
		"note: " + strings.Repeat("y", 6000),
	} {
		b := []byte(line)
		n := linesplit.Cut(b, 4096)
		rest := string(linesplit.Rest(b, n))
		if rest != line[n:] && !strings.HasPrefix(line, "note:") {
			t.Errorf("%.20q: carried %.20q", line, rest)
		}
	}
}
