package observability

import "strings"

// 7, 8. Bare secrets: credentials recognised by their own shape, with no key such
// as "token=" in front of them. The prefixes and shapes follow gitleaks'
// rule set (github.com/gitleaks/gitleaks, cmd/generate/config/rules), the
// reference list of secret formats that their issuers keep stable so that
// scanners can find them.
//
// Every check starts with a keyword: a token's fixed prefix, an IBAN's
// country code followed by two check digits, a phone number's '+'. Only
// where a keyword stands at the start of a word is the rest of the shape
// looked at, by hand-written scanners (no regular expressions), so clean
// text costs one table lookup per byte.

// Placeholders written by the bare-secret masks.
const (
	phAWSKey      = "[aws_key]"
	phGoogleKey   = "[google_api_key]"
	phGitHub      = "[github_token]"
	phGitLab      = "[gitlab_token]"
	phSlack       = "[slack_token]"
	phSlackHook   = "[slack_webhook]"
	phStripe      = "[stripe_key]"
	phNPM         = "[npm_token]"
	phIBAN        = "[iban]"
	phPhone       = "[phone]"
	minTokenBytes = 15 // the shortest token a rule accepts ("xoxb-" and 10 more)
)

// secretPlaceholderNames are the names of the placeholders above, without
// brackets (see builtinPlaceholderNames).
var secretPlaceholderNames = []string{
	"aws_key", "google_api_key", "github_token", "gitlab_token", "slack_token",
	"slack_webhook", "stripe_key", "npm_token", "iban", "phone",
}

// tokenRule describes one kind of prefixed token: prefix, then a body of
// characters of class body whose length is in [min, max].
type tokenRule struct {
	prefix   string
	ph       string
	body     uint16 // character class of the body
	min, max int
	// needDigit asks for at least one digit in the body, which tells a
	// real token from a name such as "xoxb-my-bot-token".
	needDigit bool
	// dotSuffix accepts GitLab's routable form: body "." 9 of [0-9a-z].
	dotSuffix bool
}

// tokenRules are indexed by the prefix's first byte, so that a byte that
// starts no prefix costs one lookup; tokenPairs then by its first two bytes
// (see rulesAt).
var tokenRules = func() (t [256][]tokenRule) {
	add := func(ph string, body uint16, lo, hi int, prefixes ...string) {
		for _, p := range prefixes {
			t[p[0]] = append(t[p[0]], tokenRule{prefix: p, ph: ph, body: body, min: lo, max: hi})
		}
	}
	// gitleaks aws-access-token: (A3T[A-Z0-9]|AKIA|ASIA|ABIA|ACCA)[A-Z0-9]{16}, word-bounded.
	add(phAWSKey, clUpDigit, 16, 16, "AKIA", "ASIA", "ABIA", "ACCA")
	add(phAWSKey, clUpDigit, 17, 17, "A3T")
	// gcp-api-key: AIza[\w-]{35}, bounded.
	add(phGoogleKey, clB64URL, 35, 35, "AIza")
	// github-pat, -oauth, -app-token, -refresh-token: gh[pousr]_[0-9a-zA-Z]{36}
	// (GitHub may make them longer: up to 255 accepted);
	// github-fine-grained-pat: github_pat_\w{82} (22 characters, '_', 59).
	// Shorter ones are taken too, from 30 characters with a digit: a token
	// cut short or mistyped is still a secret, and "github_pat_" followed by
	// that much is nothing else.
	add(phGitHub, clDigit|clAlpha, 36, 255, "ghp_", "gho_", "ghu_", "ghs_", "ghr_")
	add(phGitHub, clDigit|clAlpha|clUnder, 30, 255, "github_pat_")
	// gitlab-pat and its siblings: gl<kind>-[\w-]{20,}; gitlab-pat-routable
	// adds ".<9 of [0-9a-z]>".
	add(phGitLab, clB64URL, 20, 300, "glpat-", "gldt-", "glrt-", "glptt-", "glft-", "glimt-",
		"glagent-", "gloas-", "glsoat-", "glcbt-", "glffct-")
	// slack-*-token: xox[abeoprs]-..., xoxe.xox[bp]-..., xapp-...; bodies of
	// digits, letters and dashes.
	add(phSlack, clDigit|clAlpha|clDash, 10, 255, "xoxa-", "xoxb-", "xoxe-", "xoxo-", "xoxp-", "xoxr-",
		"xoxs-", "xoxe.xoxb-", "xoxe.xoxp-", "xapp-")
	// stripe-access-token: (sk|rk)_(test|live|prod)_[a-zA-Z0-9]{10,99}.
	add(phStripe, clDigit|clAlpha, 10, 99, "sk_live_", "rk_live_", "sk_test_", "rk_test_", "sk_prod_", "rk_prod_")
	// npm-access-token: npm_[a-z0-9]{36} (case-insensitive).
	add(phNPM, clDigit|clAlpha, 36, 36, "npm_")
	for c := range t {
		for i := range t[c] {
			r := &t[c][i]
			r.needDigit = r.ph == phSlack || r.prefix == "github_pat_"
			r.dotSuffix = r.ph == phGitLab
		}
	}
	return t
}()

// tokenPairs maps a prefix's first two bytes to 1 + the index of its rules
// in tokenPairRules; 0 means no prefix starts so.
var tokenPairs, tokenPairRules = func() (idx *[1 << 16]uint8, groups [][]tokenRule) {
	idx = new([1 << 16]uint8)
	for c := range tokenRules {
		for _, r := range tokenRules[c] {
			k := uint16(r.prefix[0])<<8 | uint16(r.prefix[1])
			if idx[k] == 0 {
				groups = append(groups, nil)
				idx[k] = uint8(len(groups))
			}
			groups[idx[k]-1] = append(groups[idx[k]-1], r)
		}
	}
	return idx, groups
}()

// rulesAt returns the token rules whose prefix starts like s[i:].
func rulesAt(s string, i int) []tokenRule {
	if i+1 >= len(s) {
		return nil
	}
	if g := tokenPairs[uint16(s[i])<<8|uint16(s[i+1])]; g != 0 {
		return tokenPairRules[g-1]
	}
	return nil
}

// Bits of prefixStart: what may start at a byte.
const (
	startToken = 1 << iota // the first byte of a token prefix
	startIBAN              // a letter: an IBAN's country code
	startHook              // 'h': a Slack webhook URL
)

var prefixStart = func() (t [256]uint8) {
	for c := range t {
		if tokenRules[c] != nil {
			t[c] |= startToken
		}
		if charClass[c]&clAlpha != 0 {
			t[c] |= startIBAN
		}
	}
	t['h'] |= startHook
	return t
}()

// wordByte is isWord as a table, for the scanning loop of maskPrefixed.
var wordByte = func() (t [256]bool) {
	for c := range t {
		t[c] = isWord(byte(c))
	}
	return t
}()

// maskPrefixed replaces, in one pass, prefixed tokens and IBANs standing
// alone (not glued to a word on either side) with their typed placeholder.
// It looks only at the first byte of each word: every other byte costs one
// table lookup.
func maskPrefixed(s string) string {
	const minLen = min(minTokenBytes, minIBAN)
	if len(s) < minLen {
		return s
	}
	var w rewriter
	w.src = s
	for i := 0; i+minLen <= len(s); {
		c := s[i]
		if !wordByte[c] {
			i++
			if c == ']' { // a placeholder counts as a word: skip what is glued to it
				for i < len(s) && wordByte[s[i]] {
					i++
				}
			}
			continue
		}
		// s[i] starts a word.
		// Most words start with a letter, which could start an IBAN: its
		// third and fourth bytes, digits, are checked here first.
		if f := prefixStart[c]; f&^startIBAN != 0 || f != 0 && i+3 < len(s) && isDigit(s[i+3]) && isDigit(s[i+2]) {
			if end, ph := prefixedAt(s, i, f); end > 0 {
				w.replace(i, end, ph)
				i = end
				continue
			}
		}
		for i++; i < len(s) && wordByte[s[i]]; i++ {
		}
	}
	return w.result()
}

// prefixedAt returns the end and placeholder of a token or IBAN starting at
// s[i], the start of a word whose first byte has prefixStart flags f; end is
// 0 if there is none.
func prefixedAt(s string, i int, f uint8) (int, string) {
	if f&startToken != 0 {
		rules := rulesAt(s, i)
		for k := range rules {
			if end, ok := rules[k].match(s, i); ok {
				return end, rules[k].ph
			}
		}
	}
	if f&startHook != 0 {
		if end, ok := slackWebhookAt(s, i); ok {
			return end, phSlackHook
		}
	}
	if f&startIBAN != 0 && i+minIBAN <= len(s) && isDigit(s[i+2]) && isDigit(s[i+3]) && charClass[s[i+1]]&clAlpha != 0 &&
		ibanLengths[[2]byte{s[i] &^ 0x20, s[i+1] &^ 0x20}] != 0 {
		if end, ok := ibanAt(s, i); ok {
			return end, phIBAN
		}
	}
	return 0, ""
}

// ---------------------------------------------------------------------------
// Slack webhook URLs.

// slackWebhookAt matches a Slack incoming-webhook or workflow URL at s[i]:
// "https://", "http://" or nothing, then hooks.slack.com/services/,
// /workflows/ or /triggers/ and a path of 20 to 250 characters of
// [A-Za-z0-9+/=_-] (gitleaks' slack-webhook-url takes 43 to 56 of
// [A-Za-z0-9+/]; a shorter path is still a webhook's secret, cut).
func slackWebhookAt(s string, i int) (int, bool) {
	const host = "hooks.slack.com/"
	j := i
	if strings.HasPrefix(s[j:], "https://") {
		j += len("https://")
	} else if strings.HasPrefix(s[j:], "http://") {
		j += len("http://")
	}
	if !strings.HasPrefix(s[j:], host) {
		return 0, false
	}
	j += len(host)
	kind := ""
	for _, k := range []string{"services/", "workflows/", "triggers/"} {
		if strings.HasPrefix(s[j:], k) {
			kind = k
			break
		}
	}
	if kind == "" {
		return 0, false
	}
	j += len(kind)
	b := j
	for j < len(s) && j-b <= 250 && charClass[s[j]]&(clB64|clB64URL) != 0 {
		j++
	}
	if n := j - b; n < 20 || n > 250 || j < len(s) && gluedRight(s[j]) {
		return 0, false
	}
	return j, true
}

// match reports whether a token of rule r starts at s[i], and where it ends.
func (r *tokenRule) match(s string, i int) (int, bool) {
	// Every prefix has 3 bytes or more, the first of which the caller
	// matched: compare the next two before the whole, since most words
	// that start like a prefix do not go on like one.
	if i+len(r.prefix) > len(s) || s[i+1] != r.prefix[1] || s[i+2] != r.prefix[2] ||
		!strings.HasPrefix(s[i:], r.prefix) {
		return 0, false
	}
	b := i + len(r.prefix)
	e := b
	digit := false
	for e < len(s) && e-b <= r.max && charClass[s[e]]&r.body != 0 {
		digit = digit || isDigit(s[e])
		e++
	}
	if n := e - b; n < r.min || n > r.max || r.needDigit && !digit {
		return 0, false
	}
	if r.dotSuffix && e+10 <= len(s) && s[e] == '.' {
		k := e + 1
		for k < e+10 && (isDigit(s[k]) || 'a' <= s[k] && s[k] <= 'z') {
			k++
		}
		if k == e+10 {
			e = k
		}
	}
	if e < len(s) && gluedRight(s[e]) {
		return 0, false
	}
	return e, true
}

// ---------------------------------------------------------------------------
// IBANs.

// ibanLengths are the country codes of the IBAN registry (ISO 13616) and
// the length of their IBANs.
var ibanLengths = func() map[[2]byte]int {
	m := map[[2]byte]int{}
	for _, c := range strings.Fields(`AD24 AE23 AL28 AT20 AZ28 BA20 BE16 BG22 BH22 BI27 BR29 BY28 CH21 CR22 CY28 CZ24
		DE22 DJ27 DK18 DO28 EE20 EG29 ES24 FI18 FK18 FO18 FR27 GB22 GE22 GI23 GL18 GR27 GT28 HN28 HR21 HU28 IE22
		IL23 IQ23 IS26 IT27 JO30 KW30 KZ20 LB28 LC32 LI21 LT20 LU20 LV21 LY25 MC27 MD24 ME22 MK19 MN20 MR27 MT31
		MU30 NI28 NL18 NO15 OM23 PK24 PL28 PS29 PT25 QA29 RO24 RS22 RU33 SA24 SC31 SD18 SE24 SI19 SK24 SM27 SO23
		ST25 SV28 TL23 TN24 TR26 UA29 VA22 VG24 XK20 YE30`) {
		m[[2]byte{c[0], c[1]}] = int(c[2]-'0')*10 + int(c[3]-'0')
	}
	return m
}()

const (
	minIBAN = 15 // Norway
	maxIBAN = 34
)

// IBANs are masked by maskPrefixed: compact ("DE89370400440532013000") or in
// groups of four ("DE89 3704 0044 0532 0130 00"), in any case
// ("de89370400440532013000"), with a registry country code, that country's
// IBAN length and a valid mod-97 check (ISO 7064). The length keeps words
// of letters and digits (hex IDs, a run of groups before a real IBAN) from
// passing the check, one in 97, by chance.

// ibanAt returns the end of a valid IBAN starting at s[i], trying the
// longest candidate first.
func ibanAt(s string, i int) (int, bool) {
	e := i
	for e < len(s) && e-i <= maxIBAN && isAlnum(s[e]) {
		e++
	}
	if e-i > 4 { // compact
		n := e - i
		if n < minIBAN || n > maxIBAN || e < len(s) && gluedRight(s[e]) {
			return 0, false
		}
		return e, ibanValid(s[i:e])
	}
	// Grouped: "CCdd" then groups of four separated by single spaces; only
	// the last group may be shorter. Each group end is a candidate end.
	var ends [10]int
	n, chars := 0, 4
	for e < len(s) && n < len(ends) && s[e] == ' ' {
		g := e + 1
		for g < len(s) && g-e-1 < 5 && isAlnum(s[g]) {
			g++
		}
		gl := g - e - 1
		if gl == 0 || gl > 4 {
			break
		}
		chars += gl
		if chars > maxIBAN {
			break
		}
		ends[n] = g
		n++
		e = g
		if gl < 4 {
			break
		}
	}
	for k := n - 1; k >= 0; k-- {
		end := ends[k]
		if end < len(s) && gluedRight(s[end]) {
			continue
		}
		compact := make([]byte, 0, maxIBAN)
		for _, c := range []byte(s[i:end]) {
			if c != ' ' {
				compact = append(compact, c)
			}
		}
		if len(compact) >= minIBAN && ibanValid(string(compact)) {
			return end, true
		}
	}
	return 0, false
}

// ibanValid checks an IBAN without spaces: its country's length, and the
// first four characters moved to the end, letters read as 10..35, the number
// modulo 97 is 1.
func ibanValid(iban string) bool {
	if len(iban) < 4 || ibanLengths[[2]byte{iban[0] &^ 0x20, iban[1] &^ 0x20}] != len(iban) {
		return false
	}
	rem := 0
	for k := range len(iban) {
		c := iban[(k+4)%len(iban)]
		switch {
		case isDigit(c):
			rem = (rem*10 + int(c-'0')) % 97
		case isUpper(c):
			rem = (rem*100 + int(c-'A'+10)) % 97
		case 'a' <= c && c <= 'z':
			rem = (rem*100 + int(c-'a'+10)) % 97
		default:
			return false
		}
	}
	return rem == 1
}

func isUpper(c byte) bool { return 'A' <= c && c <= 'Z' }

// ---------------------------------------------------------------------------
// Phone numbers in international format.

const (
	minPhoneDigits = 8  // "+" and a country code make short numbers ambiguous
	maxPhoneDigits = 15 // E.164
)

// maskPhones replaces phone numbers written in international format: '+',
// a country code and digits, in groups separated by single spaces or dashes,
// with optional parenthesised groups ("+44 (0)20 7946 0958"), 8 to 15
// digits in all. The '+' must not follow a word, a '+' or a '.', and the
// number must not run into a word. Past 15 digits the longest prefix of
// whole groups that fits is taken, so "+49 30 12345678 2024-06-10" masks
// the number and keeps the date.
func maskPhones(s string) string {
	p := strings.IndexByte(s, '+')
	if p < 0 {
		return s
	}
	var w rewriter
	w.src = s
	for p >= 0 {
		next := p + 1
		if end, ok := phoneAt(s, p); ok {
			w.replace(p, end, phPhone)
			next = end
		}
		j := strings.IndexByte(s[next:], '+')
		if j < 0 {
			break
		}
		p = next + j
	}
	return w.result()
}

func phoneAt(s string, p int) (int, bool) {
	if p > 0 {
		if c := s[p-1]; gluedLeft(c) || c == '+' || c == '.' {
			return 0, false
		}
	}
	j := p + 1
	if j >= len(s) || !isDigit(s[j]) || s[j] == '0' {
		return 0, false
	}
	best, digits := 0, 0
	for j < len(s) {
		c := s[j]
		if isDigit(c) {
			for j < len(s) && isDigit(s[j]) {
				digits++
				j++
			}
		} else { // '(': a parenthesised group of 1 to 4 digits
			k := j + 1
			for k < len(s) && k-j <= 5 && isDigit(s[k]) {
				k++
			}
			if k == j+1 || k >= len(s) || s[k] != ')' {
				break
			}
			digits += k - j - 1
			j = k + 1
		}
		if digits > maxPhoneDigits {
			break
		}
		// A group ends here: a candidate if the number stops here.
		if digits >= minPhoneDigits && (j == len(s) || !phoneGlued(s, j)) {
			best = j
		}
		switch {
		case j < len(s) && (isDigit(s[j]) || s[j] == '('): // "(0)20", "1(415)"
		case j+1 < len(s) && (s[j] == ' ' || s[j] == '-') && (isDigit(s[j+1]) || s[j+1] == '('):
			j++
		default:
			return best, best > 0
		}
	}
	return best, best > 0
}

// phoneGlued reports whether s[j], right after a digit group, makes the
// number part of something longer: a word, a placeholder, or a dotted or
// slashed number.
func phoneGlued(s string, j int) bool {
	c := s[j]
	if gluedRight(c) || c == '+' {
		return true
	}
	return (c == '.' || c == ',' || c == '/' || c == ':') && j+1 < len(s) && isDigit(s[j+1])
}
