package observability

import (
	"strings"

	"github.com/pacerun/pacer/internal/linesplit"
)

// PEMLines masks private-key blocks in text that arrives one line at a time,
// such as a task's output logged line by line. String masks a block only
// when it sees the whole of it; given the lines of a key one by one, it
// would mask the BEGIN line and let the base64 body and the END line
// through. A PEMLines remembers, across the lines of one stream, that a
// block is open: from a line ending with "-----BEGIN ... PRIVATE KEY-----"
// (or KEY BLOCK) to the matching END line, every line becomes
// "[private_key]" (the END line up to its end; what follows it on its line
// is kept). A BEGIN line with no END line masks at most maxPEMBlock (64 KiB)
// of lines, the size of the largest private keys, so it cannot hide the rest
// of a long output.
//
// Use one PEMLines per stream (a run's log records, a process's stdout) and
// pass each line through Line before it is logged; the logger's sanitizer
// still masks everything else. A PEMLines is not safe for concurrent use.
// The zero value is ready to use.
type PEMLines struct {
	open bool
	n    int // bytes of the open block so far
}

// Line returns line with the private-key material it holds masked, given
// the lines seen before it.
func (p *PEMLines) Line(line string) string {
	if p.open {
		if i := strings.Index(line, "-----END "); i >= 0 {
			for k := i; k >= 0; {
				if e, ok := pemPrivateLine(line, k, "END"); ok {
					p.open = false
					return phPrivateKey + p.Line(line[e:])
				}
				j := strings.Index(line[k+1:], "-----END ")
				if j < 0 {
					break
				}
				k += 1 + j
			}
		}
		p.n += len(line) + 1
		if p.n <= maxPEMBlock {
			return phPrivateKey
		}
		p.open = false // no END within the bound: a lone BEGIN line
	}
	if !strings.Contains(line, "-----BEGIN ") {
		return line
	}
	out, open := maskPrivateKeysOpen(line)
	if open {
		p.open, p.n = true, len(line)+1-strings.LastIndex(line, "-----BEGIN ")
	}
	return out
}

// MaxLogPiece bounds a log line made of a long line of output (a task's,
// a plugin's stray stdout or stderr): a longer one is logged in pieces.
const MaxLogPiece = 4 << 10

// MaxMaskedLine bounds the line Pieces masks whole: what reaches it as one
// line of output, the producers (the shell plugin, the plugin host) keep
// whole up to this size and cut beyond it (linesplit), each part then
// masked on its own.
const MaxMaskedLine = 16 << 10

// Pieces returns line masked whole, in pieces of at most max bytes cut
// between words (linesplit). Masked before it is cut, no secret can be cut
// in two whose halves escape the masking (attack 32: a `Cookie:` header's
// later piece, `--token` and its value on either side of a cut, a token
// in a 4 KiB URL, each logged in clear when the pieces were masked one by
// one).
func (s *Sanitizer) Pieces(line string, max int) []string {
	return linesplit.Split(s.String(line), max)
}
