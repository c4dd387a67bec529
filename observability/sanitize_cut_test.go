package observability

import (
	"strings"
	"testing"
)

// TestSanitizeCutShapes: a long line's pieces (internal/linesplit) mark a
// cut inside a JWT or a URL's authority with "…"; each part is masked on
// its own, short or long, however many dots it holds (attack 14, K11), and
// masking twice changes nothing.
func TestSanitizeCutShapes(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("QUFB", 50) // past the short-string pre-screen
	for _, tc := range []struct{ in, want string }{
		// A JWT: the first piece, a middle one, the last one.
		{"L2 eyJhbGciOiJIUzI1NiJ9.eyJzdWIi…", "L2 [jwt]…"},
		{"L2 eyJhbGc…", "L2 [jwt]…"},
		{"L2 eyJhbGc" + long + "…", "L2 [jwt]…"},
		{"eyJ…abcdefg…", "…[jwt]…"},
		{"eyJ…" + long + "…", "…[jwt]…"},
		{"eyJ…Il19.SIGsecret tail", "…[jwt] tail"},
		{"eyJ…Il19.SIGsecret.", "…[jwt]."},
		{`eyJ…Il19.SIG","n":1}`, `…[jwt]","n":1}`},
		{"L1 token eyJhbGc…", "L1 token [jwt]…"},
		// A URL's authority: the first piece (with a ':'), a middle one,
		// the last one.
		{"L4 https://admin:URLPW…", "L4 https://[userinfo]…"},
		{"L4 https://admin:" + long + "…", "L4 https://[userinfo]…"},
		{"https://…URLPW…", "https://…[userinfo]…"},
		{"https://…URLPW@db.example/x", "https://…[userinfo]@db.example/x"},
		{"x postgres://…" + long + "@db:5432/app", "x postgres://…[userinfo]@db:5432/app"},
		// Not a cut: kept.
		{"see https://example.com… for more", "see https://example.com… for more"},
		{"L4 https://longusername…", "L4 https://longusername…"},
		{"eyJ is how base64 JSON starts…", "eyJ is how base64 JSON starts…"},
		{"https://db.example/a…", "https://db.example/a…"},
	} {
		got := DefaultSanitizer().String(tc.in)
		if got != tc.want {
			t.Errorf("%.60q: got %q, want %q", tc.in, got, tc.want)
		}
		if again := DefaultSanitizer().String(got); again != got {
			t.Errorf("%.60q: masked twice %q, once %q", tc.in, again, got)
		}
	}
}

// A starting plugin's stderr quoted in an error: a JWT longer than a piece
// is masked in every piece, as in the log.
func TestSanitizedTailLongJWT(t *testing.T) {
	t.Parallel()
	jwt := "eyJhbGciOiJIUzI1NiJ9.eyJ" + strings.Repeat("Z3JvdXBz", 1500) + ".SIGjwtsecretsignature0123456789"
	tail := &SanitizedTail{Max: 1 << 20}
	if _, err := tail.Write([]byte("token " + jwt + " end\n")); err != nil {
		t.Fatal(err)
	}
	got := tail.String()
	if strings.Contains(got, "Z3JvdXBzZ3JvdXBz") || strings.Contains(got, "SIGjwtsecret") {
		t.Fatalf("the tail shows the JWT: %.200q", got)
	}
	if want := "token [jwt]…\n…[jwt]…\n…[jwt] end"; got != want {
		t.Fatalf("tail %q, want %q", got, want)
	}
}
