package main

import (
	"bytes"
	"fmt"
	"slices"
	"sync"

	"github.com/pacerun/pacer/internal/linesplit"
)

// maxLineBytes bounds one forwarded log line: the runner masks a line up
// to this size whole and logs it in 4 KiB pieces (observability
// MaxMaskedLine). A longer line is forwarded in pieces cut where linesplit
// says, so that no secret is cut in two where that can be avoided: the
// runner masks each on its own.
const maxLineBytes = 16 << 10

// output keeps the first max bytes of a command's output and forwards each
// complete line to onLine while the budget lasts. It is safe for the
// concurrent writes of stdout and stderr.
type output struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	max       int
	truncated bool
	cut       int64 // bytes not kept
	notes     []string
	line      []byte
	onLine    func(string)
}

func newOutput(max int, onLine func(string)) *output {
	return &output{max: max, onLine: onLine}
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := len(p)
	if o.truncated {
		o.cut += int64(n)
		return n, nil
	}
	if room := o.max - o.buf.Len(); room < len(p) {
		p = o.cutAt(p, max(room, 0))
	}
	o.buf.Write(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			o.line = append(o.line, p...)
			o.emitLong()
			break
		}
		o.line = append(o.line, p[:i]...)
		o.emit()
		p = p[i+1:]
	}
	return n, nil // report everything consumed: the child must never block on us
}

// cutAt ends the output within p, whose first room bytes fit: between
// words (linesplit.KeepWords), so that no secret is kept, stored or
// forwarded in part, where the sanitizer would not recognise it. The
// partial word dropped may begin in what was kept before (and in the
// current line, not yet forwarded). It returns what of p to keep.
func (o *output) cutAt(p []byte, room int) []byte {
	o.truncated = true
	// The kept output's last MaxWordDropped bytes, then p up to and with
	// its first byte dropped.
	start := max(o.buf.Len()-linesplit.MaxWordDropped, 0)
	tail := append(slices.Clone(o.buf.Bytes()[start:]), p[:room+1]...)
	keep := start + linesplit.KeepWords(tail, len(tail)-1) // of the whole output
	if keep >= o.buf.Len() {
		o.cut += int64(len(p) - (keep - o.buf.Len()))
		return p[:keep-o.buf.Len()]
	}
	dropped := o.buf.Len() - keep
	o.buf.Truncate(keep)
	o.line = o.line[:max(len(o.line)-dropped, 0)]
	o.cut += int64(dropped + len(p))
	return nil
}

// emit forwards the current line, in pieces if it is long.
func (o *output) emit() {
	o.emitLong()
	if len(o.line) > 0 {
		o.onLine(string(o.line))
	}
	o.line = o.line[:0]
}

// emitLong forwards pieces of the current line while it is over
// maxLineBytes, keeping the rest.
func (o *output) emitLong() {
	for len(o.line) > maxLineBytes {
		n := linesplit.Cut(o.line, maxLineBytes)
		o.onLine(string(linesplit.Head(o.line, n)))
		o.line = linesplit.Rest(o.line, n)
	}
}

// Flush forwards a final unterminated line.
func (o *output) Flush() {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.emit()
}

// Note adds a line after the output, outside its budget.
func (o *output) Note(s string) {
	o.mu.Lock()
	defer o.mu.Unlock()
	o.notes = append(o.notes, s)
}

// String is the kept output, then the notes, then, if output was cut, a
// last line saying how many bytes were (the runner adds to that count if
// it cuts more).
func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	s := o.buf.String()
	for _, n := range o.notes {
		if s != "" && s[len(s)-1] != '\n' {
			s += "\n"
		}
		s += n
	}
	if o.truncated {
		s += fmt.Sprintf("\n[truncated %d bytes]", o.cut)
	}
	return s
}

func (o *output) Truncated() bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.truncated
}
