package oneline_test

import (
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/pacerun/pacer/internal/oneline"
)

func TestEscape(t *testing.T) {
	for _, tc := range []struct{ in, want string }{
		{"1.0.0", "1.0.0"},
		{"héllo, 世界 \\n", "héllo, 世界 \\n"},
		{"1.0\nshell  up  -  9.9.9\t1", `1.0\nshell  up  -  9.9.9\t1`},
		{"RED\rFAKE", `RED\rFAKE`},
		{"exec\x1b[31mRED\x1b]0;title\x07", `exec\x1b[31mRED\x1b]0;title\x07`},
		{"del\x7f c1\u0085 nul\x00", `del\x7f c1\u0085 nul\x00`},
		{"abc\u202Efed", `abc\u202Efed`},
		{"bad\xffutf8 \uFFFD", `bad\xffutf8 ` + "\uFFFD"},
		{"\x9e\t", `\x9e\t`},
	} {
		if got := oneline.Escape(tc.in); got != tc.want {
			t.Errorf("Escape(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
}

// Whatever goes in, what comes out has no control character, no bidi
// override and no invalid UTF-8.
func FuzzEscape(f *testing.F) {
	f.Add("1.0\nx\x1b[31m\r\t\u202e\xff")
	f.Add("\x9e\t")
	f.Fuzz(func(t *testing.T, s string) {
		out := oneline.Escape(s)
		if !strings.ContainsFunc(s, func(r rune) bool { return r < 0x20 || r >= 0x7f }) && out != s {
			t.Fatalf("plain ASCII %q changed to %q", s, out)
		}
		if !utf8.ValidString(out) {
			t.Fatalf("Escape(%q) = %q, not UTF-8", s, out)
		}
		for _, r := range out {
			if unicode.IsControl(r) || (0x202A <= r && r <= 0x202E) || (0x2066 <= r && r <= 0x2069) {
				t.Fatalf("Escape(%q) = %q keeps %U", s, out, r)
			}
		}
	})
}
