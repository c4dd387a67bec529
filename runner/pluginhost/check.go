package pluginhost

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/sdk/paramschema"
	"github.com/pacerun/pacer/sdk/pluginv1"
)

// TaskRef is one job's use of a task, for CheckTasks.
type TaskRef struct {
	// File names the config file and Job the job's key path in it
	// ("jobs[0]"); every problem is reported as "File:line: Job.key: ...".
	File, Job string
	// Line returns the line in File of the key at keys within the job:
	// Line() is the job's own line, Line("task") that of its task key,
	// Line("params", "command", 2) that of a param (object keys as strings,
	// sequence indexes as ints), falling back to the nearest enclosing key
	// the file sets. 0 or a nil Line leaves the line out.
	Line   func(keys ...any) int
	Plugin string
	Task   string
	Params map[string]any
}

// at formats the location of the job's key path below the job ("task",
// "params.name"; "" for the job itself), whose keys are keys.
func (r TaskRef) at(path string, keys ...any) string {
	var b strings.Builder
	b.WriteString(r.File)
	if r.Line != nil {
		if l := r.Line(keys...); l > 0 {
			b.WriteString(":" + strconv.Itoa(l))
		}
	}
	p := r.Job
	if path != "" {
		p += "." + path
	}
	b.WriteString(": " + observability.MessagePath(p))
	return b.String()
}

// CheckTasks starts every plugin the refs use and checks each ref against
// the plugin's own description: the plugin is the one named (its Describe
// gives that name), the task exists and the params fit the task's schema.
// It returns every problem, each located at the offending key, so a bad job
// is refused when the config is loaded rather than when it first fires.
//
// A plugin that is up is asked as it is. One that is not is started for the
// check alone: if the check fails, the process is stopped and the host keeps
// no trace of it (a rejected reload shows nowhere); if it passes, the
// process serves the plugin's runs. When the check passes, refs become what
// every later (re)start of these plugins is checked against, and each
// plugin's metrics' series are created at 0.
func (h *Host) CheckTasks(ctx context.Context, refs []TaskRef) error {
	var order []string
	byPlugin := map[string][]TaskRef{}
	for _, r := range refs {
		if _, ok := byPlugin[r.Plugin]; !ok {
			order = append(order, r.Plugin)
		}
		byPlugin[r.Plugin] = append(byPlugin[r.Plugin], r)
	}
	trials := map[string]*instance{}
	var errs []error
	for _, name := range order {
		prefs := byPlugin[name]
		var desc *pluginv1.DescribeResponse
		path := ""
		if inst := h.live(name); inst != nil {
			desc, path = inst.desc, inst.path
		} else {
			inst, err := h.startProcess(ctx, name)
			if err != nil {
				for _, r := range prefs {
					errs = append(errs, fmt.Errorf("%s: plugin %q: %w", r.at("plugin", "plugin"), r.Plugin, err))
				}
				continue
			}
			trials[name] = inst
			desc, path = inst.desc, inst.path
		}
		if err := checkName(name, path, desc, prefs); err != nil {
			errs = append(errs, fmt.Errorf("%s: plugin %q: %w", prefs[0].at("plugin", "plugin"), name, err))
			continue
		}
		for _, r := range prefs {
			errs = append(errs, checkRef(r, desc, h.opts.Sanitizer)...)
		}
	}
	if err := errors.Join(errs...); err != nil {
		for _, inst := range trials {
			inst.kill("closed")
		}
		return err
	}
	h.mu.Lock()
	h.expected = byPlugin
	h.mu.Unlock()
	for _, name := range order {
		h.metrics.configured(name)
	}
	for name, inst := range trials {
		h.supervisor(name).adopt(inst)
	}
	return nil
}

// live returns the plugin's process if it is up.
func (h *Host) live(name string) *instance {
	h.mu.Lock()
	s, ok := h.plugins[name]
	h.mu.Unlock()
	if !ok {
		return nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.inst != nil && s.inst.alive() {
		return s.inst
	}
	return nil
}

// expectedFor returns the jobs that use a plugin, as of the last
// successful CheckTasks.
func (h *Host) expectedFor(name string) []TaskRef {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.expected[name]
}

// checkRef checks r's task and params against d. A params problem that
// quotes the value shows it as san would: masked whole under a key san
// redacts (db_password, creds.token, a redact_keys entry), or in part where
// san's patterns mask it; the error's text leaves the runner in the log of
// a rejected reload and in pacer validate's output, and its key, written
// in brackets there (observability.MessagePath), keeps the sanitizer from
// seeing the value as the key's.
func checkRef(r TaskRef, d *pluginv1.DescribeResponse, san *observability.Sanitizer) []error {
	var names []string
	for _, t := range d.GetTasks() {
		names = append(names, t.GetName())
		if t.GetName() != r.Task {
			continue
		}
		schema, err := paramschema.Parse(t.GetParamsSchemaJson())
		if err != nil {
			return []error{fmt.Errorf("%s: plugin %q task %q publishes a bad params schema: %w", r.at("task", "task"), r.Plugin, r.Task, err)}
		}
		var errs []error
		for _, e := range schema.Validate(r.Params) {
			var ve *paramschema.ValidationError
			if !errors.As(e, &ve) {
				errs = append(errs, fmt.Errorf("%s: %w", r.at("params", "params"), e))
				continue
			}
			// The error keeps its identity (errors.As finds the
			// *paramschema.ValidationError); its text is located at the key.
			errs = append(errs, &locatedError{at: r.at(ve.Path, append([]any{"params"}, ve.Keys...)...), msg: shownMsg(ve, san), err: ve})
		}
		return errs
	}
	slices.Sort(names)
	return []error{fmt.Errorf("%s: %w: plugin %q has no task %q (it has: %s)",
		r.at("task", "task"), ErrTaskNotFound, r.Plugin, r.Task, strings.Join(names, ", "))}
}

// shownMsg is ve's message with the value it quotes as san shows it.
func shownMsg(ve *paramschema.ValidationError, san *observability.Sanitizer) string {
	v := ve.Value()
	if v == "" {
		return ve.Msg
	}
	for _, k := range ve.Keys {
		if k, ok := k.(string); ok && san.SensitiveKey(k) {
			return ve.MaskValue(observability.Redacted)
		}
	}
	if masked := san.String(v); masked != v {
		return ve.MaskValue(masked)
	}
	return ve.Msg
}

// locatedError is a params problem with the config location in front:
// "pacer.yaml:14: jobs[0].params.name: expected string, got number", its
// message as checkRef shows it.
type locatedError struct {
	at, msg string
	err     *paramschema.ValidationError
}

func (e *locatedError) Error() string { return e.at + ": " + e.msg }
func (e *locatedError) Unwrap() error { return e.err }
