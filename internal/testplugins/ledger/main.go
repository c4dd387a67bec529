// Command ledger is a test plugin for Pacer's fault-injection suite
// (cmd/pacer/chaos_test.go). Its one task, "record", appends one JSON line
// per execution to an append-only ledger file, and acts like an external
// system that checks fencing tokens: under an exclusive flock it compares the
// run's token with the highest token recorded for the job and accepts the
// write only if the token is not lower.
//
// params:
//
//	path  the ledger file; the plugin also uses path+".lock" (flock) and
//	      path+".tokens" (a JSON map job → highest accepted token)
//	hold  optional Go duration the task takes before writing, honouring
//	      cancellation
//
// The line is written at the end of the run, after hold, so that a runner
// that was paused or cut off while its task ran shows up as a late write.
// A run cancelled during hold still writes its line (cancelled: true): the
// external system saw it.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"syscall"
	"time"

	"github.com/pacerun/pacer/internal/testplugins/jsonl"
	"github.com/pacerun/pacer/sdk"
)

type params struct {
	Path string        `json:"path" desc:"ledger file (JSON lines)"`
	Hold time.Duration `json:"hold,omitempty" desc:"how long the task takes before it writes"`
}

// Entry is one ledger line.
type Entry struct {
	Job           string `json:"job"`
	ScheduledTime string `json:"scheduled_time"`
	FencingToken  int64  `json:"fencing_token"`
	Shard         int    `json:"shard"`
	Node          string `json:"node"`
	RunID         string `json:"run_id"`
	CorrelationID string `json:"correlation_id"`
	Attempt       int    `json:"attempt"`
	Start         string `json:"start"`
	End           string `json:"end"`
	Accepted      bool   `json:"accepted"`
	Highest       int64  `json:"highest"` // highest token known before this write
	Cancelled     bool   `json:"cancelled,omitempty"`
	PID           int    `json:"pid"`
}

func record(ctx context.Context, p params, resp *sdk.Response) error {
	info := sdk.Info(ctx)
	start := time.Now().UTC()
	var cancelled error
	if p.Hold > 0 {
		select {
		case <-time.After(p.Hold):
		case <-ctx.Done():
			cancelled = ctx.Err()
		}
	}
	e := Entry{
		Job: info.JobID, ScheduledTime: info.ScheduledTime.UTC().Format(time.RFC3339Nano),
		FencingToken: info.FencingToken, Shard: info.Shard, Node: info.Node, RunID: info.RunID, CorrelationID: info.CorrelationID, Attempt: info.Attempt,
		Start: start.Format(time.RFC3339Nano), Cancelled: cancelled != nil, PID: os.Getpid(),
	}
	if err := write(p.Path, &e); err != nil {
		return err
	}
	resp.Output = fmt.Sprintf("accepted=%v token=%d highest=%d", e.Accepted, e.FencingToken, e.Highest)
	if cancelled != nil {
		return fmt.Errorf("interrupted: %w", cancelled)
	}
	if !e.Accepted {
		return fmt.Errorf("rejected: fencing token %d is below %d", e.FencingToken, e.Highest)
	}
	return nil
}

// write checks the token and appends the line, all under the lock.
func write(path string, e *Entry) error {
	lock, err := os.OpenFile(path+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return fmt.Errorf("flock: %w", err)
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN) //nolint:errcheck

	tokens := map[string]int64{}
	b, err := os.ReadFile(path + ".tokens")
	switch {
	case err == nil:
		if err := json.Unmarshal(b, &tokens); err != nil {
			return fmt.Errorf("tokens file: %w", err)
		}
	case !errors.Is(err, os.ErrNotExist):
		return err
	}
	e.Highest = tokens[e.Job]
	e.Accepted = e.FencingToken >= e.Highest
	if e.Accepted && e.FencingToken > e.Highest {
		tokens[e.Job] = e.FencingToken
		b, err := json.Marshal(tokens)
		if err != nil {
			return err
		}
		tmp := path + ".tokens.tmp"
		if err := os.WriteFile(tmp, b, 0o644); err != nil {
			return err
		}
		if err := os.Rename(tmp, path+".tokens"); err != nil {
			return err
		}
	}
	e.End = time.Now().UTC().Format(time.RFC3339Nano)
	return jsonl.Append(path, e)
}

func main() {
	sdk.Serve(sdk.Plugin{
		Name:    "ledger",
		Version: "test",
		Tasks: map[string]sdk.Task{
			"record": sdk.Typed("append one line per execution to a fencing-token-checking ledger", record),
		},
	})
}
