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
