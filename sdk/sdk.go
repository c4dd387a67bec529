package sdk

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
)

// Version is the SDK's version, reported to the runner by every plugin.
const Version = "0.1.0"

// Plugin describes one plugin binary: its identity and the tasks it offers.
type Plugin struct {
	// Name is how jobs refer to the plugin (their "plugin:" key). It should
	// match the binary's file name.
	Name string
	// Version is the plugin's own version, shown by "pacer plugins".
	Version string
	// Tasks maps task names (a job's "task:" key) to their implementation.
	Tasks map[string]Task
}

// Task is one unit of work a plugin offers.
//
// Run is called once per attempt, possibly concurrently with other attempts.
// ctx carries the attempt's deadline and cancellation: return promptly once it
// is done. A returned error fails the attempt; its message is shown to
// operators, so say what went wrong and what to do about it.
type Task interface {
	Run(ctx context.Context, req *Request, resp *Response) error
}

// TaskFunc adapts a function to Task.
type TaskFunc func(ctx context.Context, req *Request, resp *Response) error

// Run implements Task.
func (f TaskFunc) Run(ctx context.Context, req *Request, resp *Response) error {
	return f(ctx, req, resp)
}

// Describer is implemented by tasks that describe themselves to operators.
// "pacer plugins" shows the description.
type Describer interface {
	Describe() TaskInfo
}

// TaskInfo describes a task.
type TaskInfo struct {
	Description  string
	ParamsSchema string // JSON Schema of the params; "" = any
}

// Describe wraps fn as a Task with a description.
func Describe(description string, fn TaskFunc) Task {
	return describedTask{fn: fn, info: TaskInfo{Description: description}}
}

type describedTask struct {
	fn   TaskFunc
	info TaskInfo
}

func (d describedTask) Run(ctx context.Context, req *Request, resp *Response) error {
	return d.fn(ctx, req, resp)
}

func (d describedTask) Describe() TaskInfo { return d.info }

// Request is the input of one attempt.
type Request struct {
	// Task is the name the task was called by.
	Task string
	// Params are the job's "params:" from the runner's config, as decoded
	// JSON values (string, float64, bool, []any, map[string]any, nil).
	Params map[string]any
}

// ErrInvalidParams marks an error caused by a job's params. The runner reports
// such a run as a configuration problem rather than a task failure.
var ErrInvalidParams = errors.New("invalid params")

// DecodeParams decodes Params into v, a pointer to a struct with json tags.
// Unknown keys are errors, so a typo in a job's params is caught at once.
func (r *Request) DecodeParams(v any) error {
	raw, err := json.Marshal(r.Params)
	if err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidParams, err)
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %v", ErrInvalidParams, err)
	}
	return nil
}

// Response is the output of one attempt. Fill it in before returning.
type Response struct {
	// Output is shown to operators and stored in the run record. The runner
	// bounds and sanitizes it.
	Output string
	// Data is structured result data; values must be JSON-compatible.
	Data map[string]any
}
