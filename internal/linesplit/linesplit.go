// Package linesplit chooses where to cut a line of text that is too long
// for one log record, so that the runner's sanitizer, which sees each
// record on its own, still recognises every secret: a cut never falls
// inside a word (a token, an address, a key), nor between the parts of
// what the sanitizer reads across spaces: a key and its value
// ("password: x", "secret = x"), an authentication scheme and its
// credentials ("Bearer x"), groups of digits (a card, an IBAN, a phone
// number: "4111 1111 1111 1111", "DE89 3704", "+49 30 1234"), short groups
// of letters and digits (an IBAN's "WEST 1234"), and a PEM BEGIN or END
// line.
//
// The cut goes, by preference: at the start of a word after whitespace,
// then after a ',', ';' or '&' (minified JSON, query strings), each within
// the second half of the limit; failing both (one word longer than half the
// limit), at the limit, on a UTF-8 character boundary. A quoted value that
// holds spaces may still be cut in two.
//
// A cut inside a value (one word longer than the limit, "password=" and
// 6000 more bytes; a quoted value cut after a ','), would leave the next
// piece a bare tail the sanitizer cannot tell from other text. Rest starts
// that piece with the value's key again and "…" ("password=…AAAA"), so it
// is masked like the first.
//
// It is used by the shell plugin (its command's output lines), the plugin
// host (a plugin's stray stdout and stderr) and the Go SDK (a log record
// over its size limit).
package linesplit

// Cut returns the length of the first piece of s when s must be cut into
// pieces of at most limit bytes: a number in (0, limit], or len(s) if s fits.
func Cut[T ~string | ~[]byte](s T, limit int) int {
	if len(s) <= limit {
		return len(s)
	}
	if limit < 2 {
		return max(limit, 1)
	}
	lo := limit / 2
	for p := limit; p > lo; p-- {
		if space(s[p-1]) && !space(s[p]) && safeBetweenWords(s, p) {
			return p
		}
	}
	for p := limit; p > lo; p-- {
		if c := s[p-1]; (c == ',' || c == ';' || c == '&') && !space(s[p]) && !pemMarkerAt(s, p) {
			return p
		}
	}
	p := limit
	for p > max(limit-3, 1) && s[p]&0xC0 == 0x80 { // not inside a UTF-8 sequence
		p--
	}
	return p
}

// Rest returns what follows a cut of s at n (see Cut): s[n:], preceded,
// when the cut falls inside the value of a key (key=value, key: value, an
// auth scheme and its credentials), by that key, its separator and "…".
// It reuses s's storage when nothing is carried.
func Rest(s []byte, n int) []byte {
	c := carry(s, n)
	if c == "" {
		return append(s[:0], s[n:]...)
	}
	out := make([]byte, 0, len(c)+len(s)-n)
	return append(append(out, c...), s[n:]...)
}

// Continued marks a piece that continues the value of the key before it.
const Continued = "…"

// maxCarry bounds the key carried into the next piece; the sanitizer
// ignores longer keys anyway.
const maxCarry = 128

// carry returns the key to repeat before s[n:] (see Rest), or "".
func carry[T ~string | ~[]byte](s T, n int) string {
	if n <= 0 || n >= len(s) || space(s[n-1]) {
		return "" // between words, or nothing left
	}
	ws := n // the start of the word the cut falls in
	for ws > 0 && !space(s[ws-1]) {
		ws--
	}
	// key=value, "key":"value", key:value within the word: the first
	// separator whose value runs to the cut.
	for p := ws; p < n; p++ {
		if s[p] != '=' && s[p] != ':' {
			continue
		}
		ks := keyStart(s, ws, p)
		if ks < 0 {
			continue
		}
		v := p + 1
		if v < n && (s[v] == '=' || s[v] == '>') {
			v++ // ":=", "=>"
		}
		if end, ok := valueRunsTo(s, v, n); ok {
			return bounded(s, ks, end)
		}
	}
	// The word is the value of a key before it: "password: <word>",
	// "secret = <word>", "Bearer <word>", "Authorization: Basic <word>".
	start := -1
	pe := ws
	for words := 0; words < 3; words++ {
		for pe > 0 && space(s[pe-1]) {
			pe--
		}
		ps := pe
		for ps > 0 && !space(s[ps-1]) {
			ps--
		}
		if ps == pe {
			break
		}
		last := s[pe-1]
		switch {
		case last == ':' || last == '=':
			start = ps
			if pe-ps == 1 { // "secret = x": the key is the word before
				for ps > 0 && space(s[ps-1]) {
					ps--
				}
				ks := ps
				for ks > 0 && !space(s[ks-1]) {
					ks--
				}
				if ks < ps {
					start = ks
				}
			}
		case authScheme(s, ps, pe) && start < 0:
			start = ps
			pe = ps
			continue // and its key, if there is one
		}
		break
	}
	if start < 0 {
		return ""
	}
	if v := ws; v < n && (s[v] == '"' || s[v] == '\'') {
		return bounded(s, start, v+1)
	}
	return bounded(s, start, ws)
}

// keyStart returns the start of the key that ends at the separator s[p]
// (key chars, in optional quotes), not before ws, or -1.
func keyStart[T ~string | ~[]byte](s T, ws, p int) int {
	k := p
	if k > ws && (s[k-1] == '"' || s[k-1] == '\'') {
		k--
		if k > ws && s[k-1] == '\\' {
			k--
		}
	}
	ke := k
	for k > ws && keyByte(s[k-1]) {
		k--
	}
	if k == ke {
		return -1
	}
	if k > ws && (s[k-1] == '"' || s[k-1] == '\'') {
		k--
		if k > ws && s[k-1] == '\\' {
			k--
		}
	}
	return k
}

// valueRunsTo reports whether the value starting at s[v] runs at least to
// s[n] (unquoted: no delimiter before it; quoted: no closing quote), and
// where the carried part of it ends: after its opening quote.
func valueRunsTo[T ~string | ~[]byte](s T, v, n int) (int, bool) {
	if v < n && s[v] == '\\' && v+1 < n && s[v+1] == '"' {
		for k := v + 2; k+1 < n; k++ {
			if s[k] == '\\' && s[k+1] == '"' {
				return 0, false
			}
		}
		return v + 2, true
	}
	if v < n && (s[v] == '"' || s[v] == '\'') {
		for k := v + 1; k < n; k++ {
			switch s[k] {
			case s[v]:
				return 0, false
			case '\\':
				k++
			}
		}
		return v + 1, true
	}
	for k := v; k < n; k++ {
		switch s[k] {
		case '&', ',', ';', ')', ']', '}', '<', '>', '"', '\'', '`':
			return 0, false
		}
	}
	return v, true
}

func keyByte(c byte) bool {
	return isDigit(c) || 'a' <= c|0x20 && c|0x20 <= 'z' || c == '_' || c == '-' || c == '.'
}

// bounded returns s[a:b] and the continuation mark, or "" if that is longer
// than maxCarry.
func bounded[T ~string | ~[]byte](s T, a, b int) string {
	if b-a > maxCarry {
		return ""
	}
	return string(s[a:b]) + Continued
}

func space(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// safeBetweenWords reports whether s may be cut at p, the start of a word
// after whitespace.
func safeBetweenWords[T ~string | ~[]byte](s T, p int) bool {
	pe := p // end of the previous word
	for pe > 0 && space(s[pe-1]) {
		pe--
	}
	if pe == 0 {
		return false // nothing before: no progress
	}
	ps := pe
	for ps > 0 && !space(s[ps-1]) {
		ps--
	}
	ne := p
	for ne < len(s) && !space(s[ne]) {
		ne++
	}
	last, first := s[pe-1], s[p]
	switch {
	case last == ':' || last == '=' || first == ':' || first == '=':
		return false // key and value
	case (isDigit(last) || last == ')') && (isDigit(first) || first == '('):
		return false // groups of digits
	case pe-ps <= 4 && ne-p <= 4 && alnum(s, ps, pe) && alnum(s, p, ne) && (hasDigit(s, ps, pe) || hasDigit(s, p, ne)):
		return false // short groups of an IBAN
	case authScheme(s, ps, pe):
		return false // scheme and credentials
	}
	return !pemMarkerAt(s, p)
}

// pemMarkerAt reports whether p is inside a "-----BEGIN ...-----" or
// "-----END ...-----" line.
func pemMarkerAt[T ~string | ~[]byte](s T, p int) bool {
	for k := p - 1; k >= 4 && k >= p-80; k-- {
		if s[k] != '-' || s[k-1] != '-' || s[k-2] != '-' || s[k-3] != '-' || s[k-4] != '-' {
			continue
		}
		// Five dashes ending at k: a marker's opening ones if a word
		// follows ("-----BEGIN"), its closing ones otherwise.
		return k+1 < len(s) && (s[k+1] == 'B' || s[k+1] == 'E')
	}
	return false
}

func isDigit(c byte) bool { return '0' <= c && c <= '9' }

func alnum[T ~string | ~[]byte](s T, a, b int) bool {
	for k := a; k < b; k++ {
		c := s[k]
		if !isDigit(c) && !('a' <= c|0x20 && c|0x20 <= 'z') {
			return false
		}
	}
	return a < b
}

func hasDigit[T ~string | ~[]byte](s T, a, b int) bool {
	for k := a; k < b; k++ {
		if isDigit(s[k]) {
			return true
		}
	}
	return false
}

// authSchemes are the HTTP authentication schemes the sanitizer knows
// (observability's authSchemes), lower case.
var authSchemes = []string{
	"basic", "bearer", "digest", "dpop", "negotiate", "ntlm", "token", "hoba",
	"mutual", "vapid", "scram-sha-1", "scram-sha-256", "aws4-hmac-sha256",
}

// authScheme reports whether s[a:b] is an authentication scheme, in any
// case.
func authScheme[T ~string | ~[]byte](s T, a, b int) bool {
	if b-a < 4 || b-a > 16 {
		return false
	}
	for _, w := range authSchemes {
		if len(w) != b-a {
			continue
		}
		k := 0
		for k < len(w) && s[a+k]|0x20 == w[k] {
			k++
		}
		if k == len(w) {
			return true
		}
	}
	return false
}
