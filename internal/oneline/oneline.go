// Package oneline makes text that someone else wrote safe to show as one
// line, or one cell of a table, on a terminal: a plugin's version, a task's
// error, a replica's note. Such text may hold a newline or a tab that forges
// a row or a column, a carriage return that overwrites what came before, or
// an escape sequence that the terminal obeys. Escape writes every such
// character as a visible escape instead ("\n", "\x1b"), so that the reader
// sees it and the layout holds.
package oneline

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Escape returns s with each control character (C0, DEL, C1) and each
// bidirectional formatting character (which reorders what follows it on
// screen) written as a Go escape (\n, \r, \t, \xNN or \uNNNN), and each
// byte that is not UTF-8 as \xNN. A backslash stays as it is: the result is
// for reading, not for unquoting. Text without such characters comes back
// unchanged.
func Escape(s string) string {
	i := firstUnsafe(s)
	if i == len(s) {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + 8)
	b.WriteString(s[:i])
	for i < len(s) {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r < 0x80 && unsafeRune(r):
			fmt.Fprintf(&b, `\x%02x`, r)
		case unsafeRune(r):
			fmt.Fprintf(&b, `\u%04X`, r)
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	return b.String()
}

// firstUnsafe is the index of the first character of s that Escape
// rewrites, or len(s).
func firstUnsafe(s string) int {
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && size == 1 || unsafeRune(r) {
			return i
		}
		i += size
	}
	return len(s)
}

// unsafeRune reports whether r is a control or bidirectional formatting
// character.
func unsafeRune(r rune) bool {
	if unicode.IsControl(r) {
		return true
	}
	switch {
	case r == 0x061C, r == 0x200E, r == 0x200F, // ALM, LRM, RLM
		0x202A <= r && r <= 0x202E, // LRE, RLE, PDF, LRO, RLO
		0x2066 <= r && r <= 0x2069: // LRI, RLI, FSI, PDI
		return true
	}
	return false
}
