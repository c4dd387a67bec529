package zapslog_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pacerun/pacer/internal/zapslog"
)

// zap entries come out as slog records at their own level, with their
// fields; below Level they are dropped; a demoted message, or any while
// Quiet, is logged at debug; OnError sees errors with their attributes.
func TestCoreWritesZapToSlog(t *testing.T) {
	var buf bytes.Buffer
	quiet := new(atomic.Bool)
	var errs []string
	core := zapslog.New(slog.New(slog.NewJSONHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug})), zapslog.Options{
		Level: zapcore.InfoLevel, Quiet: quiet, Demote: map[string]bool{"noise": true},
		OnError: func(msg string, attrs []any) { errs = append(errs, fmt.Sprint(msg, attrs)) },
	})
	log := zap.New(core).With(zap.String("member", "m1"))
	log.Debug("dropped")
	log.Info("info", zap.Int("n", 3))
	log.Warn("noise")
	log.Error("failed", zap.String("path", "/d"))
	quiet.Store(true)
	log.Error("closing")

	var got []string
	for line := range strings.SplitSeq(strings.TrimSpace(buf.String()), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(line), &m); err != nil {
			t.Fatal(err)
		}
		if m["member"] != "m1" {
			t.Errorf("line without the logger's field: %s", line)
		}
		got = append(got, m["level"].(string)+" "+m["msg"].(string))
	}
	want := []string{"INFO info", "DEBUG noise", "ERROR failed", "DEBUG closing"}
	if strings.Join(got, "|") != strings.Join(want, "|") {
		t.Errorf("got %q, want %q", got, want)
	}
	if !strings.Contains(buf.String(), `"n":3`) {
		t.Errorf("field n missing: %s", buf.String())
	}
	if len(errs) != 2 || errs[0] != "failed[path /d]" {
		t.Errorf("OnError saw %q, want both errors", errs)
	}
}

// With Every, a message repeated within it comes out once (per level);
// other messages are not held back, and OnError still sees every error
// (attack 10, F9: hundreds of identical etcd warnings within
// milliseconds of a restart).
func TestCoreCollapsesRepeatedEntries(t *testing.T) {
	var buf bytes.Buffer
	errs := 0
	core := zapslog.New(slog.New(slog.NewJSONHandler(&buf, nil)), zapslog.Options{
		Level: zapcore.WarnLevel, Every: time.Hour, OnError: func(string, []any) { errs++ }})
	log := zap.New(core)
	for range 300 {
		log.Warn("failed to publish local member to cluster through raft", zap.String("error", "etcdserver: too many requests"))
		log.With(zap.String("member", "m1")).Error("failed")
	}
	log.Warn("another")
	got := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if len(got) != 3 || !strings.Contains(got[0], "failed to publish") || !strings.Contains(got[1], `"msg":"failed"`) || !strings.Contains(got[2], "another") {
		t.Errorf("got %d lines:\n%s", len(got), buf.String())
	}
	if errs != 300 {
		t.Errorf("OnError saw %d errors, want 300", errs)
	}
}

// An entry above error level (zap's DPanic, Panic, Fatal: the process may
// end right after it) syncs the output after it is logged, its OnError
// line included; errors and below do not.
func TestCoreSyncsAfterAnEntryAboveError(t *testing.T) {
	var order []string
	core := zapslog.New(slog.New(slog.NewJSONHandler(writerFunc(func(p []byte) (int, error) {
		var m map[string]any
		if err := json.Unmarshal(p, &m); err != nil {
			t.Fatal(err)
		}
		order = append(order, fmt.Sprint(m["msg"]))
		return len(p), nil
	}), nil)), zapslog.Options{
		Level:   zapcore.InfoLevel,
		OnError: func(msg string, _ []any) { order = append(order, "on error: "+msg) },
		Sync:    func() error { order = append(order, "sync"); return nil },
	})
	for _, e := range []zapcore.Entry{{Level: zapcore.ErrorLevel, Message: "failed"}, {Level: zapcore.FatalLevel, Message: "fatal"}} {
		if err := core.Write(e, nil); err != nil {
			t.Fatal(err)
		}
	}
	if got, want := strings.Join(order, ", "), "failed, on error: failed, fatal, on error: fatal, sync"; got != want {
		t.Fatalf("order %q, want %q", got, want)
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// The Core's Sync, which etcd calls as it closes, does not flush: a stop
// must not wait there for a blocked output.
func TestCoreSyncDoesNotFlush(t *testing.T) {
	synced := false
	core := zapslog.New(slog.New(slog.NewJSONHandler(io.Discard, nil)), zapslog.Options{
		Level: zapcore.InfoLevel, Sync: func() error { synced = true; return nil }})
	if err := zap.New(core).Sync(); err != nil || synced {
		t.Fatalf("Sync = %v, flushed %v; want nil and no flush", err, synced)
	}
}
