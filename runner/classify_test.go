package runner

import (
	"context"
	"errors"
	"fmt"
	"strings"
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
	timedOut, cancelTimeout := context.WithTimeoutCause(live, 0, errors.New("timed out after 2s"))
	defer cancelTimeout()
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
		// What pluginhost returns: the cause of the run's timeout, which
		// does not wrap DeadlineExceeded.
		{"killed after the timeout's cancel", timedOut, nil,
			fmt.Errorf("%w: task did not stop within 1s of being cancelled (%w)", pluginhost.ErrPluginKilled, errors.New("timed out after 2s")), observability.OutcomeTimeout},
		// A task that ignored its timeout's cancellation and answered
		// success within the cancel grace timed out all the same.
		{"success after the deadline", timedOut, &pluginhost.Result{Output: "done"}, nil, observability.OutcomeTimeout},
		{"success after the deadline, timer not fired", expired{live}, &pluginhost.Result{}, nil, observability.OutcomeTimeout},
		// The deadline passed while the attempt waited for a free slot of
		// its plugin: the error wraps the timeout's cause.
		{"timed out waiting for a slot", timedOut, nil,
			fmt.Errorf("waiting for a free slot of plugin \"shell\" (max 32 concurrent runs): %w", errors.New("timed out after 2s")), observability.OutcomeTimeout},
		{"killed after a cancel", canceled, nil,
			fmt.Errorf("%w: task did not stop within 1s of being cancelled (%w)", pluginhost.ErrPluginKilled, context.Canceled), observability.OutcomeCanceled},
		// A task that returned success once cancelled (the drain timeout,
		// replace) did not finish its work: canceled, as for a timeout.
		{"success after a cancel", canceled, &pluginhost.Result{Output: "stopped early"}, nil, observability.OutcomeCanceled},
		{"crash after a cancel", canceled, nil, fmt.Errorf("%w: exit status 2", pluginhost.ErrPluginCrashed), observability.OutcomeCanceled},
		// The plugin was killed for another run that ignored its cancel
		// while this one, past its timeout, waited for its answer: the
		// timeout passed before an answer came (attack 25, W1: crashed).
		{"crash after the deadline", timedOut, nil,
			fmt.Errorf("%w: plugin \"shell\" was killed (hung) during task \"exec\"", pluginhost.ErrPluginCrashed), observability.OutcomeTimeout},
		{"crash after the deadline, timer not fired", expired{live}, nil, fmt.Errorf("%w: exit status 2", pluginhost.ErrPluginCrashed), observability.OutcomeTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got, _ := classify(tc.ctx, tc.res, tc.err); got != tc.want {
				t.Fatalf("outcome %q, want %q", got, tc.want)
			}
		})
	}
}

// The cause a plugin already names is not added again.
func TestClassifyNamesTheCauseOnce(t *testing.T) {
	t.Parallel()
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(errReplaced)
	_, text := classify(ctx, &pluginhost.Result{TaskError: "command \"sh\" stopped: " + errReplaced.Error()}, nil)
	if n := strings.Count(text, errReplaced.Error()); n != 1 {
		t.Fatalf("error %q names the cause %d times", text, n)
	}
	_, text = classify(ctx, &pluginhost.Result{TaskError: "interrupted"}, nil)
	if want := "interrupted (" + errReplaced.Error() + ")"; text != want {
		t.Fatalf("error %q, want %q", text, want)
	}
	_, text = classify(ctx, &pluginhost.Result{}, nil)
	if want := "canceled: " + errReplaced.Error() + "; the task reported success after the cancel"; text != want {
		t.Fatalf("error %q, want %q", text, want)
	}
	_, text = classify(ctx, nil, fmt.Errorf("waiting for the plugin: %w", errReplaced))
	if n := strings.Count(text, errReplaced.Error()); n != 1 {
		t.Fatalf("error %q names the cause %d times", text, n)
	}
}

func TestTruncateCountsEveryByteCut(t *testing.T) {
	t.Parallel()
	big := strings.Repeat("word ", 20) // 100 bytes
	tests := []struct {
		name, in string
		n        int
		want     string
	}{
		{"fits", "hello", 10, "hello"},
		{"cut here", big, 10, "word word \n[truncated 90 bytes]"},
		// The plugin cut 4,999,000 bytes and kept 100; the runner keeps 10.
		{"cut by the plugin and here", big + "\n[truncated 4999000 bytes]", 10, "word word \n[truncated 4999090 bytes]"},
		// Only the plugin's note is over the limit: nothing more is cut
		// (this used to be recorded as "[truncated 19 bytes]").
		{"cut by the plugin only", big + "\n[truncated 4999000 bytes]", 100, big + "\n[truncated 4999000 bytes]"},
		{"at a character boundary", "éé ééééé", 7, "éé\n[truncated 11 bytes]"},
		{"a note in the middle is text", "[truncated 5 bytes] and more text", 3, "\n[truncated 33 bytes]"},
		// A cut inside a word drops the part kept, back to the whitespace
		// before it: a partial token or password is not recognised by the
		// sanitizer (attack 14, K15).
		{"inside a token", "fff\ngh" + "p_aBcDeFgHiJkLmNoPqRsTuVwXyZ0123456789 tail", 24, "fff\n[truncated 46 bytes]"},
		{"inside a URL's password", "x postgres://bob:VERYSECRETPASSWORD123@db.internal:5432/app", 23, "x\n[truncated 58 bytes]"},
		{"a word longer than 4 KiB", strings.Repeat("a", 5000), 4100, "aaaa\n[truncated 4996 bytes]"},
	}
	for _, tc := range tests {
		if got := truncate(tc.in, tc.n); got != tc.want {
			t.Errorf("%s: truncate(%q, %d) = %q, want %q", tc.name, tc.in, tc.n, got, tc.want)
		}
	}
}
