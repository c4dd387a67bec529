package observability

import (
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

	mu    sync.Mutex
	pem   PEMLines
	lines linesplit.Lines // the stream's lines, kept through mask and keep
	kept  []byte          // masked lines, each ending in '\n'
}

// tailPiece is the longest piece of a line masked at once.
const tailPiece = 4 << 10

func (t *SanitizedTail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.lines.Emit == nil {
		t.lines = linesplit.Lines{Max: tailPiece, Emit: func(line []byte) { t.keep(t.mask(&t.pem, line)) }}
	}
	return t.lines.Write(p)
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
	if line := t.lines.Pending(); len(line) > 0 {
		pem := t.pem // the unfinished line may yet be continued
		s += t.mask(&pem, line)
	}
	if over := len(s) - max(t.Max, 0); over > 0 {
		s = s[over:]
	}
	return strings.TrimSpace(strings.ToValidUTF8(s, "")) // a cut may fall inside a character
}
