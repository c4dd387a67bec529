package main

import (
	"bytes"
	"fmt"
	"sync"

	"github.com/pacerun/pacer/internal/linesplit"
)

// maxLineBytes bounds one forwarded log line. A longer line is forwarded in
// pieces cut where linesplit says, so that no secret is cut in two: the
// runner sanitizes each piece on its own.
const maxLineBytes = 4 << 10

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
	if room := o.max - o.buf.Len(); room < len(p) {
		o.truncated = true
		if room < 0 {
			room = 0
		}
		o.cut += int64(len(p) - room)
		p = p[:room]
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
