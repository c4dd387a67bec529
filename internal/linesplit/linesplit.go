// Package linesplit chooses where to cut a line of text that is too long
// for one log record, so that the runner's sanitizer, which sees each
// record on its own, still recognises every secret: a cut never falls
// inside a word (a token, an address, a key), nor between the parts of
// what the sanitizer reads across spaces: a key and its value
// ("password: x", "secret = x", "password<TAB>x"), a command-line flag
// and its argument ("--token x"), an authentication scheme and its
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
// A word the sanitizer knows by its shape alone, a JWT or a URL with
// user-info, it recognises only whole: cut inside, neither piece has the
// shape (an 8 KiB JWT with many claims, a password of 5,000 bytes in
// "https://admin:…@db"). So a cut inside a JWT (a run of base64url and
// dots from "eyJ") or inside a URL's authority before its '@' is marked on
// both sides: Head ends the first piece with "…", and Rest starts the next
// with "eyJ…" or the URL's scheme and "://…". The sanitizer masks a JWT or
// an authority glued to such a mark (observability: "[jwt]…", "…[jwt]",
// "https://[userinfo]…"), so every piece of one is masked, however long it
// is; no piece grows for it (Cut leaves room for the mark).
//
// It is used by the shell plugin (its command's output lines), the plugin
// host (a plugin's stray stdout and stderr), observability's SanitizedTail
// and the Go SDK (a log record over its size limit): each emits Head(s, n)
// for n = Cut(s, limit), then goes on with Rest(s, n).
//
// KeepWords chooses where output cut at its size limit ends (the shell
// plugin's 64 KiB, the http plugin's max_response_bytes, the 64 KiB of
// output a run record keeps): never inside a word, whose kept part would
// escape the sanitizer.
package linesplit

// Cut returns the length of the first piece of s when s must be cut into
// pieces of at most limit bytes: a number in (0, limit], or len(s) if s fits.
// When it cuts inside a JWT or a URL's authority, it leaves room for the
// mark Head adds: Head(s, Cut(s, limit)) is at most limit bytes too (for a
// limit over len(Continued)).
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
		if c := s[p-1]; (c == ',' || c == ';' || c == '&') && !space(s[p]) && !pemMarkerAt(s, p) &&
			(p <= limit-len(Continued) || shapeAt(s, p) == noShape) { // room for Head's mark
			return p
		}
	}
	p := charStart(s, limit)
	if limit > len(Continued) && p > limit-len(Continued) && shapeAt(s, p) != noShape {
		p = charStart(s, limit-len(Continued)) // room for Head's mark
	}
	return p
}

// charStart returns p, or up to 3 bytes before it, so as not to cut inside
// a UTF-8 sequence (but not below 1).
func charStart[T ~string | ~[]byte](s T, p int) int {
	for e := p; p > max(e-3, 1) && s[p]&0xC0 == 0x80; {
		p--
	}
	return p
}

// Head returns the first piece of s for a cut at n (see Cut): s[:n], and
// Continued after it when the cut falls inside a JWT or inside a URL's
// authority, so that the sanitizer masks what the piece holds of it. It
// reuses s's storage when nothing is added.
func Head[T ~string | ~[]byte](s T, n int) T {
	if shapeAt(s, n) == noShape {
		return s[:n]
	}
	b := make([]byte, 0, n+len(Continued))
	b = append(b, s[:n]...)
	return T(append(b, Continued...))
}

// Rest returns what follows a cut of s at n (see Cut): s[n:], preceded,
// when the cut falls inside the value of a key (key=value, key: value, an
// auth scheme and its credentials), by that key, its separator and "…".
// It reuses s's storage when nothing is carried. It is shorter than s
// (nothing is carried after a piece no longer than the carry), so cutting
// a line piece by piece ends.
func Rest(s []byte, n int) []byte {
	c := carry(s, n)
	if c == "" || len(c) >= n {
		return append(s[:0], s[n:]...)
	}
	out := make([]byte, 0, len(c)+len(s)-n)
	return append(append(out, c...), s[n:]...)
}

// Split cuts s into pieces of at most limit bytes with Cut, Head and Rest.
func Split(s string, limit int) []string {
	if len(s) <= limit {
		return []string{s}
	}
	var out []string
	b := []byte(s)
	for len(b) > limit {
		n := Cut(b, limit)
		out = append(out, string(Head(b, n)))
		b = Rest(b, n)
	}
	return append(out, string(b))
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
	switch shapeAt(s, n) {
	case jwt:
		return jwtCarry
	case authority:
		a := n // the authority's start, after "://"
		for !authEnd(s[a-1]) {
			a--
		}
		sc := a - 3 // the scheme's start
		for sc > max(a-3-maxScheme, 0) && schemeByte(s[sc-1]) {
			sc--
		}
		return string(s[sc:a]) + Continued
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
	case s[ps] == '-' && pe-ps > 1 && first != '-':
		return false // a flag and its argument ("--token x")
	case tabBetween(s, pe, p):
		return false // a key and its value separated by a tab
	}
	return !pemMarkerAt(s, p)
}

// tabBetween reports whether s[a:b], white space, holds a tab.
func tabBetween[T ~string | ~[]byte](s T, a, b int) bool {
	for i := a; i < b; i++ {
		if s[i] == '\t' {
			return true
		}
	}
	return false
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

// The shapes a cut can fall inside that the sanitizer recognises only
// whole (see the package doc).
type shape int

const (
	noShape   shape = iota
	jwt             // a run of base64url and dots from "eyJ"
	authority       // a URL's authority, before any '@'
)

// jwtCarry starts a piece that continues a JWT.
const jwtCarry = "eyJ" + Continued

// maxScheme bounds the URL scheme carried into the next piece; the
// sanitizer needs only its last character.
const maxScheme = 32

// shapeAt reports which shape, if any, a cut of s at n falls inside: the
// bytes on both sides of it belong to one JWT or one URL authority. Rest's
// marks count: a run after "eyJ…" continues a JWT, and an authority may
// start with "…".
func shapeAt[T ~string | ~[]byte](s T, n int) shape {
	if n <= 0 || n >= len(s) {
		return noShape
	}
	if jwtByte(s[n-1]) && jwtByte(s[n]) {
		r := n // the run's start
		for r > 0 && jwtByte(s[r-1]) {
			r--
		}
		if r >= len(jwtCarry) && string(s[r-len(jwtCarry):r]) == jwtCarry {
			return jwt
		}
		// "eyJ" at the start of the run or of one of its segments, as
		// the sanitizer finds a JWT.
		for k := r; k+3 <= n; k++ {
			if (k == r || s[k-1] == '.') && s[k] == 'e' && s[k+1] == 'y' && s[k+2] == 'J' {
				return jwt
			}
		}
	}
	if authEnd(s[n-1]) || authEnd(s[n]) {
		return noShape
	}
	a := n
	for a > 0 && !authEnd(s[a-1]) {
		if s[a-1] == '@' {
			return noShape // the user-info is whole before the cut
		}
		a--
	}
	if a >= 4 && s[a-1] == '/' && s[a-2] == '/' && s[a-3] == ':' && schemeByte(s[a-4]) {
		return authority
	}
	return noShape
}

// jwtByte reports whether c may be part of a JWT: base64url or a dot.
func jwtByte(c byte) bool {
	return isDigit(c) || 'a' <= c|0x20 && c|0x20 <= 'z' || c == '_' || c == '-' || c == '.'
}

// authEnd reports whether c ends a URL authority (observability's
// clAuthEnd).
func authEnd(c byte) bool {
	return c <= ' ' || c == 0x7f || c == '/' || c == '?' || c == '#' || c == '"' || c == '\'' || c == '`' || c == '<' || c == '>' || c == '\\'
}

// schemeByte reports whether c may be part of a URL scheme.
func schemeByte(c byte) bool {
	return isDigit(c) || 'a' <= c|0x20 && c|0x20 <= 'z' || c == '+' || c == '.' || c == '-'
}

// MaxWordDropped bounds how much of a last, partial word KeepWords drops.
const MaxWordDropped = 4 << 10

// KeepWords returns how many of the first n bytes of s to keep when output
// is cut at a size limit of n bytes and the rest dropped (s holds at least
// the first byte dropped, if there is one). A cut inside a word would keep
// part of it, and a secret cut in two (a token, a URL's password) is no
// longer recognised by the sanitizer, which masks it by its whole shape;
// so the partial last word is dropped too, back to the whitespace before
// it, which is dropped with it. A cut between words (whitespace at either
// side) keeps n bytes. A last word longer than MaxWordDropped loses
// MaxWordDropped bytes, cut on a UTF-8 character boundary.
func KeepWords[T ~string | ~[]byte](s T, n int) int {
	if n >= len(s) {
		return len(s)
	}
	if n <= 0 || space(s[n]) || space(s[n-1]) {
		return max(n, 0)
	}
	for p := n - 1; p >= 0 && p >= n-MaxWordDropped; p-- {
		if space(s[p]) {
			return p
		}
	}
	p := max(n-MaxWordDropped, 0)
	for p > 0 && s[p]&0xC0 == 0x80 { // not inside a UTF-8 sequence
		p--
	}
	return p
}
