package runner

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// expired is a context whose deadline has passed but whose timer has not
// fired yet: the window in which a plugin's own timeout answer can arrive.
type expired struct{ context.Context }

func (expired) Deadline() (time.Time, bool) { return time.Now().Add(-time.Millisecond), true }
func (expired) Err() error                  { return nil }

func TestClassify(t *testing.T) {
	t.Parallel()
	canceled, cancel := context.WithCancel(context.Background())
	cancel()
	live := context.Background()
	tests := []struct {
		name string
		ctx  context.Context
		res  *pluginhost.Result
		err  error
		want string
	}{
		{"success", live, &pluginhost.Result{}, nil, observability.OutcomeSuccess},
		{"task error", live, &pluginhost.Result{TaskError: "boom"}, nil, observability.OutcomeFailure},
		{"answer after the deadline, timer not fired", expired{live}, &pluginhost.Result{TaskError: "interrupted"}, nil, observability.OutcomeTimeout},
		{"answer after cancellation", canceled, &pluginhost.Result{TaskError: "interrupted"}, nil, observability.OutcomeCanceled},
		{"deadline error", live, nil, context.DeadlineExceeded, observability.OutcomeTimeout},
		{"crash", live, nil, pluginhost.ErrPluginCrashed, observability.OutcomeCrashed},
		{"killed after the deadline", live, nil, errors.Join(pluginhost.ErrPluginKilled, context.DeadlineExceeded), observability.OutcomeTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := classify(tc.ctx, tc.res, tc.err); got != tc.want {
				t.Fatalf("outcome %q, want %q", got, tc.want)
			}
		})
	}
}
