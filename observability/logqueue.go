package observability

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"
)

// Default bounds of a LogQueue.
const (
	// DefaultLogQueueBytes bounds the bytes a LogQueue holds: those waiting
	// and those being written. 8 MiB is some 25,000 lines of a run
	// (about 330 bytes each), a minute of a busy runner's log.
	DefaultLogQueueBytes = 8 << 20
	// DefaultLogQueueLines bounds the lines a LogQueue holds, so that a
	// flood of short lines cannot queue more than a reader catches up with
	// in a few seconds.
	DefaultLogQueueLines = 65536
)

// DroppedLinesMsg is the message of the line a LogQueue writes where it
// dropped lines.
const DroppedLinesMsg = "log lines dropped: output blocked"

// LogQueueOptions configure a LogQueue; the zero value is the defaults.
type LogQueueOptions struct {
	// MaxBytes and MaxLines bound what the queue holds, the batch being
	// written included (defaults DefaultLogQueueBytes and
	// DefaultLogQueueLines). A line that does not fit is dropped.
	MaxBytes, MaxLines int
	// Notice returns the logger that writes the dropped-lines line into w,
	// in the format of the other lines (NewLogger's, with their common
	// attributes). Nil: a JSON handler with no options.
	Notice func(w io.Writer) *slog.Logger
}

// LogQueue is the writer between the log handlers and the process's log
// output (stderr): a line written to it (one Write call, as slog's handlers
// make per record) is queued and written by one goroutine, in order, at
// once when the output keeps up. A write never waits for the output: when
// the output blocks (a pipe nobody reads: a stuck log shipper, journald's or
// a container runtime's back-pressure) and the queue is full, lines are
// dropped, and counted (Dropped); once there is room again, the first line
// queued is one that says how many lines were dropped and over what time
// (DroppedLinesMsg, level WARN), in the place where they were dropped. Lines
// are written whole, one batch at a time, by one goroutine: never torn,
// never interleaved.
//
// Close flushes the queue, waiting no longer than its context allows.
type LogQueue struct {
	out      io.Writer
	maxBytes int
	maxLines int
	notice   *slog.Logger
	scratch  bytes.Buffer // what notice writes, with mu held

	mu       sync.Mutex
	pending  []byte // whole lines waiting for the writer
	lines    int    // lines in pending
	inBytes  int    // bytes of the batch being written
	inLines  int    // lines of the batch being written
	gap      uint64 // lines dropped since the last line queued
	gapFrom  time.Time
	gapUntil time.Time
	closing  bool
	state    queueState

	wake chan struct{} // a token when pending becomes non-empty
	done chan struct{} // closed when the writer goroutine returns

	queued   int64         // bytes ever queued, with mu held
	written  int64         // bytes ever handed to out, with mu held
	progress chan struct{} // closed (and made anew) when a write returns

	dropped      atomic.Uint64
	blockedSince atomic.Int64 // UnixNano when the write in progress began; 0 when none is
}

type queueState int

const (
	queueRunning   queueState = iota
	queueDirect               // flushed and closed: lines are written directly
	queueAbandoned            // closed with the output blocked: lines are dropped
)

// NewLogQueue returns a LogQueue writing to out and starts its writer
// goroutine; Close stops it.
func NewLogQueue(out io.Writer, o LogQueueOptions) *LogQueue {
	if o.MaxBytes <= 0 {
		o.MaxBytes = DefaultLogQueueBytes
	}
	if o.MaxLines <= 0 {
		o.MaxLines = DefaultLogQueueLines
	}
	q := &LogQueue{out: out, maxBytes: o.MaxBytes, maxLines: o.MaxLines,
		wake: make(chan struct{}, 1), done: make(chan struct{}), progress: make(chan struct{})}
	if o.Notice != nil {
		q.notice = o.Notice(&q.scratch)
	} else {
		q.notice = slog.New(slog.NewJSONHandler(&q.scratch, nil))
	}
	go q.run()
	return q
}

// Write queues p, one whole line, and returns at once: len(p) and no error,
// also when the line is dropped. p is copied.
func (q *LogQueue) Write(p []byte) (int, error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	switch q.state {
	case queueDirect:
		return q.out.Write(p)
	case queueAbandoned:
		q.dropped.Add(1)
		return len(p), nil
	}
	if q.gap > 0 {
		q.endGap(len(p))
	}
	if !q.fits(len(p), 1) || q.gap > 0 {
		q.drop()
		return len(p), nil
	}
	q.queue(p, 1)
	return len(p), nil
}

// fits reports whether n more bytes in lines more lines fit in the queue.
func (q *LogQueue) fits(n, lines int) bool {
	return len(q.pending)+q.inBytes+n <= q.maxBytes && q.lines+q.inLines+lines <= q.maxLines
}

func (q *LogQueue) queue(p []byte, lines int) {
	if len(q.pending) == 0 {
		select {
		case q.wake <- struct{}{}:
		default:
		}
	}
	q.pending = append(q.pending, p...)
	q.lines += lines
	q.queued += int64(len(p))
}

// drop counts one dropped line. With q.mu held.
func (q *LogQueue) drop() {
	now := time.Now()
	if q.gap == 0 {
		q.gapFrom = now
	}
	q.gap++
	q.gapUntil = now
	q.dropped.Add(1)
}

// endGap queues the dropped-lines line, if it fits with next more bytes
// behind it (next 0: whatever its size). With q.mu held.
func (q *LogQueue) endGap(next int) {
	q.scratch.Reset()
	q.notice.LogAttrs(context.Background(), slog.LevelWarn, DroppedLinesMsg,
		slog.Uint64("dropped_lines", q.gap),
		slog.Time("dropped_from", q.gapFrom), slog.Time("dropped_until", q.gapUntil),
		slog.Int64("dropped_for_ms", q.gapUntil.Sub(q.gapFrom).Milliseconds()))
	n := q.scratch.Len()
	if next > 0 && !q.fits(n+next, 2) {
		return
	}
	q.queue(q.scratch.Bytes(), bytes.Count(q.scratch.Bytes(), []byte{'\n'}))
	q.gap = 0
}

// run is the writer goroutine.
func (q *LogQueue) run() {
	defer close(q.done)
	var batch []byte
	for {
		q.mu.Lock()
		for len(q.pending) == 0 && !q.closing {
			q.mu.Unlock()
			<-q.wake
			q.mu.Lock()
		}
		if len(q.pending) == 0 || q.state == queueAbandoned {
			q.mu.Unlock()
			return
		}
		batch, q.pending = q.pending, batch[:0]
		q.inBytes, q.inLines, q.lines = len(batch), q.lines, 0
		q.mu.Unlock()

		q.blockedSince.Store(time.Now().UnixNano())
		n, err := q.out.Write(batch)
		q.blockedSince.Store(0)
		if err != nil {
			// The output is gone (a closed pipe): the lines not written
			// whole are lost.
			q.dropped.Add(uint64(bytes.Count(batch[min(n, len(batch)):], []byte{'\n'})))
		}
		if cap(batch) > 1<<20 {
			// Give back what a blocked output grew; keep up to 1 MiB
			// (two buffers, swapped), so that bursts do not allocate.
			batch = nil
		}

		q.mu.Lock()
		q.written += int64(q.inBytes)
		close(q.progress)
		q.progress = make(chan struct{})
		q.inBytes, q.inLines = 0, 0
		if q.gap > 0 && q.state == queueRunning {
			// The output took a batch: say what was dropped now, in its
			// place, even if nothing else is logged for a while.
			q.endGap(0)
		}
		q.mu.Unlock()
	}
}

// Flush waits until every line queued before it was called has been
// handed to the output, or until ctx is done (then it returns ctx's
// error). For a process about to exit without stopping (etcd ends it
// after a fatal error): its last lines, which say why, are written first.
func (q *LogQueue) Flush(ctx context.Context) error {
	q.mu.Lock()
	target := q.queued
	for q.written < target && q.state == queueRunning {
		progress := q.progress
		q.mu.Unlock()
		select {
		case <-progress:
		case <-q.done:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
		q.mu.Lock()
	}
	q.mu.Unlock()
	return nil
}

// Dropped is the number of lines dropped so far: because the queue was
// full, the output failed, or it was closed with the output blocked.
func (q *LogQueue) Dropped() uint64 { return q.dropped.Load() }

// Blocked is how long the write in progress has been waiting for the
// output; 0 when none is in progress.
func (q *LogQueue) Blocked() time.Duration {
	since := q.blockedSince.Load()
	if since == 0 {
		return 0
	}
	return max(0, time.Since(time.Unix(0, since)))
}

// Close writes what the queue holds (the dropped-lines line included) and
// stops the writer goroutine, waiting until ctx is done at most. When the
// output has taken everything, later lines are written directly, as they
// come; when ctx ends first, Close returns its error, the goroutine stops
// after its current write returns, and later lines are dropped. Close
// returns nil when the queue is already closed.
func (q *LogQueue) Close(ctx context.Context) error {
	q.mu.Lock()
	if q.closing {
		q.mu.Unlock()
		return nil
	}
	q.closing = true
	if q.gap > 0 {
		q.endGap(0)
	}
	select {
	case q.wake <- struct{}{}:
	default:
	}
	q.mu.Unlock()
	select {
	case <-q.done:
		q.mu.Lock()
		q.state = queueDirect
		q.mu.Unlock()
		return nil
	case <-ctx.Done():
		q.mu.Lock()
		defer q.mu.Unlock()
		select {
		case <-q.done: // it finished meanwhile
			q.state = queueDirect
			return nil
		default:
		}
		q.state = queueAbandoned
		q.dropped.Add(uint64(q.lines))
		q.pending, q.lines = nil, 0
		return ctx.Err()
	}
}
