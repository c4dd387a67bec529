package pluginhost_test

import (
	"context"
	"strings"
	"testing"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/pacerun/pacer/runner/pluginhost"
)

// A host given no sanitizer masks the spans it imports from plugins with
// the default one.
func TestHostWithoutSanitizerMasksImportedSpans(t *testing.T) {
	t.Parallel()
	spans := make(chan sdktrace.ReadOnlySpan, 8) // imported before Run returns
	b := setup(t, pluginhost.Options{ImportSpan: func(s sdktrace.ReadOnlySpan) { spans <- s }})
	if _, err := b.host.Run(context.Background(), call("span", map[string]any{"message": "mail alice@example.com"})); err != nil {
		t.Fatal(err)
	}
	if len(spans) != 1 {
		t.Fatalf("%d spans imported, want 1", len(spans))
	}
	s := <-spans
	found := false
	for _, kv := range s.Attributes() {
		if kv.Key == "note" {
			found = true
			if v := kv.Value.AsString(); !strings.HasPrefix(v, "mail ") || strings.Contains(v, "alice@example.com") {
				t.Errorf("attribute note = %q: want the address masked", v)
			}
		}
	}
	if !found {
		t.Fatalf("no attribute note on the imported span: %v", s.Attributes())
	}
}
