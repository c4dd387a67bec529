package linesplit

import "bytes"

// Lines splits a stream into its lines (without their '\n') and hands each
// to Emit, empty ones included; a line over Max bytes goes in pieces as
// soon as it is that long (Cut, Head, Rest), so that no piece cuts a secret
// in two where that can be avoided. Max and Emit must be set before the
// first Write. It is not safe for concurrent use.
type Lines struct {
	Max  int
	Emit func(piece []byte)

	buf []byte // the line being written
}

func (l *Lines) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		i := bytes.IndexByte(p, '\n')
		if i < 0 {
			l.buf = append(l.buf, p...)
			l.pieces()
			break
		}
		l.buf = append(l.buf, p[:i]...)
		l.pieces()
		l.Emit(l.buf)
		l.buf = l.buf[:0]
		p = p[i+1:]
	}
	return n, nil
}

// pieces emits pieces of the current line while it is over Max bytes.
func (l *Lines) pieces() {
	for len(l.buf) > l.Max {
		n := Cut(l.buf, l.Max)
		l.Emit(Head(l.buf, n))
		l.buf = Rest(l.buf, n)
	}
}

// Pending is the unfinished last line, not handed to Emit yet. It is valid
// until the next Write.
func (l *Lines) Pending() []byte { return l.buf }
