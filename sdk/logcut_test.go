package sdk_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pacerun/pacer/sdk"
	"github.com/pacerun/pacer/sdk/sdktest"
)

// A log record over the size limit is cut between words: a secret at the
// cut is dropped whole, never half kept (the runner's sanitizer would not
// recognise its first half).
func TestOversizedLogRecordCutBetweenWords(t *testing.T) {
	token := "gh" + "p_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789"
	msg := strings.Repeat("x", 32760) + " " + token + " " + strings.Repeat("y", 40000)
	h := sdktest.Serve(t, sdk.Plugin{Name: "big", Version: "0", Tasks: map[string]sdk.Task{
		"log": sdk.TaskFunc(func(ctx context.Context, _ *sdk.Request, _ *sdk.Response) error {
			sdk.Logger(ctx).Info(msg)
			return nil
		}),
	}})
	res := h.Run(context.Background(), sdktest.Call{Task: "log"})
	if res.Err != nil || len(res.Logs) != 1 {
		t.Fatalf("run: %v, %d logs", res.Err, len(res.Logs))
	}
	got := res.Logs[0].Message
	if want := strings.Repeat("x", 32760) + " [log record truncated]"; got != want {
		t.Fatalf("message: %d bytes ending %q, want %d ending %q", len(got), got[len(got)-40:], len(want), want[len(want)-40:])
	}
}
