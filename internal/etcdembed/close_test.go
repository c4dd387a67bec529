package etcdembed_test

import (
	"bytes"
	"context"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/pacerun/pacer/internal/etcdembed"
	"github.com/pacerun/pacer/internal/etcdembed/etcdtest"
)

// syncBuffer is a bytes.Buffer safe for etcd's goroutines to log to.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Closing the embedded etcd says what it waits for (other replicas'
// connections, up to etcd's request timeout), and when it is done: that
// wait was a silent 7 s in a replica's stop (attack 10, F9).
func TestCloseSaysWhatItWaitsFor(t *testing.T) {
	var buf syncBuffer
	client, peer := etcdtest.Addrs(t)
	e, err := etcdembed.Start(context.Background(), etcdembed.Options{Name: "t", Dir: filepath.Join(t.TempDir(), "etcd"),
		ClientListen: client, PeerListen: peer, Logger: slog.New(slog.NewJSONHandler(&buf, nil))})
	if err != nil {
		t.Fatal(err)
	}
	e.Close()
	out := buf.String()
	if !strings.Contains(out, `"msg":"closing the embedded etcd: it waits for the open client connections`) ||
		!strings.Contains(out, `"wait_max_ms":7000`) || !strings.Contains(out, `"msg":"embedded etcd closed"`) {
		t.Fatalf("log:\n%s", out)
	}
}
