package jsonl_test

import (
	"bufio"
	"encoding/json"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/pacerun/pacer/internal/testplugins/jsonl"
)

// Append creates the file, and lines appended side by side each arrive
// whole, one a line.
func TestAppend(t *testing.T) {
	path := filepath.Join(t.TempDir(), "runs.jsonl")
	const n = 50
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			if err := jsonl.Append(path, map[string]int{"i": i}); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[int]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var v struct{ I int }
		if err := json.Unmarshal(sc.Bytes(), &v); err != nil {
			t.Fatalf("line %q: %v", sc.Text(), err)
		}
		seen[v.I] = true
	}
	if len(seen) != n {
		t.Fatalf("%d distinct lines, want %d", len(seen), n)
	}

	if err := jsonl.Append(path, func() {}); err == nil {
		t.Fatal("a value JSON cannot hold was appended")
	}
}
