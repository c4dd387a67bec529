package observability_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/pacerun/pacer/observability"
)

// gateWriter is a log output that can block: while shut, a Write signals
// entered and waits until the gate opens (or the writer is broken).
type gateWriter struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	shut    chan struct{} // nil: open
	broken  bool
	entered chan struct{}
}

func newGateWriter() *gateWriter { return &gateWriter{entered: make(chan struct{}, 1)} }

func (w *gateWriter) close() { // shut the gate
	w.mu.Lock()
	defer w.mu.Unlock()
	w.shut = make(chan struct{})
}

func (w *gateWriter) open() {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.shut != nil {
		close(w.shut)
		w.shut = nil
	}
}

// breakOff makes the output fail, as a pipe whose reader is gone.
func (w *gateWriter) breakOff() {
	w.mu.Lock()
	w.broken = true
	w.mu.Unlock()
	w.open()
}

func (w *gateWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	shut := w.shut
	w.mu.Unlock()
	if shut != nil {
		select {
		case w.entered <- struct{}{}:
		default:
		}
		<-shut
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.broken {
		return 0, io.ErrClosedPipe
	}
	return w.buf.Write(p)
}

func (w *gateWriter) text() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// waitFor waits until cond holds, up to 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func closeQueue(t *testing.T, q *observability.LogQueue) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := q.Close(ctx); err != nil {
		t.Fatalf("close: %v", err)
	}
}

// jsonLines parses every line of s, failing on one that is not a JSON
// object (a torn or interleaved line).
func jsonLines(t *testing.T, s string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		var l map[string]any
		if err := json.Unmarshal(sc.Bytes(), &l); err != nil {
			t.Fatalf("torn or foreign line %q: %v", sc.Text(), err)
		}
		out = append(out, l)
	}
	return out
}

// With an output that keeps up, every line arrives, in order, and Close
// writes the rest; lines logged after Close are written directly.
func TestLogQueueWritesEveryLineInOrder(t *testing.T) {
	t.Parallel()
	w := newGateWriter()
	q := observability.NewLogQueue(w, observability.LogQueueOptions{})
	log := slog.New(slog.NewJSONHandler(q, nil))
	for i := range 1000 {
		log.Info("line", "i", i)
	}
	closeQueue(t, q)
	log.Info("line", "i", 1000)
	lines := jsonLines(t, w.text())
	if len(lines) != 1001 {
		t.Fatalf("%d lines, want 1001", len(lines))
	}
	for i, l := range lines {
		if l["i"] != float64(i) {
			t.Fatalf("line %d is %v", i, l)
		}
	}
	if q.Dropped() != 0 {
		t.Fatalf("dropped %d", q.Dropped())
	}
}

// An output that blocks: writes return at once; what does not fit is
// dropped and counted; when the output resumes, the queued lines come
// first, then one line saying how many were dropped and when, then the
// lines logged after.
func TestLogQueueDropsWhileTheOutputBlocks(t *testing.T) {
	t.Parallel()
	w := newGateWriter()
	w.close()
	// Four lines: the one being written and three queued.
	q := observability.NewLogQueue(w, observability.LogQueueOptions{MaxLines: 4})
	log := slog.New(slog.NewJSONHandler(q, nil))
	log.Info("line", "i", 0)
	<-w.entered // the writer goroutine waits in the output's Write
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 1; i < 100; i++ {
			log.Info("line", "i", i)
		}
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("log writes waited for a blocked output")
	}
	if got := q.Dropped(); got != 96 {
		t.Fatalf("dropped %d lines, want 96 (100 less the one being written and three queued)", got)
	}
	waitFor(t, "Blocked > 0", func() bool { return q.Blocked() > 0 })

	w.open()
	waitFor(t, "the dropped-lines line", func() bool { return strings.Contains(w.text(), observability.DroppedLinesMsg) })
	log.Info("line", "i", 100)
	closeQueue(t, q)
	lines := jsonLines(t, w.text())
	var got []string
	for _, l := range lines {
		if l["msg"] == observability.DroppedLinesMsg {
			if l["level"] != "WARN" || l["dropped_lines"] != float64(96) || l["dropped_from"] == nil || l["dropped_until"] == nil || l["dropped_for_ms"] == nil {
				t.Fatalf("dropped-lines line lacks its fields: %v", l)
			}
			got = append(got, "dropped")
			continue
		}
		got = append(got, fmt.Sprint(l["i"]))
	}
	if want := "0 1 2 3 dropped 100"; strings.Join(got, " ") != want {
		t.Fatalf("lines %q, want %q", strings.Join(got, " "), want)
	}
	if q.Blocked() != 0 {
		t.Fatalf("Blocked = %v after the output resumed", q.Blocked())
	}
}

// Stopped with lines dropped, the queue writes the lines queued before the
// drops, then the dropped-lines line.
func TestLogQueueSaysWhatWasDroppedWhenClosed(t *testing.T) {
	t.Parallel()
	w := newGateWriter()
	w.close()
	q := observability.NewLogQueue(w, observability.LogQueueOptions{MaxLines: 2})
	log := slog.New(slog.NewJSONHandler(q, nil))
	log.Info("line", "i", 0)
	<-w.entered
	for i := 1; i < 5; i++ {
		log.Info("line", "i", i) // 1 queued, 2, 3, 4 dropped
	}
	w.open()
	closeQueue(t, q)
	if got, want := lineSummary(t, w.text()), "0 1 dropped 3"; got != want {
		t.Fatalf("lines %q, want %q", got, want)
	}
}

// A line longer than the whole queue is dropped even with an output that
// keeps up; the next line that fits comes after the line saying so.
func TestLogQueueSaysWhatWasDroppedBeforeTheNextLine(t *testing.T) {
	t.Parallel()
	w := newGateWriter()
	q := observability.NewLogQueue(w, observability.LogQueueOptions{MaxBytes: 1024})
	log := slog.New(slog.NewJSONHandler(q, nil))
	log.Info("line", "i", 0, "pad", strings.Repeat("x", 2000))
	log.Info("line", "i", 1)
	closeQueue(t, q)
	if got, want := lineSummary(t, w.text()), "dropped 1 1"; got != want {
		t.Fatalf("lines %q, want %q", got, want)
	}
}

// Many goroutines logging at once through a slow output: every line
// arrives whole or is counted dropped, each goroutine's lines in order, and
// the dropped-lines lines add up to the count.
func TestLogQueueNeverTearsLines(t *testing.T) {
	t.Parallel()
	pr, pw := io.Pipe()
	q := observability.NewLogQueue(pw, observability.LogQueueOptions{MaxBytes: 16 << 10})
	log := slog.New(slog.NewJSONHandler(q, nil))
	var read bytes.Buffer
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		buf := make([]byte, 100) // a slow reader: small reads
		for {
			n, err := pr.Read(buf)
			read.Write(buf[:n])
			if err != nil {
				return
			}
		}
	}()
	const writers, each = 8, 2000
	pad := strings.Repeat("x", 200)
	var wg sync.WaitGroup
	for g := range writers {
		wg.Go(func() {
			for i := range each {
				log.Info("line", "g", g, "i", i, "pad", pad)
			}
		})
	}
	wg.Wait()
	closeQueue(t, q)
	pw.Close()
	<-readDone
	last := map[float64]float64{}
	var delivered, reported uint64
	for _, l := range jsonLines(t, read.String()) {
		if l["msg"] == observability.DroppedLinesMsg {
			reported += uint64(l["dropped_lines"].(float64))
			continue
		}
		g, i := l["g"].(float64), l["i"].(float64)
		if prev, ok := last[g]; ok && i <= prev {
			t.Fatalf("writer %v: line %v after %v", g, i, prev)
		}
		last[g] = i
		if l["pad"] != pad {
			t.Fatalf("line altered: %v", l)
		}
		delivered++
	}
	if delivered+q.Dropped() != writers*each || reported != q.Dropped() {
		t.Fatalf("%d lines delivered, %d dropped (%d reported), want %d in all", delivered, q.Dropped(), reported, writers*each)
	}
	t.Logf("%d delivered, %d dropped", delivered, q.Dropped())
}

// Close gives up on an output that stays blocked when its context ends;
// later lines are dropped, and the writer goroutine ends once the output's
// write returns.
func TestLogQueueCloseGivesUpOnABlockedOutput(t *testing.T) {
	t.Parallel()
	w := newGateWriter()
	w.close()
	q := observability.NewLogQueue(w, observability.LogQueueOptions{})
	log := slog.New(slog.NewJSONHandler(q, nil))
	log.Info("line", "i", 0)
	<-w.entered
	log.Info("line", "i", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := q.Close(ctx); err != context.DeadlineExceeded {
		t.Fatalf("Close = %v, want %v", err, context.DeadlineExceeded)
	}
	log.Info("line", "i", 2)
	if got := q.Dropped(); got != 2 {
		t.Fatalf("dropped %d, want 2 (the queued line and the one after Close)", got)
	}
	w.breakOff() // the goroutine's write returns; goleak checks it ends
}

// A failing output (its reader gone) loses lines, which are counted.
func TestLogQueueCountsLinesTheOutputRefused(t *testing.T) {
	t.Parallel()
	w := newGateWriter()
	w.breakOff()
	q := observability.NewLogQueue(w, observability.LogQueueOptions{})
	log := slog.New(slog.NewJSONHandler(q, nil))
	for i := range 10 {
		log.Info("line", "i", i)
	}
	closeQueue(t, q)
	if q.Dropped() != 10 {
		t.Fatalf("dropped %d, want 10", q.Dropped())
	}
}

// The dropped-lines line is written by the logger Notice gives: the
// runner's format and attributes.
func TestLogQueueNoticeInTheLoggersFormat(t *testing.T) {
	t.Parallel()
	w := newGateWriter()
	w.close()
	q := observability.NewLogQueue(w, observability.LogQueueOptions{MaxLines: 1, Notice: func(out io.Writer) *slog.Logger {
		l, err := observability.NewLogger(out, slog.LevelInfo, "text", nil)
		if err != nil {
			panic(err)
		}
		return l.With("node", "web-1")
	}})
	_, _ = q.Write([]byte("first\n"))
	<-w.entered
	_, _ = q.Write([]byte("second\n"))
	w.open()
	closeQueue(t, q)
	out := w.text()
	if !strings.HasPrefix(out, "first\ntime=") || !strings.Contains(out, `level=WARN msg="log lines dropped: output blocked" node=web-1 dropped_lines=1 `) {
		t.Fatalf("output:\n%s", out)
	}
}

func TestLogQueueMetrics(t *testing.T) {
	t.Parallel()
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	w := newGateWriter()
	w.close()
	q := observability.NewLogQueue(w, observability.LogQueueOptions{MaxLines: 1})
	if err := m.WatchLogQueue(q); err != nil {
		t.Fatal(err)
	}
	if err := testutil.CollectAndCompare(m.Registry, strings.NewReader(`
# HELP pacer_log_lines_dropped_total Log lines this runner dropped instead of waiting for its log output (stderr), which was blocked or failed.
# TYPE pacer_log_lines_dropped_total counter
pacer_log_lines_dropped_total 0
`), "pacer_log_lines_dropped_total"); err != nil {
		t.Fatal(err)
	}
	_, _ = q.Write([]byte("{}\n"))
	<-w.entered
	_, _ = q.Write([]byte("{}\n"))
	_, _ = q.Write([]byte("{}\n"))
	if got := sample(t, m, "pacer_log_lines_dropped_total"); got != 2 {
		t.Fatalf("pacer_log_lines_dropped_total = %v, want 2", got)
	}
	waitFor(t, "the blocked gauge above 0", func() bool {
		return sample(t, m, "pacer_log_output_blocked_seconds") > 0
	})
	w.open()
	closeQueue(t, q)
	if got := sample(t, m, "pacer_log_output_blocked_seconds"); got != 0 {
		t.Fatalf("pacer_log_output_blocked_seconds = %v after the output resumed", got)
	}
	if problems, err := testutil.GatherAndLint(m.Registry, "pacer_log_lines_dropped_total", "pacer_log_output_blocked_seconds"); err != nil || len(problems) > 0 {
		t.Fatalf("lint: %v %v", problems, err)
	}
}

// sample is the value of the metric name, which has one series.
func sample(t *testing.T, m *observability.Metrics, name string) float64 {
	t.Helper()
	mfs, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		s := mf.GetMetric()[0]
		if c := s.GetCounter(); c != nil {
			return c.GetValue()
		}
		return s.GetGauge().GetValue()
	}
	t.Fatalf("no metric %s", name)
	return 0
}

// lineSummary is the lines of text, each its "i" or, for a dropped-lines
// line, "dropped N", joined by spaces.
func lineSummary(t *testing.T, text string) string {
	t.Helper()
	var got []string
	for _, l := range jsonLines(t, text) {
		if l["msg"] == observability.DroppedLinesMsg {
			got = append(got, fmt.Sprintf("dropped %v", l["dropped_lines"]))
			continue
		}
		got = append(got, fmt.Sprint(l["i"]))
	}
	return strings.Join(got, " ")
}

// Flush returns once the lines queued before it are written: a process
// about to end (etcd's fatal error) gets its last lines out first. While the
// output is blocked it waits, until its context ends.
func TestLogQueueFlushWaitsForTheLinesQueued(t *testing.T) {
	t.Parallel()
	w := newGateWriter()
	w.close()
	q := observability.NewLogQueue(w, observability.LogQueueOptions{})
	defer closeQueue(t, q)
	log := slog.New(slog.NewJSONHandler(q, nil))
	log.Info("line", "i", 0)
	<-w.entered // the writer holds line 0, blocked
	log.Info("line", "i", 1)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := q.Flush(ctx); err == nil {
		t.Fatal("Flush returned while the output was blocked")
	}
	w.open()
	if err := q.Flush(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := lineSummary(t, w.text()), "0 1"; got != want {
		t.Fatalf("after Flush the output has %q, want %q", got, want)
	}
}
