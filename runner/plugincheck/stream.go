package plugincheck

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/pacerun/pacer/internal/duration"
	"github.com/pacerun/pacer/sdk/paramschema"
	"github.com/pacerun/pacer/sdk/pluginv1"
)

// checkRunStream checks the RunStream of a plugin that declares it
// (docs/plugin-protocol.md, section 13): the stream opens with an empty
// message; runs sent together each end exactly once, with events tagged
// with their own IDs only; a run of an unknown task ends with status
// NotFound; a cancel on the stream ends a run within the grace period.
func (c *checker) checkRunStream(desc *pluginv1.DescribeResponse) {
	if !desc.GetCapabilities().GetRunStream() {
		c.skip(CheckRunStream, "", "the plugin does not declare capabilities.run_stream: the runner calls it once per run")
		return
	}
	var task string
	var params map[string]any
	var where string
	for _, t := range desc.GetTasks() {
		schema, _ := paramschema.Parse(t.GetParamsSchemaJson())
		if p, w, err := c.validParams(t.GetName(), schema); err == nil {
			task, params, where = t.GetName(), p, w
			break
		}
	}
	ctx, cancel := context.WithCancel(c.ctx)
	defer cancel()
	stream, err := c.s.rpc.RunStream(ctx)
	if err != nil {
		c.fail(CheckRunStream, "", "want RunStream to open; got %v", err)
		return
	}
	msgs := make(chan *pluginv1.RunStreamResponse, 64)
	ended := make(chan error, 1)
	go func() {
		defer close(msgs)
		for {
			m, err := stream.Recv()
			if err != nil {
				ended <- err
				return
			}
			msgs <- m
		}
	}()
	recv := func(d time.Duration) (*pluginv1.RunStreamResponse, error) {
		select {
		case m, ok := <-msgs:
			if !ok {
				return nil, fmt.Errorf("the stream ended: %v", <-ended)
			}
			return m, nil
		case <-time.After(d):
			return nil, fmt.Errorf("nothing within %s", d)
		}
	}

	first, err := recv(c.opts.StartTimeout)
	switch {
	case err != nil:
		c.fail(CheckRunStream, "", "the plugin declares capabilities.run_stream: want RunStream to open with an empty message; %v", err)
		return
	case len(first.GetEvents()) > 0:
		c.fail(CheckRunStream, "", "want RunStream's first message empty; it has %d event(s)", len(first.GetEvents()))
		return
	}

	const unknown = "pacer-check-no-such-task"
	runs := []*pluginv1.StreamRun{streamRun(3, unknown, nil, 0)}
	if task != "" {
		runs = append(runs, streamRun(1, task, params, c.opts.Deadline), streamRun(2, task, params, c.opts.Deadline))
	}
	if err := stream.Send(&pluginv1.RunStreamRequest{Runs: runs}); err != nil {
		c.fail(CheckRunStream, "", "want runs sent on RunStream to be accepted; got %v", err)
		return
	}
	var problems []string
	last := map[uint64]*pluginv1.StreamEvent{} // each run's end
	seen := map[uint64]bool{}                  // runs that sent anything
	process := func(m *pluginv1.RunStreamResponse) {
		for _, ev := range m.GetEvents() {
			id := ev.GetId()
			seen[id] = true
			switch {
			case id < 1 || id > 4:
				problems = append(problems, fmt.Sprintf("an event with ID %d, which no run of the stream has", id))
			case last[id] != nil:
				problems = append(problems, fmt.Sprintf("run %d sent events after its end", id))
			case (ev.GetEvent() == nil) == (ev.GetStatus() == nil):
				problems = append(problems, fmt.Sprintf("an event of run %d with %s, want exactly one of event and status", id,
					map[bool]string{true: "neither", false: "both"}[ev.GetEvent() == nil]))
			case ev.GetStatus() != nil || ev.GetEvent().GetResult() != nil:
				last[id] = ev
			}
		}
	}
	// until reads the stream until done or d passes, and says which.
	until := func(done func() bool, d time.Duration) error {
		deadline := time.Now().Add(d)
		for !done() {
			m, err := recv(time.Until(deadline))
			if err != nil {
				return err
			}
			process(m)
		}
		return nil
	}
	collect := func(d time.Duration, want ...uint64) {
		if err := until(func() bool { return allEnded(last, want) }, d); err != nil {
			problems = append(problems, fmt.Sprintf("runs %v: want each to end within %s; %v", missing(last, want), d, err))
		}
	}
	collect(duration.Sum(c.opts.Deadline, c.opts.Grace), 1, 2, 3)
	if st := last[3].GetStatus(); last[3] != nil && codes.Code(st.GetCode()) != codes.NotFound {
		problems = append(problems, fmt.Sprintf("a run of task %q ended with %s, want status NotFound", unknown, describeEnd(last[3])))
	}

	cancelled := ""
	if task != "" && len(problems) == 0 {
		if err := stream.Send(&pluginv1.RunStreamRequest{Runs: []*pluginv1.StreamRun{streamRun(4, task, params, 0)}}); err != nil {
			problems = append(problems, fmt.Sprintf("a run sent after others: %v", err))
		} else {
			// Under way: it sent an event, or had a moment to start, as
			// for the cancel check of Run.
			_ = until(func() bool { return seen[4] }, 500*time.Millisecond)
			sent := time.Now()
			if last[4] != nil {
				cancelled = fmt.Sprintf("; with %s a run ended before it could be cancelled (%s)", where, describeEnd(last[4]))
			} else if err := stream.Send(&pluginv1.RunStreamRequest{Cancels: []*pluginv1.StreamCancel{{Id: 4, Reason: "pacer-check: cancelled"}}}); err != nil {
				problems = append(problems, fmt.Sprintf("a cancel: %v", err))
			} else {
				collect(c.opts.Grace, 4)
				if last[4] != nil {
					cancelled = fmt.Sprintf("; with %s a run ended %s after its cancel (%s)", where, time.Since(sent).Round(time.Millisecond), describeEnd(last[4]))
				}
			}
		}
	}
	_ = stream.CloseSend()
	if len(problems) > 0 {
		c.fail(CheckRunStream, "", "%s", strings.Join(problems, "; "))
		return
	}
	if task == "" {
		c.pass(CheckRunStream, "", "opened with an empty message; a run of an unknown task ended with NotFound (no task had params to run it with)")
		return
	}
	c.pass(CheckRunStream, "", "opened with an empty message; two runs of %s and one of an unknown task sent together each ended once (%s, %s; NotFound)%s",
		task, describeEnd(last[1]), describeEnd(last[2]), cancelled)
}

func streamRun(id uint64, task string, params map[string]any, timeout time.Duration) *pluginv1.StreamRun {
	st, _ := structpb.NewStruct(params) // validParams checked them
	req := &pluginv1.RunRequest{Task: task, Params: st, Context: &pluginv1.RunContext{
		JobId: "pacer-check", RunId: fmt.Sprintf("stream-%s-%d", newID(4), id), CorrelationId: "check-stream", Attempt: 1,
		ScheduledTime: timestamppb.New(time.Now().Truncate(time.Second)), FencingToken: 1, Node: "pacer-check",
	}}
	if timeout > 0 {
		req.Timeout = durationpb.New(timeout)
	}
	return &pluginv1.StreamRun{Id: id, Request: req, Traceparent: fmt.Sprintf("00-%s-%s-01", newID(16), newID(8))}
}

func allEnded(last map[uint64]*pluginv1.StreamEvent, ids []uint64) bool {
	return len(missing(last, ids)) == 0
}

func missing(last map[uint64]*pluginv1.StreamEvent, ids []uint64) []uint64 {
	var out []uint64
	for _, id := range ids {
		if last[id] == nil {
			out = append(out, id)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out
}

// describeEnd says how a run on the stream ended.
func describeEnd(ev *pluginv1.StreamEvent) string {
	switch {
	case ev == nil:
		return "no end"
	case ev.GetStatus() != nil:
		return fmt.Sprintf("status %s: %s", codes.Code(ev.GetStatus().GetCode()), truncate(ev.GetStatus().GetMessage(), 120))
	case ev.GetEvent().GetResult().GetError() != "":
		return fmt.Sprintf("a result with error %q", truncate(ev.GetEvent().GetResult().GetError(), 120))
	}
	return "a successful result"
}
