package linesplit_test

import (
	"encoding/base64"
	"fmt"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/pacerun/pacer/internal/linesplit"
	"github.com/pacerun/pacer/observability"
)

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
	// A flag and its argument, and a key and its value separated by a tab
	// (attack 32, S2: cut between them, the value went out alone).
	"--client-secret cs9s3cr3tvalue",
	"--token   tk9s3cr3tvalue",
	"password\thunter2tabvalue",
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
			for _, p := range linesplit.Split(line, limit) {
				if len(p) > limit || p == "" {
					t.Fatalf("piece of %d bytes (limit %d)", len(p), limit)
				}
				got.WriteString(s.String(pem.Line(p)))
			}
			for _, w := range strings.Fields(secret) {
				if !strings.Contains(want, w) && strings.Contains(got.String(), w) {
					t.Fatalf("secret %q at offset %d: %q leaks\n pieces %q\n got  %q\n want %q", secret, len(pad), w, linesplit.Split(line, limit), got.String(), want)
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
		for _, p := range linesplit.Split(line, 32768) {
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
	f.Add("x eyJhbGciOiJIUzI1NiJ9.eyJzdWIi", 12)
	f.Add("https://admin:pw0123456789@db", 16)
	f.Add("https://…é…ab", 8)
	f.Fuzz(func(t *testing.T, s string, limit int) {
		if limit <= 0 || limit > 1<<16 {
			return
		}
		n := linesplit.Cut(s, limit)
		if n > len(s) || len(s) > limit && (n <= 0 || n > limit) || len(s) <= limit && n != len(s) {
			t.Fatalf("Cut(%q, %d) = %d", s, limit, n)
		}
		if len(s) <= limit || limit <= len(linesplit.Continued) {
			return
		}
		// The piece with its mark fits; what is left is shorter.
		if h := linesplit.Head(s, n); len(h) > limit || !strings.HasPrefix(h, s[:n]) {
			t.Fatalf("Head(%q, %d) = %q, limit %d", s, n, h, limit)
		}
		if r := linesplit.Rest([]byte(s), n); len(r) >= len(s) {
			t.Fatalf("Rest(%q, %d) = %q: no shorter", s, n, r)
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
		pieces := linesplit.Split(tc.line, 4096)
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

// runs returns the runs of 24 bytes of secret, for leakedRun.
func runs(secret string) map[string]bool {
	r := make(map[string]bool, len(secret))
	for i := 0; i+24 <= len(secret); i++ {
		r[secret[i:i+24]] = true
	}
	return r
}

// leakedRun returns the first of runs (of a secret) that out shows, or "".
func leakedRun(out string, runs map[string]bool) string {
	const run = 24
	for i := 0; i+run <= len(out); i++ {
		if runs[out[i:i+run]] {
			return out[i : i+run]
		}
	}
	return ""
}

// longJWT is an HS256 JWT whose payload holds n group claims, as an
// identity provider issues them (attack 14, K11: 300 groups, 8,911 bytes).
func longJWT(n int) string {
	var groups []string
	for i := range n {
		groups = append(groups, fmt.Sprintf("%q", fmt.Sprintf("JWTSECRETGROUP%04d", i)))
	}
	enc := base64.RawURLEncoding
	return enc.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`)) + "." +
		enc.EncodeToString([]byte(`{"sub":"x","groups":[`+strings.Join(groups, ",")+`]}`)) + "." +
		"SIGjwtsecretsignature0123456789abcdefghij"
}

// TestLongShapesMaskedInEveryPiece: a JWT or a URL's user-info longer than
// a piece is cut inside, and each piece, sanitized on its own, shows none
// of it, wherever it starts on its line and however long it is (attack
// 14, K11: an 8,911-byte JWT went out whole over three 4 KiB pieces, and
// the first piece of "https://admin:<5,500 bytes>@db" showed the
// password). Every piece stays within the limit.
func TestLongShapesMaskedInEveryPiece(t *testing.T) {
	t.Parallel()
	s := observability.DefaultSanitizer()
	jwt, huge := longJWT(300), longJWT(4000)
	pw := strings.Repeat("URLPWSECRET", 500)
	for _, tc := range []struct {
		name, line, secret, placeholder string
	}{
		{"jwt", "L2 " + jwt, jwt, "[jwt]"},
		{"jwt after a scheme", "L1 token " + jwt, jwt, "[jwt]"},
		{"jwt in json", `{"id_token":"` + jwt + `","n":1}`, jwt, "[jwt]"},
		{"jwt after an ordinary key", "claims=" + jwt + " done", jwt, "[jwt]"},
		{"jwt over 64 KiB", "L2 " + huge + " tail", huge, "[jwt]"},
		{"url", "L4 https://admin:" + pw + "@db.example/x", pw, "[userinfo]"},
		{"url in a value", "DATABASE_URL=postgres://admin:" + pw + "@db:5432/app?sslmode=off", pw, "[userinfo]"},
		{"url with a long user", "https://" + strings.Repeat("LONGUSER", 800) + ":" + pw + "@db.example/x", pw, "[userinfo]"},
		{"url over 64 KiB", "L4 https://admin:" + strings.Repeat(pw, 13) + "@db.example/x", pw, "[userinfo]"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			secret := runs(tc.secret)
			if out := s.String(tc.line); leakedRun(out, secret) != "" {
				t.Fatalf("the whole line is not masked: the test does not test the cut")
			}
			for _, limit := range []int{4096, 1000} {
				for _, pad := range []int{0, 1, 2, 3, 4, 5, 6, 7, 10, 17, 31, 64, 100, 511} {
					line := strings.Repeat("w ", pad) + tc.line
					pieces := linesplit.Split(line, limit)
					if len(pieces) < 2 {
						t.Fatalf("not cut")
					}
					var all strings.Builder
					for i, p := range pieces {
						if len(p) > limit || p == "" {
							t.Fatalf("limit %d, pad %d: piece %d has %d bytes", limit, pad, i, len(p))
						}
						out := s.String(p)
						if r := leakedRun(out, secret); r != "" {
							t.Fatalf("limit %d, pad %d: piece %d of %d shows %q: %.100q…", limit, pad, i, len(pieces), r, out)
						}
						all.WriteString(out)
					}
					if !strings.Contains(all.String(), tc.placeholder) {
						t.Fatalf("limit %d, pad %d: no %s in %.200q", limit, pad, tc.placeholder, all.String())
					}
				}
			}
		})
	}
}

// TestHeadMarksACutShape: Head adds the mark only for a cut inside a JWT or
// a URL's authority before its '@', and Cut leaves room for it.
func TestHeadMarksACutShape(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("A", 40)
	for _, tc := range []struct {
		name, in   string
		head, rest string
	}{
		{"jwt", "x eyJhbGciOi" + long, "x eyJhbGciOi" + long[:9] + "…", "eyJ…" + long[9:]},
		{"jwt segment", "x a.eyJhbGciOi" + long, "x a.eyJhbGciOi" + long[:7] + "…", "eyJ…" + long[7:]},
		{"jwt continued", "eyJ…AAAAA." + long, "eyJ…AAAAA." + long[:9] + "…", "eyJ…" + long[9:]},
		{"authority", "https://admin:" + long + "@db", "https://admin:" + long[:7] + "…", "https://…" + long[7:] + "@db"},
		{"authority continued", "https://…" + long + "@db", "https://…" + long[:10] + "…", "https://…" + long[10:] + "@db"},
		// No mark: the user-info is whole before the cut, the cut is in
		// the path, the run has no "eyJ" (the key before the cut is
		// carried, as for any value).
		{"after the user-info", "https://a:b@" + long + "/x", "https://a:b@" + long[:12], "https:…" + long[12:] + "/x"},
		{"in the path", "https://db/" + long, "https://db/" + long[:13], "https:…" + long[13:]},
		{"no eyJ", "x abc" + long, "x abc" + long[:19], long[19:]},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			n := linesplit.Cut(tc.in, 24)
			if got := linesplit.Head(tc.in, n); got != tc.head || len(got) > 24 {
				t.Errorf("Head: %q (%d bytes), want %q", got, len(got), tc.head)
			}
			if got := linesplit.Head([]byte(tc.in), n); string(got) != tc.head {
				t.Errorf("Head([]byte): %q, want %q", got, tc.head)
			}
			if got := string(linesplit.Rest([]byte(tc.in), n)); got != tc.rest {
				t.Errorf("Rest: %q, want %q", got, tc.rest)
			}
		})
	}
}

func TestKeepWords(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("é", 3000) // 6000 bytes, one word
	for _, tc := range []struct {
		name string
		s    string
		n    int
		want int
	}{
		{"all fits", "abc def", 7, 7},
		{"more than all", "abc", 10, 3},
		{"at a space", "abc def", 3, 3},
		{"after a space", "abc def", 4, 4},
		{"inside a word", "abc defgh", 6, 3},
		{"inside the first word", "abcdef ghi", 3, 0},
		{"after a newline", "fff\nghp_x", 6, 3},
		{"nothing kept", "abc", 0, 0},
		{"a word longer than the bound, cut inside a rune", "x " + long, 2 + 5001, 2 + 5000 - linesplit.MaxWordDropped},
		{"a word just within the bound", "x " + long, 1 + linesplit.MaxWordDropped, 1},
	} {
		if got := linesplit.KeepWords(tc.s, tc.n); got != tc.want {
			t.Errorf("%s: KeepWords(%.20q…, %d) = %d, want %d", tc.name, tc.s, tc.n, got, tc.want)
		}
		if got := linesplit.KeepWords([]byte(tc.s), tc.n); got != tc.want {
			t.Errorf("%s: KeepWords([]byte, %d) = %d, want %d", tc.name, tc.n, got, tc.want)
		}
	}
}
