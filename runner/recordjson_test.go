package runner

import (
	"bytes"
	"encoding/json"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
	"time"
)

// plainRecord is Record without methods: what json.Marshal writes.
type plainRecord Record

// TestEncodeRecordMatchesJSON: the hand-written encoding is byte for byte
// json.Marshal's, for records as runs write them and for every kind of
// value it leaves to encoding/json (escaped strings, odd times), and an
// error where json.Marshal gives one.
func TestEncodeRecordMatchesJSON(t *testing.T) {
	at := time.Date(2026, 12, 6, 17, 0, 1, 230_000_000, time.UTC)
	strs := []string{"", "j", "bench-0001", "a b", `quo"te`, `back\slash`, "<b>&amp;</b>", "line\nbreak", "tab\t", "\x00\x1f",
		"ünïcode", "\u2028\u2029", "a\r\nb", "\b\f", "bad \xff utf-8", "del \x7f", strings.Repeat("x", 5000), "99% done"}
	times := []time.Time{{}, at, at.Add(time.Nanosecond), at.Truncate(time.Second), at.In(time.FixedZone("p", 5*3600+30*60)),
		at.In(time.FixedZone("s", 61)), at.In(time.FixedZone("d", 24*3600)), at.In(time.FixedZone("m", -23*3600-59*60)),
		time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(-1, 1, 1, 0, 0, 0, 0, time.UTC), time.Date(0, 1, 1, 0, 0, 0, 0, time.UTC),
		time.Date(9999, 12, 31, 23, 59, 59, 999_999_999, time.UTC), at.In(time.Local)}
	ints := []int{0, 1, -1, 3, 1 << 40}
	rng := rand.New(rand.NewPCG(1, 2))
	// Most picks plain, as most records are.
	pick := func(s []string) string {
		if rng.IntN(8) == 0 {
			return s[rng.IntN(len(s))]
		}
		return s[rng.IntN(3)]
	}
	pickT := func() time.Time {
		if rng.IntN(8) == 0 {
			return times[rng.IntN(len(times))]
		}
		return times[rng.IntN(4)]
	}
	recs := []Record{
		{}, // every omitempty field empty
		{Job: "bench-0001", ScheduledTime: at, RunID: "01JEX5", CorrelationID: "c0ffee", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736",
			Node: "bench", FencingToken: 42, Attempt: 1, State: "running", Start: at},
		{Job: "j", ScheduledTime: at, RunID: "r", Node: "n", FencingToken: 7, Attempt: 2, Manual: true, TriggerID: "t", State: "success",
			Start: at, End: at.Add(time.Second), Duration: "1s", Output: "ok\n", Progress: "50% half"},
		{Job: "j", ScheduledTime: at, RunID: "r", Node: "n", State: "skipped", Reason: SkipMisfire, Start: at, End: at,
			ScheduledUntil: at.Add(time.Minute), Slots: 61, Error: "missed"},
	}
	// Random records fill every field by its type, so that a field added
	// to Record and not to the encoder fails here.
	for range 3000 {
		var rec Record
		v := reflect.ValueOf(&rec).Elem()
		for i := range v.NumField() {
			if !v.Type().Field(i).IsExported() {
				continue // not stored (Record.claimed)
			}
			switch f := v.Field(i); f.Interface().(type) {
			case string:
				f.SetString(pick(strs))
			case time.Time:
				f.Set(reflect.ValueOf(pickT()))
			case int, int64:
				f.SetInt(int64(ints[rng.IntN(len(ints))]))
			case bool:
				f.SetBool(rng.IntN(2) == 0)
			default:
				t.Fatalf("Record.%s: a %s, which this test does not fill", v.Type().Field(i).Name, f.Type())
			}
		}
		recs = append(recs, rec)
	}
	fast := 0
	for i := range recs {
		want, werr := json.Marshal(plainRecord(recs[i]))
		got, gerr := encodeRecord(&recs[i])
		if (werr != nil) != (gerr != nil) || !bytes.Equal(got, want) {
			t.Fatalf("record %d: encodeRecord = %s, %v; json.Marshal = %s, %v", i, got, gerr, want, werr)
		}
		if _, ok := appendRecord(nil, &recs[i]); ok {
			fast++
		}
	}
	// The common records took the hand-written path (else this test
	// compares json.Marshal with itself).
	for i := range 4 {
		if _, ok := appendRecord(nil, &recs[i]); !ok {
			t.Errorf("record %d went through encoding/json: %+v", i, recs[i])
		}
	}
	t.Logf("%d of %d records encoded by hand", fast, len(recs))
}

func BenchmarkEncodeRecord(b *testing.B) {
	at := time.Now()
	rec := Record{Job: "bench-0001", ScheduledTime: at.Truncate(time.Second).UTC(), RunID: "01JEX5Q8Y8F4ZK3M2T9W0N1B7C",
		CorrelationID: "01JEX5Q8Y8F4ZK3M2T9W0N1B7D", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", Node: "bench", FencingToken: 42,
		Attempt: 1, State: "success", Start: at.UTC(), End: at.Add(time.Millisecond).UTC(), Duration: "1ms"}
	b.Run("json", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = json.Marshal(rec)
		}
	})
	b.Run("hand", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			_, _ = encodeRecord(&rec)
		}
	})
}

// A run's record is encoded in one allocation: its buffer is sized from
// the strings, not grown.
func TestEncodeRecordAllocatesOnce(t *testing.T) {
	at := time.Date(2026, 12, 6, 17, 0, 1, 230_000_000, time.FixedZone("x", 3600))
	rec := Record{Job: "a-job-with-a-long-name-" + strings.Repeat("x", 100), ScheduledTime: at, RunID: "01JEX5Q8Y8F4ZK3M2T9W0N1B7C",
		CorrelationID: "01JEX5Q8Y8F4ZK3M2T9W0N1B7D", TraceID: "4bf92f3577b34da6a3ce929d0e0e4736", Node: "node-1", FencingToken: 1 << 60,
		Attempt: 99, Manual: true, TriggerID: "01JEX5Q8Y8F4ZK3M2T9W0N1B7E", State: "success", Reason: "because", Start: at, End: at,
		Duration: "1h2m3.456s", Error: "e", Output: strings.Repeat("output ", 100), Progress: "100% done", ProcessesLeft: "none",
		ScheduledUntil: at, Slots: 1 << 30, Queued: true, RetryAt: at, Reruns: 2}
	if n := testing.AllocsPerRun(100, func() { _, _ = encodeRecord(&rec) }); n != 1 {
		t.Fatalf("encodeRecord allocates %v times, want 1", n)
	}
}
