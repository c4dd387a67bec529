package syncbuf

import (
	"sync"
	"testing"
)

func TestTailKeepsTheLastBytes(t *testing.T) {
	tl := &Tail{Max: 8}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { _, _ = tl.Write([]byte("abcdefghij")) })
	}
	wg.Wait()
	if got := tl.String(); got != "cdefghij" {
		t.Fatalf("kept %q, want the last 8 bytes %q", got, "cdefghij")
	}
	tl = &Tail{Max: 64}
	_, _ = tl.Write([]byte("  plugin: exec format error\n"))
	if got := tl.String(); got != "plugin: exec format error" {
		t.Fatalf("String() = %q, want it trimmed", got)
	}
}
