package main

import (
	"fmt"
	"strings"
	"testing"
)

// A line longer than maxLineBytes is forwarded in pieces of at most
// maxLineBytes, cut between words, whatever size the writes have (a pipe
// hands over 32 KiB at a time): the tester's token just past the first 32
// KiB is forwarded whole, in one piece. The kept output is unchanged.
func TestOutputSplitsLongLinesBetweenWords(t *testing.T) {
	token := "gh" + "p_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
	line := strings.Repeat("x", 32760) + " " + token + " tail"
	for _, chunk := range []int{32 << 10, 4096, 1000, len(line) + 1} {
		var got []string
		o := newOutput(1<<20, func(l string) { got = append(got, l) })
		in := line + "\nnext\n"
		for len(in) > 0 {
			n := min(chunk, len(in))
			if _, err := o.Write([]byte(in[:n])); err != nil {
				t.Fatal(err)
			}
			in = in[n:]
		}
		o.Flush()
		if strings.Join(got, "") != line+"next" || got[len(got)-1] != "next" {
			t.Fatalf("writes of %d: pieces do not add up to the output", chunk)
		}
		whole := 0
		for _, p := range got {
			if len(p) > maxLineBytes {
				t.Fatalf("writes of %d: piece of %d bytes", chunk, len(p))
			}
			if strings.Contains(p, token) {
				whole++
			} else if strings.Contains(p, token[:6]) || strings.Contains(p, token[len(token)-6:]) {
				t.Fatalf("writes of %d: the token is cut: %q", chunk, p[max(0, len(p)-60):])
			}
		}
		if whole != 1 {
			t.Fatalf("writes of %d: the token is in %d pieces whole, want 1", chunk, whole)
		}
		if o.String() != line+"\nnext\n" {
			t.Fatalf("writes of %d: kept output changed", chunk)
		}
	}
}

// Output cut at its limit is cut between words: a token or a URL's
// password the limit falls in is dropped whole, from the kept output and
// from the lines forwarded, whatever size the writes have, and the note
// counts every byte dropped (attack 14, K15: "ghp_aBcDeFgHiJkLmNoP" and
// "postgres://bob:VERYS" were stored and logged unmasked).
func TestOutputCutAtTheLimitDropsAPartialWord(t *testing.T) {
	const limit = 64 << 10
	head := strings.Repeat("f", 65515)
	for _, secret := range []string{"gh" + "p_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 tail", "postgres://bob:VERYSECRETPASSWORD123@db.internal:5432/app"} {
		in := head + "\n" + secret + "\nmore after the limit\n"
		for _, chunk := range []int{len(in), 32 << 10, 4096, 7, 1} {
			var lines []string
			o := newOutput(limit, func(l string) { lines = append(lines, l) })
			for rest := in; len(rest) > 0; {
				n := min(chunk, len(rest))
				if _, err := o.Write([]byte(rest[:n])); err != nil {
					t.Fatal(err)
				}
				rest = rest[n:]
			}
			o.Flush()
			want := head + fmt.Sprintf("\n[truncated %d bytes]", len(in)-len(head))
			if got := o.String(); got != want {
				t.Fatalf("%.10s… in writes of %d: output ends %q, want %q", secret, chunk, got[max(0, len(got)-60):], want[len(want)-60:])
			}
			for _, l := range lines {
				if strings.Contains(l, secret[:6]) {
					t.Fatalf("%.10s… in writes of %d: forwarded %q", secret, chunk, l)
				}
			}
		}
	}
}
