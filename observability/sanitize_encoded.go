package observability

import "strings"

// 0. Percent-encoded text (URLs, form bodies, query strings): a secret in
// "next=%2Fcb%3Faccess_token%3Dya29..." or "ops%40example.com" has its key
// separator or its '@' encoded, so the masks below would not see it. Before
// them, each word (a run of non-space bytes) holding an encoded '@', '=',
// ':', '+' or '%' is decoded, and if the decoded word holds something to
// mask, the word is replaced by the decoded word with its masks
// ("next=/cb?access_token=[redacted]"). A word with nothing to mask stays
// as it was, encoded.

// maxDecodedWord bounds the words that are decoded: an encoded URL with a
// long query string fits; a longer run of non-space bytes is left alone.
const maxDecodedWord = 8 << 10

// maxDecodeRounds bounds the decoding of a word encoded more than once
// ("%2540" is "%40" is "@"). A word still encoded after that many rounds
// is redacted whole: no tool encodes that deep, and decoding further could
// reveal a secret on the next pass.
const maxDecodeRounds = 4

// encodedTrigger reports whether s[p], a '%', starts an encoded '@' (%40),
// '=' (%3D), ':' (%3A), '+' (%2B) or '%' (%25), in either case.
func encodedTrigger(s string, p int) bool {
	if p+2 >= len(s) {
		return false
	}
	switch hi, lo := s[p+1], s[p+2]|0x20; {
	case hi == '4':
		return lo == '0'
	case hi == '3':
		return lo == 'd' || lo == 'a'
	case hi == '2':
		return lo == 'b' || lo == '5'
	}
	return false
}

// maskPercentEncoded applies the masks to the decoded form of every
// percent-encoded word of s that has an encoded trigger (see above).
func (s *Sanitizer) maskPercentEncoded(in string) string {
	p := strings.IndexByte(in, '%')
	if p < 0 {
		return in
	}
	w := rewriter{src: in}
	for p >= 0 {
		next := p + 1
		if encodedTrigger(in, p) {
			rs, re := p, p
			for rs > w.last && in[rs-1] > ' ' {
				rs--
			}
			for re < len(in) && in[re] > ' ' {
				re++
			}
			if re-rs <= maxDecodedWord {
				if out, ok := s.decodedMasked(in[rs:re]); ok {
					w.replace(rs, re, out)
				}
			}
			next = re
		}
		j := strings.IndexByte(in[next:], '%')
		if j < 0 {
			break
		}
		p = next + j
	}
	return w.result()
}

// decodedMasked decodes word (up to maxDecodeRounds times) and returns it
// sanitized, if sanitizing changes it.
func (s *Sanitizer) decodedMasked(word string) (string, bool) {
	d := word
	for round := 0; ; round++ {
		nd, changed := percentDecode(d)
		if !changed {
			break
		}
		if round == maxDecodeRounds {
			return phRedacted, true
		}
		d = nd
	}
	// d holds no decodable escape any more, so this call does not come
	// back here.
	if out := s.String(d); out != d {
		return out, true
	}
	return "", false
}

// percentDecode decodes the %XX escapes of s that stand for printable ASCII
// (space to '~'); others (control bytes, non-ASCII) stay encoded, so that
// decoding never produces a line break or invalid UTF-8.
func percentDecode(s string) (string, bool) {
	var b []byte
	last := 0
	for p := strings.IndexByte(s, '%'); p >= 0 && p+2 < len(s); {
		if h, ok1 := unhex(s[p+1]); ok1 {
			if l, ok2 := unhex(s[p+2]); ok2 {
				if c := h<<4 | l; c >= ' ' && c <= '~' {
					if b == nil {
						b = make([]byte, 0, len(s))
					}
					b = append(b, s[last:p]...)
					b = append(b, c)
					last = p + 3
				}
			}
		}
		j := strings.IndexByte(s[max(p+1, last):], '%')
		if j < 0 {
			break
		}
		p = max(p+1, last) + j
	}
	if b == nil {
		return s, false
	}
	return string(append(b, s[last:]...)), true
}

func unhex(c byte) (byte, bool) {
	switch {
	case '0' <= c && c <= '9':
		return c - '0', true
	case 'a' <= c && c <= 'f':
		return c - 'a' + 10, true
	case 'A' <= c && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}
