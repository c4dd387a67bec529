package pluginhost_test

import (
	"context"
	"strings"
	"sync"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/pacerun/pacer/runner/pluginhost"
)

// A host given no sanitizer masks the spans it imports from plugins with
// the default one.
func TestHostWithoutSanitizerMasksImportedSpans(t *testing.T) {
	t.Parallel()
	var mu sync.Mutex
	var imported []sdktrace.ReadOnlySpan
	b := setup(t, pluginhost.Options{
		ImportSpan: func(s sdktrace.ReadOnlySpan) { mu.Lock(); imported = append(imported, s); mu.Unlock() },
	})
	tp := sdktrace.NewTracerProvider()
	ctx, root := tp.Tracer("t").Start(context.Background(), "pacer.run")
	_, err := b.host.Run(ctx, call("span", map[string]any{"message": "mail alice@example.com"}))
	root.End()
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(imported) != 1 {
		t.Fatalf("%d spans imported, want 1", len(imported))
	}
	found := false
	for _, kv := range imported[0].Attributes() {
		if kv.Key == "note" {
			found = true
			if v := kv.Value.AsString(); !strings.HasPrefix(v, "mail ") || strings.Contains(v, "alice@example.com") {
				t.Errorf("attribute note = %q: want the address masked", v)
			}
		}
	}
	if !found {
		t.Fatalf("no attribute note on the imported span: %v", imported[0].Attributes())
	}
}
