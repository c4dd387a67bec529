package observability

import (
	"encoding/json"
	"fmt"
	"net/netip"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/pacerun/pacer/internal/linesplit"
)

// Pattern is an operator-supplied masking rule: every match of Regex becomes "[Name]".
type Pattern struct {
	Name  string // placeholder name: letters, digits, '_', '-' and '.'
	Regex string // RE2 syntax (package regexp); must not match the empty string
}

// SanitizerOptions configure a Sanitizer. The zero value gives the built-in
// masks only.
type SanitizerOptions struct {
	// RedactKeys are extra key names whose values are always redacted. Keys
	// are compared normalised: ASCII case is ignored and so are '_', '-' and
	// '.', so "api_key", "API-Key", "api.key" and "apiKey" are one key.
	// Unlike the built-in keys (which also match as suffixes, see
	// SensitiveKey), a RedactKey must match the whole key.
	RedactKeys []string
	// Patterns are extra masks, applied in order after the built-ins.
	Patterns []Pattern
	// TrustedKeys are slog attribute keys the logging handler never
	// sanitizes nor redacts (exact, case-sensitive match). nil means
	// DefaultTrustedKeys; an empty non-nil slice trusts nothing.
	TrustedKeys []string
}

// DefaultTrustedKeys are the slog attribute keys left untouched when
// SanitizerOptions.TrustedKeys is nil. remote_addr is the peer address of
// an API call in its audit line: an audit that cannot say who called is of
// no use, so it is kept (and it is the TCP peer, never text a caller sent).
var DefaultTrustedKeys = []string{"time", "level", "trace_id", "span_id", "fencing_token", "remote_addr"}

// Redacted is what the sanitizer writes in place of a value under a
// sensitive key (see SensitiveKey), and what other code writes in place of
// a value it must not show for the same reason.
const Redacted = "[redacted]"

// Placeholders written by the built-in masks.
const (
	phPrivateKey = "[private_key]"
	phUserinfo   = "[userinfo]"
	phJWT        = "[jwt]"
	phEmail      = "[email]"
	phCard       = "[card]"
	phIPv6       = "[ipv6]"
	phIPv4       = "[ipv4]"
	phBearer     = "Bearer [token]"
	phRedacted   = Redacted
)

// builtinPlaceholderNames are the names (without brackets) a value may
// already carry when it has been sanitized once; such values are left alone,
// which keeps String idempotent.
var builtinPlaceholderNames = append([]string{
	"private_key", "userinfo", "jwt", "email", "card", "ipv6", "ipv4", "token", "redacted",
}, secretPlaceholderNames...)

// builtinKeySuffixes are the normalised (lower-case, no '_', '-', '.') key
// endings that make a key sensitive.
var builtinKeySuffixes = []string{
	"password", "passwd", "passphrase", "secret", "token", "apikey",
	"privatekey", "secretkey", "secretaccesskey", "authorization", "cookie",
}

// authSchemes are HTTP authentication schemes (lower case). For a sensitive
// key whose value is "<scheme> <credentials>" only the credentials are
// replaced, so "Authorization: Basic dXNl" reads "Authorization: Basic [redacted]".
var authSchemes = []string{
	"basic", "bearer", "digest", "dpop", "negotiate", "ntlm", "token", "hoba",
	"mutual", "vapid", "scram-sha-1", "scram-sha-256", "aws4-hmac-sha256",
}

// Sanitizer masks personal data and secrets in text, replacing each with a
// typed placeholder so a reader still knows what was there. A Sanitizer is
// immutable after NewSanitizer and safe for concurrent use. A nil *Sanitizer
// behaves like one built from the zero SanitizerOptions, so a missing
// sanitizer never means unsanitized output.
//
// String applies these masks, in this order (each sees the output of the
// previous ones):
//
//  0. Percent-encoded words: a run of non-space bytes (up to 8 KiB) holding
//     an encoded '@', '=', ':', '+' or '%' (%40, %3D, %3A, %2B, %25) is
//     decoded (escapes of printable ASCII only; up to four times for text
//     encoded more than once) and, if the decoded word holds anything the
//     masks below take, replaced by the decoded word with its masks:
//     "next=%2Fcb%3Faccess_token%3Dabc" -> "next=/cb?access_token=[redacted]",
//     "ops%40example.com" -> "[email]". A word with nothing to mask is kept
//     encoded.
//  1. PEM private-key blocks, "-----BEGIN ... PRIVATE KEY-----" through the
//     matching END line -> [private_key]. Without an END line (within
//     64 KiB): the lines after the BEGIN line, up to 64 KiB; or, if key
//     material follows the BEGIN line on its line, the rest of that line up
//     to a quote; or, if anything else follows it (a quote, as in
//     private_key="-----BEGIN PRIVATE KEY-----"), the BEGIN line alone.
//     First, because the base64 body could otherwise be mistaken for other
//     things and only partly masked. Text that arrives line by line needs
//     PEMLines.
//  2. URL user-info, "scheme://user:pass@host" -> "scheme://[userinfo]@host".
//     Before e-mail, which would otherwise take "pass@host". In a piece of
//     a long line cut inside the authority (internal/linesplit marks the
//     cut with "…"), what the piece holds of it: "https://admin:pw…" ->
//     "https://[userinfo]…", "https://…pw@db" -> "https://…[userinfo]@db".
//  3. JWTs, three or more base64url segments, the first starting with "eyJ"
//     -> [jwt]; in a piece of a long line cut inside one, what the piece
//     holds of it: "eyJhbGci…" -> "[jwt]…", "eyJ…Il19.sig" -> "…[jwt]".
//  4. E-mail addresses -> [email].
//  5. IPv6 addresses, with optional %zone, validated by net/netip -> [ipv6].
//     Before IPv4 so "::ffff:10.0.0.1" is masked whole.
//  6. IPv4 addresses (octets <= 255), not part of a longer dotted-number run
//     such as "1.2.3.4.5" nor glued to a word such as "v1.2.3.4" -> [ipv4].
//     A port stays: "10.1.2.3:9464" -> "[ipv4]:9464".
//     Loopback and unspecified addresses (127.0.0.0/8, ::1, 0.0.0.0, ::) are
//     kept: they are not personal data, and operators need them.
//  7. In one pass, tokens recognised by their prefix alone and IBANs, not
//     glued to a word (shapes from gitleaks' rules): AWS access key IDs
//     (AKIA, ASIA, ABIA, ACCA, A3T + 16) -> [aws_key]; Google API keys (AIza
//     + 35) -> [google_api_key]; GitHub tokens (ghp_, gho_, ghu_, ghs_, ghr_
//     + 36 or more; github_pat_ + 30 or more of [A-Za-z0-9_] with a digit,
//     82 in a whole one) -> [github_token]; GitLab
//     tokens (glpat-, gldt-, glrt-, glptt-, glft-, glimt-, glagent-, gloas-,
//     glsoat-, glcbt-, glffct- + 20 or more) -> [gitlab_token]; Slack tokens
//     (xoxa-, xoxb-, xoxe-, xoxo-, xoxp-, xoxr-, xoxs-, xoxe.xoxb-,
//     xoxe.xoxp-, xapp- + 10 or more, with a digit) -> [slack_token]; Slack
//     webhook URLs ([https://]hooks.slack.com/services/, /workflows/ or
//     /triggers/ + 20 or more) -> [slack_webhook]; Stripe
//     secret and restricted keys (sk_ or rk_, then live_, test_ or prod_, +
//     10 to 99) -> [stripe_key]; npm tokens (npm_ + 36) -> [npm_token]; IBANs
//     of a registry country, compact or in groups of four separated by single
//     spaces, whose ISO 7064 mod-97 check holds (in lower or mixed case, with
//     the country's IBAN length too) -> [iban]. Before the cards,
//     whose mask could otherwise take the digits inside an IBAN, and before
//     the key/values and Bearer, so "token=ghp_..." keeps its type.
//  8. Phone numbers in international format: '+', a country code, 8 to 15
//     digits in all, in groups separated by single spaces or dashes, with
//     optional parenthesised groups ("+44 (0)20 7946 0958") -> [phone]. The
//     '+' must not follow a word, '+' or '.' (so "12:30:45+02:00" stays).
//  9. Payment-card numbers: 13-19 digits, optionally grouped by single spaces
//     or dashes (groups of at least 3 digits), starting with 2-6 (the
//     payment-card major industry identifiers), Luhn-valid, and bounded by
//     non-alphanumerics (not part of a word, hex ID, UUID or decimal number)
//     -> [card]. Within a space-separated run of numbers the longest valid
//     window is taken ("5 4111 1111 1111 1111 7" -> "5 [card] 7"); a
//     dash-joined token is a card only as a whole. After the addresses, so
//     "6000000200 2001:db8::1" cannot swallow the "2001" of an IPv6 address.
//     Numbers starting with 1 (epoch milliseconds and nanoseconds) are
//     never cards.
//  10. "Bearer <token>" (any case; the token runs to whitespace or a
//     delimiter) -> "Bearer [token]". Before the key/values so
//     "Authorization: Bearer x" keeps its type.
//     Then credentials after an auth scheme with no key in front (the
//     scheme capitalised and standing alone): quoted ones (Basic "x" ->
//     Basic "[redacted]"), and two or more auth-params after Digest,
//     AWS4-HMAC-SHA256, HOBA, Mutual, vapid or SCRAM (Digest username="u",
//     response="x" -> Digest [redacted]). A bare word after a scheme
//     ("Basic usage") stays.
//  11. Values of sensitive keys (see SensitiveKey) in free text: key=value,
//     key: value, "key": "value", 'key': 'value', \"key\":\"value\", Go's
//     map[key:value] and query strings (?token=abc&x=1); the key is kept and
//     the value becomes [redacted]. A quoted value runs to its closing quote
//     on its line (or the end of the line if there is none), a {...} or
//     [...] value to its closing bracket (or the end of its first line), an
//     unquoted value to whitespace or one of & , ; ) ] } < > and quotes.
//     The fencing token's keys are not sensitive (see SensitiveKey). For "<auth-scheme> <credentials>" only the credentials
//     are replaced ("Authorization: Basic [redacted]"). An unquoted
//     replacement after a JSON key is quoted ({"password":"[redacted]"}). The
//     typed classes above run first so a value that was already classified
//     keeps its type ("password=[email]", "token: [card]").
//  12. The operator Patterns, in order -> [Name]. They see the output of the
//     built-ins, so they should not match the placeholders.
//
// Secrets with no fixed shape and no key in front of them (a password on its
// own, an AWS secret access key without its name, a random API key) cannot
// be told from other text and are not masked.
//
// Text already sanitized is left as it is: String(String(x)) == String(x)
// (fuzzed, with an operator pattern). To keep that true, a placeholder
// counts as the word it replaced when deciding whether a neighbouring
// candidate stands alone, and a value that is already a placeholder is not
// redacted again.
type Sanitizer struct {
	redactKeys   map[string]struct{}
	patterns     []compiledPattern
	trusted      map[string]struct{}
	placeholders map[string]struct{} // names without brackets

	// withoutBareSecrets turns off the masks of sanitize_secrets.go and
	// sanitize_encoded.go, so a benchmark can measure them against the
	// sanitizer without them.
	withoutBareSecrets bool

	// foreign marks the Sanitizer of what plugins supply (plugin.go): no
	// trusted keys, and none of the exemptions for the runner's own
	// fields (a number under a fencing-token name, a generated ID under
	// an ID's name, the fencing token's names not being sensitive).
	foreign bool
	plugins *Sanitizer // s without the exemptions: forPlugins
}

type compiledPattern struct {
	repl string // "[Name]"
	re   *regexp.Regexp
}

var defaultSanitizer = sync.OnceValue(func() *Sanitizer {
	s, err := NewSanitizer(SanitizerOptions{})
	if err != nil {
		panic(err) // cannot happen: no operator input
	}
	return s
})

// DefaultSanitizer returns the Sanitizer with the built-in rules only (no
// operator patterns or redact keys): what a component given no sanitizer
// uses, so that leaving one out never lets secrets through. It is shared and
// safe for concurrent use.
func DefaultSanitizer() *Sanitizer { return defaultSanitizer() }

// NewSanitizer builds a Sanitizer. It fails when a pattern has an empty or
// ill-formed Name, an empty Regex, a Regex that does not compile, or a Regex
// that matches the empty string, or when a RedactKey is empty; the error
// names the bad entry, e.g.
// `sanitize pattern "ticket": error parsing regexp: missing closing ]: ...`.
func NewSanitizer(opts SanitizerOptions) (*Sanitizer, error) {
	s := &Sanitizer{
		redactKeys:   make(map[string]struct{}, len(opts.RedactKeys)),
		trusted:      make(map[string]struct{}),
		placeholders: make(map[string]struct{}, len(builtinPlaceholderNames)+len(opts.Patterns)),
	}
	for _, k := range opts.RedactKeys {
		c := canonicalKey(nil, k)
		if len(c) == 0 {
			return nil, fmt.Errorf("sanitize redact key %q: empty after normalisation", k)
		}
		s.redactKeys[string(c)] = struct{}{}
	}
	for _, n := range builtinPlaceholderNames {
		s.placeholders[n] = struct{}{}
	}
	for i, p := range opts.Patterns {
		switch {
		case p.Name == "":
			return nil, fmt.Errorf("sanitize pattern #%d (regex %q): empty name", i+1, p.Regex)
		case !validPatternName(p.Name):
			return nil, fmt.Errorf("sanitize pattern %q: name may only contain letters, digits, '_', '-' and '.'", p.Name)
		case p.Regex == "":
			return nil, fmt.Errorf("sanitize pattern %q: empty regex", p.Name)
		}
		re, err := regexp.Compile(p.Regex)
		if err != nil {
			return nil, fmt.Errorf("sanitize pattern %q: %w", p.Name, err)
		}
		if re.MatchString("") {
			return nil, fmt.Errorf("sanitize pattern %q: regex %q matches the empty string", p.Name, p.Regex)
		}
		s.patterns = append(s.patterns, compiledPattern{repl: "[" + p.Name + "]", re: re})
		s.placeholders[p.Name] = struct{}{}
	}
	trusted := opts.TrustedKeys
	if trusted == nil {
		trusted = DefaultTrustedKeys
	}
	for _, k := range trusted {
		s.trusted[k] = struct{}{}
	}
	s.plugins = s.newForPlugins()
	return s, nil
}

func validPatternName(n string) bool {
	if len(n) > 64 {
		return false
	}
	for i := 0; i < len(n); i++ {
		if charClass[n[i]]&clKey == 0 {
			return false
		}
	}
	return true
}

// shortString is the length up to which String pre-screens its input.
const shortString = 128

// String returns in with every secret and piece of personal data masked (see
// Sanitizer for the classes and their order). When nothing matches it
// returns in itself without allocating.
func (s *Sanitizer) String(in string) string {
	if s == nil {
		s = defaultSanitizer()
	}
	if in == "" {
		return in
	}
	if strings.IndexByte(in, 0x1b) >= 0 {
		in = stripSGR(in)
	}
	if !s.withoutBareSecrets && strings.IndexByte(in, '%') >= 0 {
		in = s.maskPercentEncoded(in)
	}
	out := in
	if len(in) <= shortString {
		// Short values (attribute values, map entries) are the common case:
		// one pass over the bytes decides which masks can apply at all.
		// Masks only remove text and add placeholders, so the input's
		// characters bound what later masks can see.
		var at, dash, jay, b, eq, plus, tab, lt, quote, cut bool
		var colons, dots, digits int
		for i := 0; i < len(in); i++ {
			switch c := in[i]; {
			case '0' <= c && c <= '9':
				digits++
			case c == ':':
				colons++
			case c == '.':
				dots++
			case c == '@':
				at = true
			case c == '-':
				dash = true
			case c == 'J':
				jay = true
			case c == 'b' || c == 'B':
				b = true
			case c == '=':
				eq = true
			case c == '+':
				plus = true
			case c == '\t':
				tab = true
			case c == '<':
				lt = true
			case c == '"' || c == '\'':
				quote = true
			case c == linesplit.Continued[0]:
				cut = true
			}
		}
		bare := !s.withoutBareSecrets
		if dash && len(in) >= 20 {
			out = maskPrivateKeys(out)
		}
		if (at || cut) && colons > 0 {
			out = maskURLUserinfo(out)
		}
		if jay && (dots >= 2 || cut) {
			out = maskJWTs(out)
		}
		if at {
			out = maskEmails(out)
		}
		if colons >= 2 {
			out = maskIPv6(out)
		}
		if dots >= 3 {
			out = maskIPv4(out)
		}
		if bare && len(in) >= minTokenBytes {
			out = maskPrefixed(out)
		}
		if bare && plus && digits >= minPhoneDigits {
			out = maskPhones(out)
		}
		if digits >= 13 {
			out = maskCards(out)
		}
		if b {
			out = s.maskBearer(out)
		}
		if eq || quote {
			out = s.maskAuthSchemes(out)
		}
		if colons > 0 || eq {
			out = s.maskKeyValues(out)
		}
		if dash || tab || lt {
			out = s.maskSpacedKeys(out)
		}
	} else {
		out = maskPrivateKeys(out)
		out = maskURLUserinfo(out)
		out = maskJWTs(out)
		out = maskEmails(out)
		out = maskIPv6(out)
		out = maskIPv4(out)
		if !s.withoutBareSecrets {
			out = maskPrefixed(out)
			out = maskPhones(out)
		}
		out = maskCards(out)
		out = s.maskBearer(out)
		out = s.maskAuthSchemes(out)
		out = s.maskKeyValues(out)
		out = s.maskSpacedKeys(out)
	}
	for i := range s.patterns {
		out = s.patterns[i].apply(out)
	}
	return out
}

// SensitiveKey reports whether values under key must be redacted. The key is
// normalised (ASCII lower case; '_', '-' and '.' dropped) and is sensitive
// when it ends with one of the built-in names password, passwd, passphrase,
// secret, token, apikey, privatekey, secretkey, secretaccesskey or
// authorization (so "db_password", "X-Api-Key", "clientSecret",
// "access_token", "refresh_token", "AWS_SECRET_ACCESS_KEY" and
// "Proxy-Authorization" are all sensitive; "token_count", "tokens" and
// "secret_name" are not), or when it equals one of the RedactKeys. The
// fencing token's own names, "fencing_token" and "PACER_FENCING_TOKEN"
// (normalised: fencingtoken, pacerfencingtoken), are not sensitive: the
// token is a revision number that guards writes, not a credential.
func (s *Sanitizer) SensitiveKey(key string) bool {
	if s == nil {
		s = defaultSanitizer()
	}
	if s.foreign && fencingTokenKey(key) {
		return true // a plugin's "fencing_token" is its own, maybe not a number
	}
	var buf [64]byte
	return s.sensitiveKey(key, &buf)
}

// sensitiveKey implements SensitiveKey; buf is scratch space.
func (s *Sanitizer) sensitiveKey(key string, buf *[64]byte) bool {
	for _, suf := range builtinKeySuffixes {
		if hasCanonicalSuffix(key, suf) && !fencingTokenKey(key) {
			return true
		}
	}
	if passKey(key) {
		return true
	}
	if len(s.redactKeys) == 0 {
		return false
	}
	k := canonicalKey(buf[:0], key)
	if len(k) == 0 {
		return false
	}
	_, ok := s.redactKeys[string(k)]
	return ok
}

// passKey reports whether key is "pass" or ends with it as a word of its
// own: "pass", "DB_PASS", "smtp-pass", "mail.pass", "dbPass"; not "bypass"
// nor "compass", where "pass" is only the end of another word.
func passKey(key string) bool {
	n := len(key)
	if n < 4 || !strings.EqualFold(key[n-4:], "pass") {
		return false
	}
	if n == 4 {
		return true
	}
	c := key[n-5]
	return c == '_' || c == '-' || c == '.' || key[n-4] == 'P' && 'a' <= c && c <= 'z'
}

// fencingTokenKey reports whether key names the fencing token
// (fencing_token, PACER_FENCING_TOKEN, pacer.fencing_token, fencingToken): a
// number every write of a run is guarded by, not a secret, and what an
// operator reads to follow a run across systems.
func fencingTokenKey(key string) bool {
	var buf [24]byte
	if len(key) > len(buf) {
		return false
	}
	switch string(canonicalKey(buf[:0], key)) {
	case "fencingtoken", "pacerfencingtoken":
		return true
	}
	return false
}

// hasCanonicalSuffix reports whether the normalised form of key ends with
// suf (which is already normalised), without building that form.
func hasCanonicalSuffix(key, suf string) bool {
	k := len(key)
	for j := len(suf) - 1; j >= 0; j-- {
		for k > 0 && (key[k-1] == '_' || key[k-1] == '-' || key[k-1] == '.') {
			k--
		}
		if k == 0 || key[k-1]|0x20 != suf[j] {
			return false
		}
		k--
	}
	return true
}

// canonicalKey appends the normalised form of key to dst.
func canonicalKey(dst []byte, key string) []byte {
	for i := 0; i < len(key); i++ {
		c := key[i]
		switch {
		case c == '_' || c == '-' || c == '.':
			continue
		case 'A' <= c && c <= 'Z':
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// Map returns a deep copy of m fit for storing: values under sensitive keys
// (see SensitiveKey) become "[redacted]", strings are passed through String,
// and nested maps and slices are walked. Map keys are sanitized too; if two
// keys collapse to the same placeholder the later ones (in sorted order of
// the original keys) get a "#2", "#3"... suffix so no value is lost.
//
// Values are handled as JSON-shaped data: strings and errors become
// sanitized strings (a named string type keeps its type); []byte stays
// []byte, other byte slices (json.RawMessage) become strings; numbers,
// booleans, nil, json.Number, time.Time and time.Duration are kept;
// map[string]any, map[string]string, []any, []string and []map[string]any
// are copied, keeping their types; other composite values (structs,
// pointers, other maps and slices) are converted through encoding/json (so
// json tags and MarshalJSON apply) and then sanitized, and values JSON cannot
// encode become their sanitized fmt "%+v" form. Nesting deeper than 64
// levels is replaced by "[truncated]".
func (s *Sanitizer) Map(m map[string]any) map[string]any {
	if s == nil {
		s = defaultSanitizer()
	}
	return s.mapDepth(m, 0)
}

const sanitizeMaxDepth = 64

func (s *Sanitizer) mapDepth(m map[string]any, depth int) map[string]any {
	return sanitizeMap(s, m, func(v any) any { return s.value(v, depth+1) }, func() any { return phRedacted })
}

// sanitizeMap copies m, redacting values under sensitive keys, converting the
// others with conv, and sanitizing the keys themselves.
func sanitizeMap[V any](s *Sanitizer, m map[string]V, conv func(V) V, redacted func() V) map[string]V {
	if m == nil {
		return nil
	}
	out := make(map[string]V, len(m))
	var moved []string // keys the sanitizer changes; placed after the others
	for k, v := range m {
		if s.String(k) != k {
			moved = append(moved, k)
			continue
		}
		if s.SensitiveKey(k) {
			out[k] = redacted()
		} else {
			out[k] = conv(v)
		}
	}
	slices.Sort(moved)
	for _, k := range moved {
		sk := s.String(k)
		nk := sk
		for n := 2; ; n++ {
			if _, taken := out[nk]; !taken {
				break
			}
			nk = fmt.Sprintf("%s#%d", sk, n)
		}
		if s.SensitiveKey(k) {
			out[nk] = redacted()
		} else {
			out[nk] = conv(m[k])
		}
	}
	return out
}

// value sanitizes one JSON-shaped value (see Map).
func (s *Sanitizer) value(v any, depth int) any {
	if depth > sanitizeMaxDepth {
		return "[truncated]"
	}
	switch t := v.(type) {
	case nil, bool, int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64,
		uintptr, float32, float64, complex64, complex128, json.Number, time.Time, time.Duration:
		return v
	case string:
		return s.String(t)
	case []byte:
		return []byte(s.String(string(t)))
	case error:
		return s.String(safeText(t.Error))
	case map[string]any:
		return s.mapDepth(t, depth)
	case map[string]string:
		return sanitizeMap(s, t, s.String, func() string { return phRedacted })
	case []any:
		out := make([]any, len(t))
		for i, e := range t {
			out[i] = s.value(e, depth+1)
		}
		return out
	case []string:
		out := make([]string, len(t))
		for i, e := range t {
			out[i] = s.String(e)
		}
		return out
	case []map[string]any:
		out := make([]map[string]any, len(t))
		for i, e := range t {
			out[i] = s.mapDepth(e, depth+1)
		}
		return out
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.String:
		return reflect.ValueOf(s.String(rv.String())).Convert(rv.Type()).Interface()
	case reflect.Bool, reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr,
		reflect.Float32, reflect.Float64, reflect.Complex64, reflect.Complex128:
		return v
	case reflect.Slice:
		if rv.Type().Elem().Kind() == reflect.Uint8 { // json.RawMessage and friends
			return s.String(string(rv.Bytes()))
		}
	}
	return s.viaJSON(v, depth)
}

// viaJSON sanitizes an arbitrary value by converting it to its JSON shape.
func (s *Sanitizer) viaJSON(v any, depth int) (out any) {
	defer func() {
		if r := recover(); r != nil {
			out = s.String(fmt.Sprintf("!PANIC: %v", r))
		}
	}()
	b, err := json.Marshal(v)
	if err != nil {
		return s.String(fmt.Sprintf("%+v", v))
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.UseNumber()
	var shaped any
	if err := dec.Decode(&shaped); err != nil {
		return s.String(fmt.Sprintf("%+v", v))
	}
	return s.value(shaped, depth)
}

// ---------------------------------------------------------------------------
// Character classes.

const (
	clDigit   uint16 = 1 << iota
	clAlpha          // ASCII letter
	clHex            // [0-9A-Fa-f]
	clKey            // [A-Za-z0-9_.-]: key names, zones, pattern names
	clB64URL         // [A-Za-z0-9_-]
	clLocal          // e-mail local part: [A-Za-z0-9._%+-] and non-ASCII
	clDomain         // e-mail domain: [A-Za-z0-9.-] and non-ASCII
	clValEnd         // ends an unquoted value
	clAuthEnd        // ends a URL authority
	clIP6            // [0-9A-Fa-f:.]
	clScheme         // URL scheme: [A-Za-z0-9+.-]
	clUpDigit        // [A-Z0-9]
	clDash           // '-'
	clUnder          // '_'
	clB64            // base64: [A-Za-z0-9+/=]
)

var charClass = func() (t [256]uint16) {
	for c := 0; c < 256; c++ {
		b := byte(c)
		isDigit := '0' <= b && b <= '9'
		isAlpha := 'a' <= b && b <= 'z' || 'A' <= b && b <= 'Z'
		alnum := isDigit || isAlpha
		var f uint16
		if isDigit {
			f |= clDigit
		}
		if isAlpha {
			f |= clAlpha
		}
		if isDigit || 'a' <= b && b <= 'f' || 'A' <= b && b <= 'F' {
			f |= clHex | clIP6
		}
		if alnum || b == '_' || b == '.' || b == '-' {
			f |= clKey
		}
		if alnum || b == '_' || b == '-' {
			f |= clB64URL
		}
		if alnum || b >= 0x80 || strings.IndexByte("._%+-", b) >= 0 {
			f |= clLocal
		}
		if alnum || b >= 0x80 || b == '.' || b == '-' {
			f |= clDomain
		}
		if b <= ' ' || b == 0x7f || strings.IndexByte("&,;\"'`)]}<>", b) >= 0 {
			f |= clValEnd
		}
		if b <= ' ' || b == 0x7f || strings.IndexByte("/?#\"'`<>\\", b) >= 0 {
			f |= clAuthEnd
		}
		if b == ':' || b == '.' {
			f |= clIP6
		}
		if alnum || b == '+' || b == '.' || b == '-' {
			f |= clScheme
		}
		if isDigit || 'A' <= b && b <= 'Z' {
			f |= clUpDigit
		}
		if b == '-' {
			f |= clDash
		}
		if b == '_' {
			f |= clUnder
		}
		if alnum || b == '+' || b == '/' || b == '=' {
			f |= clB64
		}
		t[c] = f
	}
	return t
}()

func isDigit(c byte) bool { return charClass[c]&clDigit != 0 }
func isAlnum(c byte) bool { return charClass[c]&(clDigit|clAlpha) != 0 }
func isWord(c byte) bool  { return c == '_' || isAlnum(c) }

// gluedLeft and gluedRight report whether c, just before or after a
// candidate, makes it part of a larger token. A placeholder counts as the
// word it replaced ("x::1" and "[card]::1" are both rejected), so masks that
// run later cannot turn a rejected candidate into an accepted one, which
// keeps String idempotent; "[::1]" and "ids[10.0.0.1]" still match.
func gluedLeft(c byte) bool  { return isWord(c) || c == ']' }
func gluedRight(c byte) bool { return isWord(c) || c == '[' }

// rewriter builds the output of one mask lazily: nothing is allocated until
// the first replacement.
type rewriter struct {
	src  string
	buf  []byte
	last int // end of the previous replacement in src
}

func (w *rewriter) replace(start, end int, repl string) {
	if w.buf == nil {
		w.buf = make([]byte, 0, len(w.src)+len(repl))
	}
	w.buf = append(w.buf, w.src[w.last:start]...)
	w.buf = append(w.buf, repl...)
	w.last = end
}

func (w *rewriter) result() string {
	if w.buf == nil {
		return w.src
	}
	w.buf = append(w.buf, w.src[w.last:]...)
	return string(w.buf)
}

// ---------------------------------------------------------------------------
// 1. PEM private keys.

// pemPrivateLine reports whether s[i:] starts with "-----<word> <LABEL>-----" where
// LABEL is a private-key label, and returns the index after the line.
func pemPrivateLine(s string, i int, word string) (int, bool) {
	p := i + 5 + len(word) + 1 // "-----" word " "
	if p > len(s) || s[i:i+5] != "-----" || s[i+5:p-1] != word || s[p-1] != ' ' {
		return 0, false
	}
	const maxLabel = 64
	j := strings.Index(s[p:min(len(s), p+maxLabel+5)], "-----")
	if j < 0 {
		return 0, false
	}
	label := s[p : p+j]
	for k := 0; k < len(label); k++ {
		c := label[k]
		if !('A' <= c && c <= 'Z' || isDigit(c) || c == ' ' || c == '-') {
			return 0, false
		}
	}
	if !strings.HasSuffix(label, "PRIVATE KEY") && !strings.HasSuffix(label, "PRIVATE KEY BLOCK") {
		return 0, false
	}
	return p + j + 5, true
}

// maxPEMBlock bounds a private-key block with no END line: what follows its
// BEGIN line is masked up to this many bytes (whole lines), the size of the
// largest keys in use (an RSA-16384 key in PKCS #8 is about 13 KiB of PEM;
// an OpenPGP secret key with subkeys a few tens), so that a BEGIN line
// printed on its own cannot hide the rest of a long output.
const maxPEMBlock = 64 << 10

func maskPrivateKeys(s string) string {
	out, _ := maskPrivateKeysOpen(s)
	return out
}

// maskPrivateKeysOpen is maskPrivateKeys that also reports whether the
// text ends inside a block: its last BEGIN line has no END line, nothing
// but key lines follow it, and the bound was not reached, so the next lines
// of the same stream are the key's too (see PEMLines).
func maskPrivateKeysOpen(s string) (string, bool) {
	i := strings.Index(s, "-----BEGIN ")
	if i < 0 {
		return s, false
	}
	w := rewriter{src: s}
	open := false
	for i >= 0 {
		next := i + 1
		if hdrEnd, ok := pemPrivateLine(s, i, "BEGIN"); ok {
			end, o := pemBlockEnd(s, i, hdrEnd)
			w.replace(i, end, phPrivateKey)
			next, open = end, o
		}
		j := strings.Index(s[next:], "-----BEGIN ")
		if j < 0 {
			break
		}
		i = next + j
	}
	return w.result(), open
}

// pemBlockEnd returns the end of the private-key block that starts at s[i]
// with a BEGIN line ending at hdrEnd: after its END line when there is one
// within maxPEMBlock. Without one, the block's extent depends on what
// follows the BEGIN line on its own line:
//
//   - nothing (the BEGIN line ends there): the lines after it, whole, up
//     to maxPEMBlock bytes from the BEGIN line, or the end of the text;
//     open reports that the text ended before the bound;
//   - key material on the same line (base64, or a JSON-escaped newline
//     \n): the rest of the line, up to a quote; open if that is the end
//     of the text (a long line cut in pieces inside the key);
//   - anything else (private_key="-----BEGIN PRIVATE KEY-----"): the
//     BEGIN line alone, which is a quoted marker, not a key.
func pemBlockEnd(s string, i, hdrEnd int) (end int, open bool) {
	limit := min(len(s), i+maxPEMBlock)
	for k := hdrEnd; k < limit; {
		j := strings.Index(s[k:limit], "-----END ")
		if j < 0 {
			break
		}
		if e, ok := pemPrivateLine(s, k+j, "END"); ok {
			return e, false
		}
		k += j + 1
	}
	r := hdrEnd
	for r < len(s) && (s[r] == ' ' || s[r] == '\t' || s[r] == '\r') {
		r++
	}
	switch {
	case r == len(s):
		return len(s), r-i < maxPEMBlock
	case s[r] == '\n':
		// Whole lines: s[r] is the newline before each.
		end = hdrEnd
		for r+1 < len(s) && s[r] == '\n' {
			le := len(s)
			if n := strings.IndexByte(s[r+1:], '\n'); n >= 0 {
				le = r + 1 + n
			}
			if le-i > maxPEMBlock {
				return end, false
			}
			end, r = le, le
		}
		return end, true // the text ended (a last newline is kept) within the bound
	case charClass[s[r]]&clB64 != 0 || s[r] == '\\':
		e := r
		for e < limit && s[e] != '\n' && s[e] != '"' && s[e] != '\'' && s[e] != '`' {
			e++
		}
		open = e == len(s) // the line was cut inside the key (see linesplit)
		for e > r && (s[e-1] == ' ' || s[e-1] == '\t' || s[e-1] == '\r') {
			e--
		}
		return e, open
	}
	return hdrEnd, false
}

// ---------------------------------------------------------------------------
// 2. URL user-info.

func maskURLUserinfo(s string) string {
	if strings.IndexByte(s, '@') < 0 {
		if strings.Contains(s, linesplit.Continued) {
			return maskSchemeUserinfo(s) // a piece of a long line, cut in an authority
		}
		return s
	}
	return maskBareUserinfo(maskSchemeUserinfo(s))
}

// maskSchemeUserinfo masks the user-info of URLs with a scheme. A long
// line's pieces (linesplit) mark a cut inside an authority with "…": the
// first piece ends with it ("https://admin:pw…"), the next starts the
// authority with it ("https://…pw@db"). Such an authority is masked up to
// its '@' or, with none, whole when it holds a ':' or continues one
// ("https://[userinfo]…", "https://…[userinfo]@db"): the password may be
// all of it.
func maskSchemeUserinfo(s string) string {
	i := strings.Index(s, "://")
	if i < 0 {
		return s
	}
	w := rewriter{src: s}
	for i >= 0 {
		a := i + 3
		e := a
		at := -1
		for e < len(s) && charClass[s[e]]&clAuthEnd == 0 {
			if s[e] == '@' {
				at = e
			}
			e++
		}
		if i > 0 && charClass[s[i-1]]&clScheme != 0 {
			cont := strings.HasPrefix(s[a:e], linesplit.Continued)
			lead := ""
			if cont {
				lead = linesplit.Continued
			}
			if at < 0 && e < len(s) && s[e] == '/' && passwordAt(s[a:e]) {
				// A password with a '/' (base64 makes them) ends the
				// authority early: its user-info runs to the '@' after it
				// (attack 32, S3: "postgres://app:Xy7/kQ9p@db/app").
				if at2 := slashedUserinfoAt(s, e); at2 > 0 {
					at, e = at2, at2
				}
			}
			switch {
			case at > a && s[a:at] != phUserinfo:
				w.replace(a, at, lead+phUserinfo)
			case at < 0 && strings.HasSuffix(s[a:e], linesplit.Continued) && e-a > len(linesplit.Continued):
				end := e - len(linesplit.Continued)
				if cont || strings.IndexByte(s[a:end], ':') >= 0 {
					w.replace(a, end, lead+phUserinfo)
				}
			case at < 0 && cont:
				w.replace(a, e, lead+phUserinfo)
			}
		}
		j := strings.Index(s[e:], "://")
		if j < 0 {
			break
		}
		i = e + j
	}
	return w.result()
}

// passwordAt reports whether auth, an authority cut short by a '/', is
// "user:" and the start of a password, not "host:port".
func passwordAt(auth string) bool {
	c := strings.IndexByte(auth, ':')
	if c < 0 || c == len(auth)-1 {
		return false
	}
	for i := c + 1; i < len(auth); i++ {
		if !isDigit(auth[i]) {
			return true
		}
	}
	return false
}

// slashedUserinfoAt returns the '@' that ends a user-info whose password
// holds a '/', looking from s[from], the '/': the first '@' before the end
// of the word (white space or a quote) with a host after it and no "://"
// before it; or -1.
func slashedUserinfoAt(s string, from int) int {
	for k := from; k < len(s); k++ {
		switch c := s[k]; {
		case c <= ' ' || c == 0x7f || c == '"' || c == '\'' || c == '`' || c == '<' || c == '>':
			return -1
		case c == '@':
			if k+1 < len(s) && (isAlnum(s[k+1]) || s[k+1] == '[') {
				return k
			}
			return -1
		case c == ':' && strings.HasPrefix(s[k:], "://"):
			return -1
		}
	}
	return -1
}

// maskBareUserinfo masks user-info without a scheme, "user:pass@host" (a
// DSN, an address given as host:port): a word (bounded by white space,
// quotes, brackets, '/', ',', ';', '=' or '@') with a ':' before the '@'
// and a host after it -> "[userinfo]@host". A word with no ':' is an e-mail
// address or ssh's user@host, left to the e-mail mask; so is
// "mailto:x@host".
func maskBareUserinfo(s string) string {
	at := strings.IndexByte(s, '@')
	if at < 0 || strings.IndexByte(s, ':') < 0 {
		return s
	}
	w := rewriter{src: s}
	for ; at >= 0; at = nextByte(s, '@', at+1) {
		if at+1 >= len(s) || !isAlnum(s[at+1]) && s[at+1] != '[' {
			continue // no host
		}
		start, colon := at, -1
		for start > 0 && !userinfoBound(s[start-1]) {
			start--
			if s[start] == ':' {
				colon = start
			}
		}
		if colon < 0 || colon == at-1 || strings.EqualFold(s[start:colon], "mailto") {
			continue // no ':' or no password after it
		}
		w.replace(start, at, phUserinfo)
	}
	return w.result()
}

// userinfoBound reports whether c ends a scheme-less user-info word, read
// backwards from its '@'.
func userinfoBound(c byte) bool {
	return c <= ' ' || c == 0x7f || strings.IndexByte("\"'`()[]{}<>/,;=@", c) >= 0
}

// nextByte is the index of c in s at or after from, or -1.
func nextByte(s string, c byte, from int) int {
	if i := strings.IndexByte(s[from:], c); i >= 0 {
		return from + i
	}
	return -1
}

// ---------------------------------------------------------------------------
// 3. JWTs.

// maskJWTs masks JWTs. A long line's pieces (linesplit) mark a cut inside
// one with "…": the first piece ends with it ("eyJhbGci…"), the next starts
// with "eyJ…" and the rest of the run; each part is masked, whatever its
// length and however many of its dots it holds ("[jwt]…", "…[jwt]").
func maskJWTs(s string) string {
	i := strings.Index(s, "eyJ")
	if i < 0 {
		return s
	}
	w := rewriter{src: s}
	for i >= 0 {
		next := i + 3
		if i == 0 || charClass[s[i-1]]&clB64URL == 0 {
			next = jwtRun(s, i+3)
			if e, lead, ok := cutJWT(s, i); ok {
				w.replace(i, e, lead+phJWT)
				next = e
			} else if e, ok := wholeJWT(s, i); ok {
				w.replace(i, e, phJWT)
				next = e
			}
		}
		j := strings.Index(s[next:], "eyJ")
		if j < 0 {
			break
		}
		i = next + j
	}
	return w.result()
}

// wholeJWT reports whether a JWT starts at s[i] ("eyJ"): three or more
// base64url segments, the first at least 10 bytes long; and where it ends.
func wholeJWT(s string, i int) (int, bool) {
	e := jwtRun(s, i)
	seg1 := e - i
	dots := 0
	seg2 := 0
	for e < len(s) && s[e] == '.' {
		e++
		dots++
		st := e
		e = jwtRun(s, e)
		if dots == 1 {
			seg2 = e - st
		}
	}
	if dots > 2 && s[e-1] == '.' { // sentence full stop, not a segment
		e--
		dots--
	}
	return e, seg1 >= 10 && seg2 > 0 && dots >= 2
}

// cutJWT reports whether a JWT that a long line's cut marks (see maskJWTs)
// starts at s[i] ("eyJ"), where its part ends (after the mark, if it ends
// with one), and what to write before the placeholder: "…" if the part
// continues a JWT.
func cutJWT(s string, i int) (end int, lead string, ok bool) {
	const mark = linesplit.Continued
	st := i
	if strings.HasPrefix(s[i+3:], mark) { // "eyJ…", carried by Rest
		st = i + 3 + len(mark)
		lead = mark
	}
	e := st
	for e < len(s) && (charClass[s[e]]&clB64URL != 0 || s[e] == '.') {
		e++
	}
	if strings.HasPrefix(s[e:], mark) { // cut again: Head's mark stays
		return e, lead, true
	}
	if lead == "" {
		return 0, "", false
	}
	if e > st && s[e-1] == '.' { // sentence full stop
		e--
	}
	return e, lead, true
}

// jwtRun returns the end of the base64url run starting at s[i].
func jwtRun(s string, i int) int {
	for i < len(s) && charClass[s[i]]&clB64URL != 0 {
		i++
	}
	return i
}

// ---------------------------------------------------------------------------
// 4. E-mail addresses.

func maskEmails(s string) string {
	i := strings.IndexByte(s, '@')
	if i < 0 {
		return s
	}
	w := rewriter{src: s}
	for i >= 0 {
		next := i + 1
		ls := i
		for ls > w.last && charClass[s[ls-1]]&clLocal != 0 {
			ls--
		}
		for ls < i && s[ls] == '.' {
			ls++
		}
		de := i + 1
		for de < len(s) && charClass[s[de]]&clDomain != 0 {
			de++
		}
		glued := ls > 0 && s[ls-1] == ']' || de < len(s) && s[de] == '[' // see gluedLeft
		for de > i+1 && (s[de-1] == '.' || s[de-1] == '-') {
			de--
		}
		if ls < i && !glued && validEmailDomain(s[i+1:de]) {
			w.replace(ls, de, phEmail)
			next = de
		}
		j := strings.IndexByte(s[next:], '@')
		if j < 0 {
			break
		}
		i = next + j
	}
	return w.result()
}

// validEmailDomain wants at least two non-empty labels and a top-level label
// of two or more letters (or non-ASCII, for IDNs).
func validEmailDomain(d string) bool {
	dot := strings.LastIndexByte(d, '.')
	if dot <= 0 || len(d)-dot-1 < 2 {
		return false
	}
	for k := dot + 1; k < len(d); k++ {
		if c := d[k]; charClass[c]&clAlpha == 0 && c < 0x80 {
			return false
		}
	}
	return d[0] != '.' && !strings.Contains(d, "..")
}

// ---------------------------------------------------------------------------
// 9. Payment cards (after the addresses, see Sanitizer).

type digitGroup struct{ start, end int }

func maskCards(s string) string {
	if len(s) < 13 {
		return s
	}
	w := rewriter{src: s}
	var gbuf [24]digitGroup
	i := 0
	for i < len(s) {
		// A card spans at least 13 bytes of one run (digits and single
		// separators between digits). Any such run starting in s[i:i+13]
		// covers s[i+12], so if that byte cannot be inside a run, skip.
		if p := i + 12; p < len(s) && !inDigitRun(s, p) {
			i = p + 1
			continue
		} else if p >= len(s) {
			break
		}
		if !isDigit(s[i]) {
			i++
			continue
		}
		// A run: digit groups joined by single spaces or dashes.
		groups := gbuf[:0]
		j := i
		for {
			st := j
			for j < len(s) && isDigit(s[j]) {
				j++
			}
			groups = append(groups, digitGroup{st, j})
			if j+1 < len(s) && (s[j] == ' ' || s[j] == '-') && isDigit(s[j+1]) {
				j++
				continue
			}
			break
		}
		start, end := i, j
		i = j
		// A group glued to a word or a decimal point ("x12", "3.14", "12a")
		// cannot be part of a card, nor can anything dash-joined to it.
		lo, hi := 0, len(groups)-1
		if start > 0 {
			if c := s[start-1]; gluedLeft(c) || c == '.' && start >= 2 && isDigit(s[start-2]) {
				lo = 1
			}
		}
		if end < len(s) {
			if c := s[end]; gluedRight(c) || c == '.' && end+1 < len(s) && isDigit(s[end+1]) {
				hi--
			}
		}
		// Try windows of whole groups, longest valid first. A window may
		// start or end inside the run only at a space: dash-joined groups
		// form one token (an ID, a UUID), which is a card only as a whole.
		for a := lo; a <= hi; {
			best := -1
			if c := s[groups[a].start]; '2' <= c && c <= '6' && (a == 0 || s[groups[a].start-1] == ' ') {
				digits := 0
				for b := a; b <= hi; b++ {
					gl := groups[b].end - groups[b].start
					if gl < 3 { // only whole runs of 13+ digits or groups of 3+
						break
					}
					digits += gl
					if digits > 19 {
						break
					}
					endsOK := b == len(groups)-1 || s[groups[b].end] == ' '
					if digits >= 13 && endsOK && luhn(s[groups[a].start:groups[b].end]) {
						best = b
					}
				}
			}
			if best < 0 {
				a++
				continue
			}
			w.replace(groups[a].start, groups[best].end, phCard)
			a = best + 1
		}
	}
	return w.result()
}

// inDigitRun reports whether s[p] can be inside a run of digit groups.
func inDigitRun(s string, p int) bool {
	c := s[p]
	if isDigit(c) {
		return true
	}
	return (c == ' ' || c == '-') && p > 0 && p+1 < len(s) && isDigit(s[p-1]) && isDigit(s[p+1])
}

// luhn checks the Luhn checksum of the digits in s (other bytes ignored).
func luhn(s string) bool {
	sum, double := 0, false
	for k := len(s) - 1; k >= 0; k-- {
		c := s[k]
		if !isDigit(c) {
			continue
		}
		d := int(c - '0')
		if double {
			d *= 2
			if d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return sum%10 == 0
}

// ---------------------------------------------------------------------------
// 5. IPv6.

// ownAddress reports whether an address names this machine or no machine
// (loopback, unspecified): never personal data, and what an operator needs to
// read in lines such as "http listening addr=127.0.0.1:9464".
func ownAddress(text string) bool {
	if i := strings.IndexByte(text, '%'); i >= 0 {
		text = text[:i]
	}
	a, err := netip.ParseAddr(text)
	return err == nil && (a.IsLoopback() || a.IsUnspecified())
}

func maskIPv6(s string) string {
	c := strings.IndexByte(s, ':')
	if c < 0 || strings.IndexByte(s[c+1:], ':') < 0 {
		return s
	}
	w := rewriter{src: s}
	for c >= 0 {
		// The run of hex digits, colons and dots around this colon.
		rs, re := c, c+1
		for rs > w.last && charClass[s[rs-1]]&clIP6 != 0 {
			rs--
		}
		colons := 0
		for k := rs; k < c; k++ {
			if s[k] == ':' {
				colons++
			}
		}
		for re < len(s) && charClass[s[re]]&clIP6 != 0 {
			re++
		}
		for k := c; k < re; k++ {
			if s[k] == ':' {
				colons++
			}
		}
		if colons >= 2 {
			if st, en, ok := ipv6At(s, rs, re); ok {
				if !ownAddress(s[st:en]) {
					w.replace(st, en, phIPv6)
				}
				re = max(re, en)
			}
		}
		next := strings.IndexByte(s[re:], ':')
		if next < 0 {
			break
		}
		c = re + next
	}
	return w.result()
}

// ipv6At looks for an IPv6 address in the run s[rs:re] of hex digits, colons
// and dots, returning the span to mask (including any %zone).
func ipv6At(s string, rs, re int) (int, int, bool) {
	start := rs
	for k := start; k > 0 && k > start-64; k-- {
		if s[k-1] == '%' {
			return 0, 0, false // inside or after a zone ("%eth0::1"), not an address
		}
		if charClass[s[k-1]]&clKey == 0 {
			break
		}
	}
	if start > 0 && gluedLeft(s[start-1]) {
		// Glued to a word ("host:fe80::1", "T12:30:45"): the address can
		// only start after a single colon.
		k := strings.IndexByte(s[start:re], ':')
		start += k + 1
		if start >= re || s[start] == ':' {
			return 0, 0, false
		}
	}
	// Zone and the right boundary.
	after := re
	zoneEnd := re
	if re < len(s) && s[re] == '%' {
		z := re + 1
		if z < len(s) && isAlnum(s[z]) {
			for z < len(s) && charClass[s[z]]&clKey != 0 {
				z++
			}
		}
		if z == re+1 {
			return 0, 0, false // '%' without a zone
		}
		zoneEnd = z
		after = z
	}
	if after < len(s) && (gluedRight(s[after]) || after > re && (s[after] == ':' || s[after] == '%')) {
		return 0, 0, false // glued to a word, or a zone followed by more address-like text
	}
	end := re
	// Try the run, then without one trailing '.' or ':' (end of a sentence,
	// "2001:db8::1: refused").
	for tries := 0; tries < 2 && end > start; tries++ {
		cand := s[start:end]
		if end == re && zoneEnd > re {
			cand = s[start:zoneEnd]
		}
		if plausibleIPv6(s[start:end]) {
			if a, err := netip.ParseAddr(cand); err == nil && a.Is6() {
				return start, start + len(cand), true
			}
		}
		if c := s[end-1]; c != '.' && c != ':' {
			break
		}
		end--
	}
	return 0, 0, false
}

// plausibleIPv6 is a cheap syntactic filter run before netip.ParseAddr, so
// that common non-addresses (times like 12:30:45, MACs) are rejected without
// building an error value.
func plausibleIPv6(a string) bool {
	if len(a) < 2 || len(a) > 45 {
		return false
	}
	hex, colons, dc := 0, 0, 0
	group := 0
	for k := 0; k < len(a); k++ {
		switch c := a[k]; {
		case c == ':':
			colons++
			if k > 0 && a[k-1] == ':' {
				dc++
			}
			group = 0
		case c == '.':
			group = 0 // embedded IPv4, validated by netip
		default:
			hex++
			group++
			if group > 4 && strings.IndexByte(a[k:], '.') < 0 {
				return false
			}
		}
	}
	if hex == 0 || colons > 7 || dc > 1 {
		return false
	}
	if dc == 0 {
		embedded4 := strings.IndexByte(a, '.') >= 0
		return colons == 7 && !embedded4 || colons == 6 && embedded4
	}
	return true
}

// ---------------------------------------------------------------------------
// 6. IPv4.

func maskIPv4(s string) string {
	d := strings.IndexByte(s, '.')
	if d < 0 {
		return s
	}
	w := rewriter{src: s}
	for d >= 0 {
		// The whole dotted-number run around this dot, so its inner parts
		// are never retried.
		st, end := d, d+1
		dots := 1
		for st > w.last && (isDigit(s[st-1]) || s[st-1] == '.') {
			st--
			if s[st] == '.' {
				dots++
			}
		}
		for end < len(s) && (isDigit(s[end]) || s[end] == '.') {
			if s[end] == '.' {
				dots++
			}
			end++
		}
		if dots >= 3 {
			// Every number in the run may start an address ("0.0.0.0..1.2.3.4"
			// holds two); ipv4In rejects those inside a longer dotted number.
			for p := st; p < end; {
				if isDigit(s[p]) && (p == st || s[p-1] == '.') {
					if a, e, ok := ipv4In(s, p); ok {
						if !ownAddress(s[a:e]) {
							w.replace(a, e, phIPv4)
						}
						p = e
						continue
					}
				}
				p++
			}
		}
		next := strings.IndexByte(s[end:], '.')
		if next < 0 {
			break
		}
		d = end + next
	}
	return w.result()
}

// ipv4In checks for an IPv4 address starting at s[st], the start of a run
// of digits and dots, with the boundaries described on Sanitizer.
func ipv4In(s string, st int) (int, int, bool) {
	if st > 0 {
		// Not glued to a word, nor the tail of a dotted name or number
		// ("1.2.3.4.5", "v1.2.3.4", "a.1.2.3.4").
		c := s[st-1]
		if gluedLeft(c) || c == '.' && st >= 2 && isAlnum(s[st-2]) {
			return 0, 0, false
		}
	}
	end, ok := parseIPv4(s, st)
	if !ok {
		return 0, 0, false
	}
	if end < len(s) {
		c := s[end]
		if gluedRight(c) || c == '.' && end+1 < len(s) && isDigit(s[end+1]) {
			return 0, 0, false
		}
	}
	// Followed by an IPv6-like run that the IPv6 mask rejected as a whole
	// ("1.2.3.4:0::", "1.2.3.4.:0::"): once this address is masked, the
	// IPv6 mask would take what follows its first colon, so String would not
	// be idempotent. Decline when that part holds two or more colons before
	// another address that will be masked (a "[" stops an IPv6 candidate).
	// A port ("10.0.0.1:5432: refused") is fine. Text before the address
	// needs no such rule, for the same reason.
	colons := 0
	for k := end; k < len(s) && k < end+64 && charClass[s[k]]&clIP6 != 0; k++ {
		if s[k] == ':' {
			colons++
		} else if isDigit(s[k]) && !isDigit(s[k-1]) && s[k-1] != '.' {
			if _, _, ok := ipv4In(s, k); ok {
				break
			}
		} else if isDigit(s[k]) && s[k-1] == '.' && !isAlnum(s[k-2]) {
			if _, _, ok := ipv4In(s, k); ok {
				break
			}
		}
	}
	if colons >= 3 {
		return 0, 0, false
	}
	return st, end, true
}

// parseIPv4 parses four dot-separated decimal octets (1-3 digits, <= 255) at
// s[i:] and returns the end index.
func parseIPv4(s string, i int) (int, bool) {
	for part := 0; part < 4; part++ {
		if part > 0 {
			if i >= len(s) || s[i] != '.' {
				return 0, false
			}
			i++
		}
		v, n := 0, 0
		for i < len(s) && isDigit(s[i]) {
			v = v*10 + int(s[i]-'0')
			n++
			i++
			if n > 3 {
				return 0, false
			}
		}
		if n == 0 || v > 255 {
			return 0, false
		}
	}
	return i, true
}

// ---------------------------------------------------------------------------
// 10. Bearer tokens.

func (s *Sanitizer) maskBearer(in string) string {
	i := indexFold(in, "bearer", 0)
	if i < 0 {
		return in
	}
	w := rewriter{src: in}
	for i >= 0 {
		next := i + 6
		q := i + 6
		if (i == 0 || !isAlnum(in[i-1])) && q < len(in) && (in[q] == ' ' || in[q] == '\t') {
			v := q
			for v < len(in) && (in[v] == ' ' || in[v] == '\t') {
				v++
			}
			// "bearer Bearer x", "bearer token=x": the token is later.
			if e, ph := s.scanBareValue(in, v); e > v && !ph && !isAuthScheme(in[v:e]) && !s.isSensitiveKeyToken(in[v:e]) {
				w.replace(i, e, phBearer)
				next = e
			}
		}
		i = indexFold(in, "bearer", next)
	}
	return w.result()
}

// indexFold returns the index of the ASCII-lower-case word lower in s[from:]
// ignoring ASCII case, as an index into s, or -1.
func indexFold(s, lower string, from int) int {
	lo, up := lower[0], lower[0]-('a'-'A')
	for from+len(lower) <= len(s) {
		i := strings.IndexByte(s[from:], lo)
		if j := strings.IndexByte(s[from:], up); j >= 0 && (i < 0 || j < i) {
			i = j
		}
		if i < 0 {
			return -1
		}
		i += from
		if i+len(lower) <= len(s) && strings.EqualFold(s[i:i+len(lower)], lower) {
			return i
		}
		from = i + 1
	}
	return -1
}

// ---------------------------------------------------------------------------
// 11. Sensitive key/value pairs in free text.

func (s *Sanitizer) maskKeyValues(in string) string {
	eq, co := strings.IndexByte(in, '='), strings.IndexByte(in, ':')
	if eq < 0 && co < 0 {
		return in
	}
	w := rewriter{src: in}
	var kbuf [64]byte
	for i := 0; i < len(in); {
		j := indexSep(in, i)
		if j < 0 {
			break
		}
		i = j + 1
		// Look back for the key: [spaces] [closing quote, maybe escaped] key.
		k := j
		for k > w.last && (in[k-1] == ' ' || in[k-1] == '\t') {
			k--
		}
		dquoted := false
		if k > w.last && (in[k-1] == '"' || in[k-1] == '\'') {
			dquoted = in[k-1] == '"'
			k--
			if k > w.last && in[k-1] == '\\' {
				k--
			}
		}
		ke := k
		for k > w.last && charClass[in[k-1]]&clKey != 0 {
			k--
		}
		if k == ke || ke-k > 128 || !s.sensitiveKey(in[k:ke], &kbuf) {
			continue
		}
		if in[j] == ':' && !dquoted && ke == j && pathTail(in, k) {
			// The end of a file path before a colon, not a key:
			// "open /etc/passwd: not a file", "C:\\run\\token: denied".
			continue
		}
		v := j + 1
		if v < len(in) && (in[j] == ':' && in[v] == '=' || in[j] == '=' && in[v] == '>') {
			v++ // "password := x" (Go, Pascal), "password => x" (Perl, PHP, Ruby)
		}
		for v < len(in) && (in[v] == ' ' || in[v] == '\t') {
			v++
		}
		if v >= len(in) {
			break
		}
		if in[j] == ':' && ke < j && (in[ke] == '"' || in[ke] == '\'') && pathTail(in, k) &&
			strings.IndexByte("\"'`{[\\", in[v]) < 0 {
			// A quoted file path before a colon, and words after it, not a
			// value: `unknown time zone "../etc/passwd": use an IANA name`.
			// (A quoted value after it still reads as one:
			// {"/run/secrets/db_password": "x"}.)
			continue
		}
		// A cookie header's value is every cookie up to the end of its line
		// ("Cookie: a=1; b=2"), not up to the first ';'.
		toEOL := in[j] == ':' && hasCanonicalSuffix(in[k:ke], "cookie")
		if passOnly(in[k:ke]) && allDigits(in, v) {
			continue // "pass: 12 fail: 0", a test summary
		}
		rs, re, repl, ok := s.sensitiveValue(in, v, dquoted && in[j] == ':', toEOL)
		if !ok {
			continue
		}
		w.replace(rs, re, repl)
		i = max(i, re)
	}
	return w.result()
}

// pathTail reports whether the word ending at in[k] (a key's start) is
// the last element of a file path: in[k-1] is a path separator and the
// path is absolute or explicitly relative ("/etc/passwd", "./api.token",
// "../token", "~/.secret", "C:\\run\\token"). "db/password" is not one:
// without a path's start, a slash is as likely part of a key's name.
func pathTail(in string, k int) bool {
	if k == 0 || in[k-1] != '/' && in[k-1] != '\\' {
		return false
	}
	st := k - 1
	for st > 0 && k-st < 4096 && !strings.ContainsRune(" \t\n\r\"'(=[<,;", rune(in[st-1])) {
		st--
	}
	p := in[st:k]
	return p[0] == '/' || strings.HasPrefix(p, "./") || strings.HasPrefix(p, "../") || strings.HasPrefix(p, "~/") ||
		len(p) >= 3 && p[1] == ':' && p[2] == '\\' && ('a' <= p[0]|0x20 && p[0]|0x20 <= 'z')
}

// indexSep returns the index of the first '=' or ':' in s[from:], as an
// index into s, or -1.
func indexSep(s string, from int) int {
	i := strings.IndexByte(s[from:], '=')
	if j := strings.IndexByte(s[from:], ':'); j >= 0 && (i < 0 || j < i) {
		i = j
	}
	if i < 0 {
		return -1
	}
	return from + i
}

// sensitiveValue finds the value starting at in[v] and returns the span to
// replace and its replacement; ok is false when there is nothing to do (empty
// value, or already a placeholder). jsonish asks for a quoted placeholder
// when an unquoted value (a number, an object) is replaced after a JSON key.
// toEOL makes an unquoted value run to the end of its line.
func (s *Sanitizer) sensitiveValue(in string, v int, jsonish, toEOL bool) (rs, re int, repl string, ok bool) {
	bare := phRedacted
	if jsonish {
		bare = `"` + phRedacted + `"`
	}
	switch c := in[v]; {
	case c == '"' || c == '\'' || c == '`':
		eol := lineEnd(in, v)
		cl := findClose(in[:eol], v+1, c)
		if cl < 0 {
			cl = eol // unterminated: to the end of the line
		}
		return s.redactSpan(in, v+1, cl, phRedacted)
	case c == 'b' && v+1 < len(in) && (in[v+1] == '\'' || in[v+1] == '"'):
		// Python bytes, b'…' (a dict printed by a task): quoted after the b.
		eol := lineEnd(in, v)
		cl := findClose(in[:eol], v+2, in[v+1])
		if cl < 0 {
			cl = eol
		}
		return s.redactSpan(in, v+2, cl, phRedacted)
	case c == '\\' && v+1 < len(in) && in[v+1] == '"':
		eol := lineEnd(in, v)
		cl := strings.Index(in[v+2:eol], `\"`)
		if cl < 0 {
			return s.redactSpan(in, v+2, eol, phRedacted)
		}
		return s.redactSpan(in, v+2, v+2+cl, phRedacted)
	case c == '{' || c == '[':
		if c == '[' {
			if pe := s.placeholderEnd(in, v); pe > 0 && (pe == len(in) || charClass[in[pe]]&clValEnd != 0) {
				return 0, 0, "", false
			}
		}
		e := balancedEnd(in, v)
		e, _ = s.scanBareValue(in, e)
		return v, e, bare, true
	default:
		e, _ := s.scanBareValue(in, v)
		if e == v {
			e = delimitedValueEnd(in, v)
		}
		if e == v || s.isSensitiveKeyToken(in[v:e]) {
			// Empty, or "password= token=abc": the value is the next key,
			// whose own value is masked when the scan reaches it.
			return 0, 0, "", false
		}
		if toEOL {
			e = lineEnd(in, v)
			for e > v && (in[e-1] == ' ' || in[e-1] == '\t' || in[e-1] == '\r') {
				e--
			}
			return s.redactSpan(in, v, e, bare)
		}
		// "<scheme> <credentials>": extend over the credentials.
		if isAuthScheme(in[v:e]) && e < len(in) && in[e] == ' ' {
			c2 := e
			for c2 < len(in) && in[c2] == ' ' {
				c2++
			}
			if c2 < len(in) && (in[c2] == '"' || in[c2] == '\'') {
				// Quoted credentials: Basic "dXNl".
				eol := lineEnd(in, c2)
				cl := findClose(in[:eol], c2+1, in[c2])
				if cl < 0 {
					cl = eol
				}
				return s.redactSpan(in, c2+1, cl, phRedacted)
			}
			if pe := authParamsEnd(in, c2); pe > c2 {
				// Auth-params (RFC 9110 11.4): every one is a credential or
				// part of one (Digest's response, AWS4's Signature).
				return s.redactSpan(in, c2, pe, phRedacted)
			}
			if e2, _ := s.scanBareValue(in, c2); e2 > c2 && !s.isSensitiveKeyToken(in[c2:e2]) {
				e = e2
			}
		}
		return s.redactSpan(in, v, e, bare)
	}
}

// delimitedValueEnd returns the end of an unquoted value that starts with a
// character that would end it (generated passwords do: "password=&k9L",
// "DB_PASSWORD: <x", "password=)x"; attack 32, S7: left in clear as an
// empty value): the word from v to the next white space or quote, or v
// when that word is no value: the delimiter alone, or the next key=value
// after an empty value ("?token=&x=1", "password=,user=bob").
func delimitedValueEnd(in string, v int) int {
	if v+1 >= len(in) || strings.IndexByte("&,;<>)]}", in[v]) < 0 {
		return v
	}
	e := v + 1
	for e < len(in) && in[e] > ' ' && in[e] != 0x7f && in[e] != '"' && in[e] != '\'' && in[e] != '`' {
		e++
	}
	if e == v+1 || strings.ContainsAny(in[v+1:e], "=:") {
		return v
	}
	return e
}

// authParamsEnd returns the end of the list of auth-params starting at
// in[p] (name=value or name="value", separated by commas:
// `username="u", response="r"`, `Credential=AKID/x, Signature=f0`), or -1
// when in[p] does not start one. An unterminated quoted value runs to the
// end of its line.
func authParamsEnd(in string, p int) int {
	end := -1
	for {
		k := p
		for k < len(in) && charClass[in[k]]&clKey != 0 {
			k++
		}
		if k == p || k >= len(in) || in[k] != '=' {
			return end
		}
		k++
		if k < len(in) && in[k] == '"' {
			eol := lineEnd(in, k)
			cl := findClose(in[:eol], k+1, '"')
			if cl < 0 {
				return eol
			}
			k = cl + 1
		} else {
			// ';' joins a list inside a value (SigV4's
			// SignedHeaders=host;x-amz-date), whose Signature follows:
			// ending the value there left it in clear (attack 32, S6).
			for k < len(in) && (charClass[in[k]]&clValEnd == 0 || in[k] == ';') {
				k++
			}
		}
		end = k
		for k < len(in) && (in[k] == ' ' || in[k] == '\t') {
			k++
		}
		if k >= len(in) || in[k] != ',' {
			return end
		}
		k++
		for k < len(in) && (in[k] == ' ' || in[k] == '\t') {
			k++
		}
		p = k
	}
}

// passOnly reports whether key is "pass" alone, in any case.
func passOnly(key string) bool { return len(key) == 4 && strings.EqualFold(key, "pass") }

// allDigits reports whether the unquoted word at in[v:] is a number.
func allDigits(in string, v int) bool {
	e := v
	for e < len(in) && isDigit(in[e]) {
		e++
	}
	return e > v && (e == len(in) || charClass[in[e]]&clValEnd != 0)
}

// redactSpan replaces in[a:b] with repl unless it is empty or already
// sanitized: a placeholder, or "<scheme> <placeholder>". For "<scheme>
// <credentials>" only the credentials are replaced.
func (s *Sanitizer) redactSpan(in string, a, b int, repl string) (int, int, string, bool) {
	if a >= b {
		return 0, 0, "", false
	}
	if s.placeholderEnd(in, a) == b {
		return 0, 0, "", false
	}
	if sp := strings.IndexByte(in[a:b], ' '); sp > 0 && isAuthScheme(in[a:a+sp]) {
		c := a + sp
		for c < b && in[c] == ' ' {
			c++
		}
		if c < b {
			if s.placeholderEnd(in, c) == b {
				return 0, 0, "", false
			}
			return c, b, phRedacted, true
		}
	}
	return a, b, repl, true
}

// isSensitiveKeyToken reports whether w is a sensitive key followed by its
// separator, like "api_key:" or "token=".
func (s *Sanitizer) isSensitiveKeyToken(w string) bool {
	n := len(w)
	if n < 2 || w[n-1] != ':' && w[n-1] != '=' {
		return false
	}
	k := w[:n-1]
	for i := 0; i < len(k); i++ {
		if charClass[k[i]]&clKey == 0 {
			return false
		}
	}
	return s.SensitiveKey(k)
}

// authParamSchemes are the auth schemes (lower case) whose credentials are
// auth-params (name=value, ...): after one of them with no key in front,
// the params are masked.
var authParamSchemes = []string{"digest", "aws4-hmac-sha256", "hoba", "mutual", "vapid", "scram-sha-1", "scram-sha-256"}

// maskAuthSchemes masks credentials after an auth scheme that has no
// Authorization key in front (a header logged without its name, a
// WWW-Authenticate line): the scheme must start with a capital letter and
// stand alone; then quoted credentials (Basic "x" -> Basic "[redacted]"),
// or, after a scheme of authParamSchemes, a list of two or more auth-params
// (Digest username="u", response="x" -> Digest [redacted]). A scheme
// followed by a bare word ("Basic usage", "Token count") is prose and stays
// (Bearer has its own mask).
func (s *Sanitizer) maskAuthSchemes(in string) string {
	// Quoted credentials need a quote; auth-params a '=' and a ','.
	if strings.IndexByte(in, '"') < 0 && strings.IndexByte(in, '\'') < 0 &&
		(strings.IndexByte(in, ',') < 0 || strings.IndexByte(in, '=') < 0) {
		return in
	}
	var w rewriter
	w.src = in
	for i := 0; i < len(in); i++ {
		c := in[i]
		if c < 'A' || c > 'Z' || i > 0 && (isWord(in[i-1]) || in[i-1] == '-') {
			continue
		}
		e := i
		for e < len(in) && (isAlnum(in[e]) || in[e] == '-') {
			e++
		}
		word := in[i:e]
		if e >= len(in) || in[e] != ' ' || !isAuthScheme(word) || strings.EqualFold(word, "bearer") {
			i = e
			continue
		}
		c2 := e
		for c2 < len(in) && in[c2] == ' ' {
			c2++
		}
		switch {
		case c2 < len(in) && (in[c2] == '"' || in[c2] == '\''):
			eol := lineEnd(in, c2)
			cl := findClose(in[:eol], c2+1, in[c2])
			if cl < 0 {
				cl = eol
			}
			if rs, re, repl, ok := s.redactSpan(in, c2+1, cl, phRedacted); ok && rs >= w.last {
				w.replace(rs, re, repl)
				i = re
				continue
			}
		case slices.ContainsFunc(authParamSchemes, func(a string) bool { return strings.EqualFold(word, a) }):
			if pe := authParamsEnd(in, c2); pe > c2 && strings.IndexByte(in[c2:pe], ',') >= 0 {
				if rs, re, repl, ok := s.redactSpan(in, c2, pe, phRedacted); ok && rs >= w.last {
					w.replace(rs, re, repl)
					i = re
					continue
				}
			}
		}
		i = e
	}
	return w.result()
}

func isAuthScheme(w string) bool {
	if len(w) < 4 || len(w) > 16 {
		return false
	}
	for _, a := range authSchemes {
		if strings.EqualFold(w, a) {
			return true
		}
	}
	return false
}

// scanBareValue returns the end of the unquoted value at in[v:], which runs
// to a delimiter (whitespace, & , ; quotes, closing brackets, < >) but steps
// over placeholders; ph reports whether the value is exactly one placeholder.
func (s *Sanitizer) scanBareValue(in string, v int) (end int, ph bool) {
	e := v
	for e < len(in) {
		c := in[e]
		if c == '[' {
			if pe := s.placeholderEnd(in, e); pe > 0 {
				e = pe
				continue
			}
		}
		if charClass[c]&clValEnd != 0 {
			break
		}
		e++
	}
	return e, e > v && s.placeholderEnd(in, v) == e
}

// placeholderEnd returns the index after a known placeholder "[name]"
// starting at in[i], or -1.
func (s *Sanitizer) placeholderEnd(in string, i int) int {
	if i >= len(in) || in[i] != '[' {
		return -1
	}
	for k := i + 1; k < len(in) && k <= i+66; k++ {
		c := in[k]
		if c == ']' {
			if _, ok := s.placeholders[in[i+1:k]]; ok {
				return k + 1
			}
			return -1
		}
		if charClass[c]&clKey == 0 {
			return -1
		}
	}
	return -1
}

// findClose returns the index of the closing quote q in s[from:], honouring
// backslash escapes except for backquotes, or -1.
func findClose(s string, from int, q byte) int {
	for k := from; k < len(s); k++ {
		switch s[k] {
		case q:
			return k
		case '\\':
			if q != '`' {
				k++
			}
		}
	}
	return -1
}

// balancedEnd returns the index after the bracketed value starting at s[i]
// ({...} or [...], strings respected), or the end of s[i]'s line if it is
// unterminated.
func balancedEnd(s string, i int) int {
	depth := 0
	for k := i; k < len(s); k++ {
		switch s[k] {
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				return k + 1
			}
		case '"':
			cl := findClose(s, k+1, '"')
			if cl < 0 {
				return lineEnd(s, i)
			}
			k = cl
		}
	}
	return lineEnd(s, i)
}

// lineEnd returns the index of the first newline in s[i:], as an index into
// s, or len(s).
func lineEnd(s string, i int) int {
	if n := strings.IndexByte(s[i:], '\n'); n >= 0 {
		return i + n
	}
	return len(s)
}

// ---------------------------------------------------------------------------
// 12. Operator patterns.

func (p *compiledPattern) apply(s string) string {
	if !p.re.MatchString(s) {
		return s
	}
	w := rewriter{src: s}
	for _, loc := range p.re.FindAllStringIndex(s, -1) {
		if loc[1] > loc[0] {
			w.replace(loc[0], loc[1], p.repl)
		}
	}
	return w.result()
}

// stripSGR removes the colour and style codes of a terminal (ANSI SGR,
// ESC [ … m) from in: a key or value a tool highlights (grep --color, a
// logger that thinks it writes to a terminal) is then masked like a plain
// one (attack 14, K9). Other escape sequences are left.
func stripSGR(in string) string {
	var b strings.Builder
	b.Grow(len(in))
	for i := 0; i < len(in); {
		if in[i] == 0x1b && i+1 < len(in) && in[i+1] == '[' {
			j := i + 2
			for j < len(in) && (in[j] >= '0' && in[j] <= '9' || in[j] == ';') {
				j++
			}
			if j < len(in) && in[j] == 'm' {
				i = j + 1
				continue
			}
		}
		b.WriteByte(in[i])
		i++
	}
	return b.String()
}
