package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/pacerun/pacer/sdk/paramschema"
	"github.com/pacerun/pacer/sdk/pluginv1"
)

// TaskRef is one job's use of a task, for CheckTasks.
type TaskRef struct {
	// Where locates the job in the config, e.g. `pacer.yaml:12: jobs[0]`.
	Where  string
	Plugin string
	Task   string
	Params map[string]any
}

// CheckTasks starts every plugin the refs use and checks each ref against
// the plugin's own description: the task exists and the params fit the
// task's schema. It returns every problem, each prefixed by its ref's Where,
// so a bad job is refused when the config is loaded rather than when it
// first fires.
func (h *Host) CheckTasks(ctx context.Context, refs []TaskRef) error {
	descs := map[string]*pluginv1.DescribeResponse{}
	startErr := map[string]error{}
	var errs []error
	for _, r := range refs {
		if _, done := descs[r.Plugin]; !done && startErr[r.Plugin] == nil {
			d, err := h.Describe(ctx, r.Plugin)
			descs[r.Plugin], startErr[r.Plugin] = d, err
		}
		if err := startErr[r.Plugin]; err != nil {
			errs = append(errs, fmt.Errorf("%s: plugin %q: %w", r.Where, r.Plugin, err))
			continue
		}
		errs = append(errs, checkRef(r, descs[r.Plugin])...)
	}
	return errors.Join(errs...)
}

func checkRef(r TaskRef, d *pluginv1.DescribeResponse) []error {
	var names []string
	for _, t := range d.GetTasks() {
		names = append(names, t.GetName())
		if t.GetName() != r.Task {
			continue
		}
		schema, err := paramschema.Parse(t.GetParamsSchemaJson())
		if err != nil {
			return []error{fmt.Errorf("%s: plugin %q task %q publishes a bad params schema: %w", r.Where, r.Plugin, r.Task, err)}
		}
		var errs []error
		for _, e := range schema.Validate(r.Params) {
			errs = append(errs, fmt.Errorf("%s.%w", r.Where, e))
		}
		return errs
	}
	slices.Sort(names)
	return []error{fmt.Errorf("%s.task: %w: plugin %q has no task %q (it has: %s)",
		r.Where, ErrTaskNotFound, r.Plugin, r.Task, strings.Join(names, ", "))}
}
