package runner

import (
	"encoding/json"
	"strconv"
	"time"
	"unicode/utf8"
)

// Record encoding. Every run writes its record twice (the claim and the
// end), so encoding/json's reflection was a part of each run's CPU; a
// record is encoded here by hand instead, to the same bytes: json.Marshal
// of the struct, field for field, in its order and with its omitempty and
// omitzero rules. Whatever this file does not write verbatim (a string
// that JSON escapes, a time json refuses or writes otherwise) makes the
// whole record go through json.Marshal, so the bytes never differ
// (TestEncodeRecordMatchesJSON compares them).

// encodeRecord returns rec as JSON, the bytes json.Marshal(rec) returns.
func encodeRecord(rec *Record) ([]byte, error) {
	// Room for the keys, times and numbers, and the strings as they are.
	n := 512 + len(rec.Job) + len(rec.RunID) + len(rec.CorrelationID) + len(rec.TraceID) + len(rec.Node) + len(rec.TriggerID) +
		len(rec.State) + len(rec.Reason) + len(rec.Duration) + len(rec.Error) + len(rec.Output) + len(rec.Progress) + len(rec.ProcessesLeft)
	b := make([]byte, 0, n)
	if b, ok := appendRecord(b, rec); ok {
		return b, nil
	}
	return json.Marshal(rec)
}

// appendRecord appends rec as JSON to b; ok is false when a field needs
// encoding/json (then b is garbage).
func appendRecord(b []byte, rec *Record) (_ []byte, ok bool) {
	w := recordWriter{b: b, ok: true}
	w.str(`{"job":`, rec.Job)
	w.time(`,"scheduled_time":`, rec.ScheduledTime)
	w.str(`,"run_id":`, rec.RunID)
	w.str(`,"correlation_id":`, rec.CorrelationID)
	w.optStr(`,"trace_id":`, rec.TraceID)
	w.str(`,"node":`, rec.Node)
	w.b = strconv.AppendInt(append(w.b, `,"fencing_token":`...), rec.FencingToken, 10)
	if rec.Attempt != 0 {
		w.b = strconv.AppendInt(append(w.b, `,"attempt":`...), int64(rec.Attempt), 10)
	}
	if rec.Manual {
		w.b = append(w.b, `,"manual":true`...)
	}
	w.optStr(`,"trigger_id":`, rec.TriggerID)
	w.str(`,"state":`, rec.State)
	w.optStr(`,"reason":`, rec.Reason)
	w.time(`,"start":`, rec.Start)
	if !rec.End.IsZero() {
		w.time(`,"end":`, rec.End)
	}
	w.optStr(`,"duration":`, rec.Duration)
	w.optStr(`,"error":`, rec.Error)
	w.optStr(`,"output":`, rec.Output)
	w.optStr(`,"progress":`, rec.Progress)
	w.optStr(`,"processes_left":`, rec.ProcessesLeft)
	if !rec.ScheduledUntil.IsZero() {
		w.time(`,"scheduled_until":`, rec.ScheduledUntil)
	}
	if rec.Slots != 0 {
		w.b = strconv.AppendInt(append(w.b, `,"slots":`...), int64(rec.Slots), 10)
	}
	if rec.Queued {
		w.b = append(w.b, `,"queued":true`...)
	}
	if !rec.RetryAt.IsZero() {
		w.time(`,"retry_at":`, rec.RetryAt)
	}
	if rec.Reruns != 0 {
		w.b = strconv.AppendInt(append(w.b, `,"reruns":`...), int64(rec.Reruns), 10)
	}
	return append(w.b, '}'), w.ok
}

// recordWriter appends a record's fields; ok turns false at the first
// value it cannot write as encoding/json would.
type recordWriter struct {
	b  []byte
	ok bool
}

// str appends a key (with its punctuation) and a string as encoding/json
// writes it, with its escapes: quote, backslash, \n, \r, \t, and <, > and
// & as \u003c, \u003e and \u0026 (it escapes HTML). Other control
// characters, invalid UTF-8 and U+2028 and U+2029 it leaves to it.
func (w *recordWriter) str(key, s string) {
	b := append(append(w.b, key...), '"')
	start := 0
	for i := 0; i < len(s); {
		c := s[i]
		if c >= 0x20 && c < utf8.RuneSelf && c != '"' && c != '\\' && c != '<' && c != '>' && c != '&' {
			i++
			continue
		}
		if c >= utf8.RuneSelf {
			r, n := utf8.DecodeRuneInString(s[i:])
			if r == utf8.RuneError && n == 1 || r == '\u2028' || r == '\u2029' {
				w.ok = false
				return
			}
			i += n
			continue
		}
		var esc string
		switch c {
		case '"':
			esc = `\"`
		case '\\':
			esc = `\\`
		case '\n':
			esc = `\n`
		case '\r':
			esc = `\r`
		case '\t':
			esc = `\t`
		case '<':
			esc = `\u003c`
		case '>':
			esc = `\u003e`
		case '&':
			esc = `\u0026`
		default:
			w.ok = false
			return
		}
		b = append(append(b, s[start:i]...), esc...)
		i++
		start = i
	}
	w.b = append(append(b, s[start:]...), '"')
}

// optStr is str for an omitempty field.
func (w *recordWriter) optStr(key, s string) {
	if s != "" {
		w.str(key, s)
	}
}

// time appends a key and t as time.Time's MarshalJSON writes it (RFC 3339
// with nanoseconds), for the times it writes so: years 0 to 9999, offsets
// of whole minutes under a day.
func (w *recordWriter) time(key string, t time.Time) {
	_, off := t.Zone()
	if y := t.Year(); y < 0 || y > 9999 || off%60 != 0 || off <= -24*3600 || off >= 24*3600 {
		w.ok = false
		return
	}
	w.b = append(t.AppendFormat(append(append(w.b, key...), '"'), time.RFC3339Nano), '"')
}
