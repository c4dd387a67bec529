package observability

import (
	"bytes"
	"strings"
	"sync"

	"github.com/pacerun/pacer/internal/linesplit"
)

// SanitizedTail keeps the end of a stream, such as a starting plugin's
// stderr, for an error message that quotes it. It masks before it cuts:
// each line (a line over 4 KiB in pieces cut where no secret is cut in two,
// as the log's lines are) passes through PEMLines and the sanitizer before
// it is kept, and only then is the start of what is kept dropped. Cut
// first, a quote could begin after the BEGIN line of a private key, or
// inside a value whose key (DB_PASSWORD=) was cut off, and what follows
// would no longer be recognised. It is safe for concurrent use.
type SanitizedTail struct {
	Max   int                 // bytes kept
	Clean func(string) string // the sanitizer; nil: DefaultSanitizer's

	mu   sync.Mutex
	pem  PEMLines
	line []byte // the line being written
	kept []byte // masked lines, each ending in '\n'
}

// tailPiece is the longest piece of a line masked at once.
const tailPiece = 4 << 10

func (t *SanitizedTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			t.line = append(t.line, p...)
			t.pieces()
			break
		}
		t.line = append(t.line, p[:i]...)
		t.pieces()
		t.keep(t.mask(&t.pem, t.line))
		t.line = t.line[:0]
		p = p[i+1:]
	}
	return n, nil
}

// pieces keeps the current line's pieces while it is over tailPiece bytes.
func (t *SanitizedTail) pieces() {
	for len(t.line) > tailPiece {
		n := linesplit.Cut(t.line, tailPiece)
		t.keep(t.mask(&t.pem, linesplit.Head(t.line, n)))
		t.line = linesplit.Rest(t.line, n)
	}
}

func (t *SanitizedTail) mask(pem *PEMLines, line []byte) string {
	clean := t.Clean
	if clean == nil {
		clean = DefaultSanitizer().String
	}
	return clean(pem.Line(string(line)))
}

func (t *SanitizedTail) keep(line string) {
	t.kept = append(append(t.kept, line...), '\n')
	if over := len(t.kept) - max(t.Max, 0); over > 0 {
		t.kept = append(t.kept[:0], t.kept[over:]...)
	}
}

// String returns what is kept, the unfinished last line included (masked
// as if it ended there), at most Max bytes, without surrounding white
// space.
func (t *SanitizedTail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	s := string(t.kept)
	if len(t.line) > 0 {
		pem := t.pem // the unfinished line may yet be continued
		s += t.mask(&pem, t.line)
	}
	if over := len(s) - max(t.Max, 0); over > 0 {
		s = s[over:]
	}
	return strings.TrimSpace(strings.ToValidUTF8(s, "")) // a cut may fall inside a character
}
