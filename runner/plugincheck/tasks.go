package plugincheck

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/big"
	"reflect"
	"sort"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/pacerun/pacer/internal/duration"
	"github.com/pacerun/pacer/sdk/paramschema"
	"github.com/pacerun/pacer/sdk/pluginv1"
)

// checkTask runs the per-task checks of t.
func (c *checker) checkTask(t *pluginv1.TaskInfo) {
	name := t.GetName()
	schema, _ := paramschema.Parse(t.GetParamsSchemaJson()) // Describe checked it
	c.guard(CheckInvalidParams, name, func() { c.checkInvalidParams(name, schema) })
	if !c.wantAny(CheckCancel, CheckDeadline, CheckIdentity) {
		return
	}
	params, where, err := c.validParams(name, schema)
	if err != nil {
		for _, ch := range []string{CheckCancel, CheckDeadline, CheckIdentity} {
			if c.want(ch) {
				c.fail(ch, name, "%v", err)
			}
		}
		return
	}
	c.guard(CheckCancel, name, func() { c.checkCancel(name, params, where) })
	c.guard(CheckDeadline, name, func() { c.checkDeadline(name, params, where) })
	c.guard(CheckIdentity, name, func() { c.checkIdentity(name, params, where) })
}

// validParams returns the params the Run checks use for task, and says
// where they come from.
func (c *checker) validParams(task string, schema *paramschema.Schema) (map[string]any, string, error) {
	if p, ok := c.opts.Params[task]; ok {
		if errs := schema.Validate(p); len(errs) > 0 {
			return nil, "", fmt.Errorf("want params for task %q that its schema accepts; the ones given fail it: %v", task, joinErrs(errs))
		}
		return p, "the params given", nil
	}
	ex, ok := example(schema).(map[string]any)
	if !ok || len(schema.Validate(ex)) > 0 {
		return nil, "", fmt.Errorf("cannot derive params that task %q's schema accepts: pass some (pacer plugins check --params %s=JSON)", task, task)
	}
	b, _ := json.Marshal(ex)
	return ex, "params " + string(b), nil
}

func joinErrs(errs []error) string {
	msgs := make([]string, len(errs))
	for i, e := range errs {
		msgs[i] = e.Error()
	}
	return strings.Join(msgs, "; ")
}

// example returns the smallest value s accepts that can be built without
// search: required keys only, empty strings and arrays, zero or the nearest
// bound, the first enum value or alternative.
func example(s *paramschema.Schema) any {
	if s == nil {
		return map[string]any{}
	}
	if len(s.Enum) > 0 {
		return s.Enum[0]
	}
	if len(s.OneOf) > 0 && s.Type == "" {
		return example(s.OneOf[0])
	}
	switch s.Type {
	case paramschema.TypeObject, "":
		obj := map[string]any{}
		for _, k := range s.Required {
			obj[k] = example(s.Properties[k])
		}
		return obj
	case paramschema.TypeString:
		if s.Format == paramschema.FormatDuration {
			return "1s"
		}
		return ""
	case paramschema.TypeNumber, paramschema.TypeInteger:
		v := 0.0
		if s.Minimum != nil && v < *s.Minimum {
			v = *s.Minimum
		}
		if s.Maximum != nil && v > *s.Maximum {
			v = *s.Maximum
		}
		if s.Type == paramschema.TypeInteger {
			v = math.Ceil(v)
		}
		return v
	case paramschema.TypeBoolean:
		return false
	case paramschema.TypeArray:
		return []any{}
	}
	return nil
}

// invalidParams returns params schema refuses, or nil if it accepts any
// object (or none could be built), and the runner's words about them.
func invalidParams(schema *paramschema.Schema) (map[string]any, string) {
	if schema == nil {
		return nil, ""
	}
	try := func(p map[string]any) (map[string]any, string) {
		if errs := schema.Validate(p); len(errs) > 0 {
			return p, joinErrs(errs)
		}
		return nil, ""
	}
	if schema.AdditionalProperties != nil && !*schema.AdditionalProperties {
		base, _ := example(schema).(map[string]any)
		if base == nil {
			base = map[string]any{}
		}
		base["pacer_check_unknown_key"] = true
		if p, why := try(base); p != nil {
			return p, why
		}
	}
	if len(schema.Required) > 0 {
		if p, why := try(map[string]any{}); p != nil {
			return p, why
		}
	}
	for _, k := range sortedKeys(schema.Properties) {
		var wrong any
		switch schema.Properties[k].Type {
		case "":
			continue
		case paramschema.TypeString, paramschema.TypeObject, paramschema.TypeArray:
			wrong = 12345.0
		default:
			wrong = "pacer-check-wrong-type"
		}
		base, _ := example(schema).(map[string]any)
		if base == nil {
			base = map[string]any{}
		}
		base[k] = wrong
		if p, why := try(base); p != nil {
			return p, why
		}
	}
	return nil, ""
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (c *checker) checkInvalidParams(task string, schema *paramschema.Schema) {
	params, why := invalidParams(schema)
	if params == nil {
		c.skip(CheckInvalidParams, task, "the task's schema accepts any object, so no params are invalid")
		return
	}
	b, _ := json.Marshal(params)
	r := c.call(task, params, 0)
	defer r.hangUp()
	r.wait(c.opts.Grace)
	switch {
	case !r.ended():
		c.fail(CheckInvalidParams, task, "want params %s (the runner says: %s) to end the Run with status InvalidArgument; no answer within %s", b, why, c.opts.Grace)
	case r.code == codes.InvalidArgument:
		c.pass(CheckInvalidParams, task, "params %s: InvalidArgument: %s", b, r.msg)
	default:
		c.fail(CheckInvalidParams, task, "want params %s (the runner says: %s) to end the Run with status InvalidArgument; got %s", b, why, r.describe())
	}
}

// checkCancel starts a run, sends Cancel once it is under way, and expects
// it to end within the grace period.
func (c *checker) checkCancel(task string, params map[string]any, where string) {
	r := c.call(task, params, 0)
	defer r.hangUp()
	// Under way: it sent an event, or had a moment to start. A Cancel that
	// overtakes its Run must cancel it too (the protocol says so), so this
	// is only about giving the task a chance to start working.
	select {
	case <-r.firstSeen:
	case <-time.After(500 * time.Millisecond):
	}
	if r.ended() {
		c.pass(CheckCancel, task, "with %s the run ended before it could be cancelled (%s)", where, r.describe())
		return
	}
	ctx, cancel := context.WithTimeout(c.ctx, c.opts.Grace)
	defer cancel()
	sent := time.Now()
	resp, err := c.s.rpc.Cancel(ctx, &pluginv1.CancelRequest{RunId: r.runID, Reason: "pacer-check: cancelled"})
	if err != nil {
		c.fail(CheckCancel, task, "want Cancel to answer; got %v", err)
		return
	}
	r.wait(c.opts.Grace - time.Since(sent))
	if !r.ended() {
		c.fail(CheckCancel, task, "want the run to end within %s of Cancel (the runner then kills the process); with %s it was still running (Cancel answered found=%v)",
			c.opts.Grace, where, resp.GetFound())
		return
	}
	// found=false is no fault by itself: the run may have ended while
	// the Cancel was on its way.
	c.pass(CheckCancel, task, "with %s the run ended %s after Cancel (found=%v): %s", where, max(r.endTime().Sub(sent), 0).Round(time.Millisecond), resp.GetFound(), r.describe())
}

// checkDeadline starts a run with a timeout and expects it to end within
// the grace period after it.
func (c *checker) checkDeadline(task string, params map[string]any, where string) {
	r := c.call(task, params, c.opts.Deadline)
	defer r.hangUp()
	r.wait(duration.Sum(c.opts.Deadline, c.opts.Grace))
	if !r.ended() {
		c.fail(CheckDeadline, task, "want a run with a %s timeout to end within %s of it; with %s it was still running", c.opts.Deadline, c.opts.Grace, where)
		return
	}
	took := r.endTime().Sub(r.started).Round(time.Millisecond)
	if took < c.opts.Deadline {
		c.pass(CheckDeadline, task, "with %s the run ended after %s, before its %s timeout: %s", where, took, c.opts.Deadline, r.describe())
	} else {
		c.pass(CheckDeadline, task, "with %s the run ended %s after it started, %s past its %s timeout: %s", where, took, (took - c.opts.Deadline).Round(time.Millisecond), c.opts.Deadline, r.describe())
	}
}

// checkIdentity runs the task twice at once and checks that each run's
// spans are in its own trace, under its own call or its own spans, and that
// the log records are well formed.
func (c *checker) checkIdentity(task string, params map[string]any, where string) {
	runs := []*call{c.call(task, params, c.opts.Deadline), c.call(task, params, c.opts.Deadline)}
	for _, r := range runs {
		r.wait(duration.Sum(c.opts.Deadline, c.opts.Grace))
		defer r.hangUp()
	}
	var problems []string
	spans, logs := 0, 0
	for i, r := range runs {
		r.mu.Lock()
		if r.late {
			problems = append(problems, fmt.Sprintf("run %d sent events after its result", i+1))
		}
		ids := map[string]bool{r.spanID: true}
		for _, s := range r.spans {
			ids[hex.EncodeToString(s.GetSpanId())] = true
		}
		for _, s := range r.spans {
			spans++
			tid, pid := hex.EncodeToString(s.GetTraceId()), hex.EncodeToString(s.GetParentSpanId())
			switch {
			case tid != r.traceID:
				other := ""
				for j, o := range runs {
					if j != i && tid == o.traceID {
						other = fmt.Sprintf(" (run %d's)", j+1)
					}
				}
				problems = append(problems, fmt.Sprintf("span %q of run %d has trace ID %s%s, want its run's %s", s.GetName(), i+1, tid, other, r.traceID))
			case len(s.GetSpanId()) != 8:
				problems = append(problems, fmt.Sprintf("span %q of run %d has a %d-byte span ID, want 8", s.GetName(), i+1, len(s.GetSpanId())))
			case !ids[pid]:
				problems = append(problems, fmt.Sprintf("span %q of run %d has parent %s, want the runner's span %s or one of the run's own spans", s.GetName(), i+1, pid, r.spanID))
			case s.GetStartTime() == nil || s.GetEndTime() == nil || s.GetEndTime().AsTime().Before(s.GetStartTime().AsTime()):
				problems = append(problems, fmt.Sprintf("span %q of run %d lacks a start and an end at or after it", s.GetName(), i+1))
			}
		}
		for _, l := range r.logs {
			logs++
			if l.GetLevel() < -4 || l.GetLevel() > 12 {
				problems = append(problems, fmt.Sprintf("a log record of run %d has level %d, want -4 (debug), 0 (info), 4 (warn) or 8 (error)", i+1, l.GetLevel()))
			}
		}
		r.mu.Unlock()
	}
	ended := runs[0].ended() && runs[1].ended()
	switch {
	case len(problems) > 0:
		c.fail(CheckIdentity, task, "%s", strings.Join(problems, "; "))
	case !ended:
		c.fail(CheckIdentity, task, "want two concurrent runs with a %s timeout to end within %s of it; with %s at least one was still running", c.opts.Deadline, c.opts.Grace, where)
	case spans == 0 && logs == 0:
		c.skip(CheckIdentity, task, "with %s two concurrent runs logged nothing and made no spans", where)
	case spans == 0:
		c.pass(CheckIdentity, task, "two concurrent runs with %s: no spans; %d well-formed log record(s), each on its own run's stream", where, logs)
	default:
		c.pass(CheckIdentity, task, "two concurrent runs with %s: %d span(s), each in its own run's trace under its call; %d log record(s)", where, spans, logs)
	}
}

// Keywords returns the JSON Schema keywords the runner's params checker
// understands (the JSON names of paramschema.Schema's fields), sorted.
func Keywords() []string {
	set := map[string]bool{"additionalProperties": true}
	t := reflect.TypeFor[paramschema.Schema]()
	for i := range t.NumField() {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("json"), ",")
		if name != "" && name != "-" {
			set[name] = true
		}
	}
	return sortedKeys(set)
}

// unknownKeywords lists the keywords of a schema the runner does not check,
// with where they are ("pattern at #/properties/code").
func unknownKeywords(text string) []string {
	var doc any
	dec := json.NewDecoder(bytes.NewReader([]byte(text)))
	dec.UseNumber()
	if strings.TrimSpace(text) == "" || dec.Decode(&doc) != nil {
		return nil
	}
	known := map[string]bool{}
	for _, k := range Keywords() {
		known[k] = true
	}
	var out []string
	var walk func(v any, path string)
	walk = func(v any, path string) {
		obj, ok := v.(map[string]any)
		if !ok {
			return
		}
		for _, k := range sortedKeys(obj) {
			if !known[k] {
				out = append(out, fmt.Sprintf("%q at %s", k, path))
				continue
			}
			switch k {
			case "properties":
				if props, ok := obj[k].(map[string]any); ok {
					for _, name := range sortedKeys(props) {
						walk(props[name], path+"/properties/"+name)
					}
				}
			case "items", "additionalProperties":
				walk(obj[k], path+"/"+k)
			case "oneOf":
				if alts, ok := obj[k].([]any); ok {
					for i, a := range alts {
						walk(a, fmt.Sprintf("%s/oneOf/%d", path, i))
					}
				}
			}
		}
	}
	walk(doc, "#")
	return out
}

// selfSigned makes a throwaway client certificate.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "localhost", Organization: []string{"pacer-check stranger"}},
		DNSNames: []string{"localhost"}, NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, KeyUsage: x509.KeyUsageDigitalSignature,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
