package runner

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pacerun/pacer/internal/backoff"
	"github.com/pacerun/pacer/runner/coord"
)

// JobSetOf sums up jobs for comparison between replicas: each job's ID with
// the hash of its definition, the number of shards they are partitioned
// into, and a fingerprint of the whole that does not depend on the jobs'
// order.
func JobSetOf(jobs []*Job, shards int) coord.JobSet {
	m := make(map[string]string, len(jobs))
	for _, j := range jobs {
		m[j.ID] = j.DefinitionHash()
	}
	return coord.NewShardedJobSet(m, shards)
}

// DefinitionHash is a hash of everything that decides what the job does and
// when: every exported field of Job, with the schedule as configured
// (whitespace and @every durations normalized) instead of the parsed one.
// Fields at their zero value are left out, so that a field added to Job in
// a later version changes no hash until a job sets it: replicas of both
// versions still agree on jobs that do not use it. The hash is of a
// canonical text (struct fields and map keys sorted by name, strings
// quoted), the first 8 bytes of its SHA-256 in hex.
func (j *Job) DefinitionHash() string {
	b := canonical(make([]byte, 0, 512), reflect.ValueOf(*j), true)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:8])
}

// notHashed are Job's fields a definition hash leaves out: Schedule is
// parsed from Spec and Timezone, which are hashed.
var notHashed = map[string]bool{"Schedule": true}

// sortedFields caches each struct type's exported fields, sorted by name.
var sortedFields sync.Map // reflect.Type -> []reflect.StructField

func fieldsOf(t reflect.Type) []reflect.StructField {
	if fs, ok := sortedFields.Load(t); ok {
		return fs.([]reflect.StructField)
	}
	var fs []reflect.StructField
	for i := range t.NumField() {
		if f := t.Field(i); f.IsExported() {
			fs = append(fs, f)
		}
	}
	slices.SortFunc(fs, func(a, b reflect.StructField) int { return strings.Compare(a.Name, b.Name) })
	sortedFields.Store(t, fs)
	return fs
}

var durationType = reflect.TypeFor[time.Duration]()

// canonical appends v's canonical text to b, leaving out zero-valued
// struct fields. job is set for the Job itself, whose Schedule is left out
// and whose Spec is normalized.
func canonical(b []byte, v reflect.Value, job bool) []byte {
	switch v.Kind() {
	case reflect.Struct:
		b = append(b, '{')
		for _, f := range fieldsOf(v.Type()) {
			fv := v.FieldByIndex(f.Index)
			if job && notHashed[f.Name] || fv.IsZero() {
				continue
			}
			b = append(strconv.AppendQuote(b, f.Name), ':')
			if job && f.Name == "Spec" {
				b = strconv.AppendQuote(b, normalSpec(fv.String()))
			} else {
				b = canonical(b, fv, false)
			}
			b = append(b, ',')
		}
		return append(b, '}')
	case reflect.Map:
		type entry struct {
			key string
			val reflect.Value
		}
		entries := make([]entry, 0, v.Len())
		for it := v.MapRange(); it.Next(); {
			k := it.Key()
			key := ""
			if k.Kind() == reflect.String {
				key = k.String()
			} else {
				key = fmt.Sprint(k.Interface())
			}
			entries = append(entries, entry{key, it.Value()})
		}
		slices.SortFunc(entries, func(a, b entry) int { return strings.Compare(a.key, b.key) })
		b = append(b, '{')
		for _, e := range entries {
			b = append(strconv.AppendQuote(b, e.key), ':')
			b = append(canonical(b, e.val, false), ',')
		}
		return append(b, '}')
	case reflect.Slice, reflect.Array:
		b = append(b, '[')
		for i := range v.Len() {
			b = append(canonical(b, v.Index(i), false), ',')
		}
		return append(b, ']')
	case reflect.Interface, reflect.Pointer:
		if v.IsNil() {
			return append(b, "null"...)
		}
		return canonical(b, v.Elem(), false)
	case reflect.String:
		return strconv.AppendQuote(b, v.String())
	case reflect.Bool:
		return strconv.AppendBool(b, v.Bool())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		if v.Type() == durationType {
			return strconv.AppendQuote(b, time.Duration(v.Int()).String())
		}
		return strconv.AppendInt(b, v.Int(), 10)
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return strconv.AppendUint(b, v.Uint(), 10)
	case reflect.Float32, reflect.Float64:
		return strconv.AppendFloat(b, v.Float(), 'g', -1, 64)
	}
	return fmt.Appendf(b, "%q", fmt.Sprint(v.Interface()))
}

// normalSpec is a schedule as written, with runs of spaces made one, and
// "@every 60s" written as "@every 1m0s".
func normalSpec(spec string) string {
	s := strings.Join(strings.Fields(spec), " ")
	if rest, ok := strings.CutPrefix(s, "@every "); ok {
		if d, err := time.ParseDuration(rest); err == nil {
			return "@every " + d.String()
		}
	}
	return s
}

// JobSetStore keeps which job set each leader ran when (coord.Epoch), so
// that a later leader can tell a slot missed because nobody led from one
// the leader of the time did not have.
type JobSetStore interface {
	RecordEpoch(ctx context.Context, t *coord.Term, set coord.JobSet, since time.Time) error
	Epochs(ctx context.Context, shard int) ([]coord.Epoch, error)
	JobSet(ctx context.Context, fingerprint string) (coord.JobSet, error)
	AgreedSince(ctx context.Context) (coord.Agreed, error)
}

var _ JobSetStore = (*coord.Coordinator)(nil)

// JobSet returns the job set this replica schedules.
func (r *Runner) JobSet() coord.JobSet {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.jobSet
}

// recordEpoch records, while t lasts, that this replica leads with set
// from since on. A failure other than lost leadership is tried again
// (a blip must not leave a stretch of leadership unexplained), until the
// term ends or the runner stops; a failure is logged when it first occurs
// or changes.
func (r *Runner) recordEpoch(t *coord.Term, set coord.JobSet, since time.Time) {
	if r.o.JobSets == nil {
		return
	}
	// Waits end when the term ends or the runner stops.
	ctx, cancel := context.WithCancel(r.stopCtx)
	defer cancel()
	defer context.AfterFunc(t.Context(), cancel)()
	wait, logged := backoff.New(transientPolicy), ""
	for {
		err := r.o.JobSets.RecordEpoch(t.Context(), t, set, since)
		if err == nil || t.Context().Err() != nil {
			if err == nil && logged != "" {
				r.log.Info("recorded the job set this leader runs", "job_set", coord.Short(set.Fingerprint))
			}
			return
		}
		if err.Error() != logged {
			logged = err.Error()
			r.log.Warn("recording the job set this leader runs failed; retrying while leadership lasts "+
				"(until it is, a later leader cannot tell which jobs this term had)",
				"job_set", coord.Short(set.Fingerprint), "error", err)
		}
		if !backoff.Sleep(ctx, wait.Next()) {
			return
		}
	}
}

// jobSetHistory explains missed slots by the epochs: for each slot, whether
// the leader in charge at its time (or the last one before it) ran the job
// as this replica defines it. It reads the epochs, and the job sets they
// name, once per catch-up, when a job has missed slots.
type jobSetHistory struct {
	r      *Runner
	ctx    context.Context
	shard  int
	epochs []coord.Epoch
	loaded bool
	sets   map[string]*coord.JobSet // nil value: not readable
	// switched is the cluster's latest job-set switch (coord.Agreed),
	// read with the epochs.
	switched coord.Agreed
	// handedOver is the stretch a graceful hand-over before this term
	// held the shard's slots back from: the term that left the mark, and
	// those before it, led no slot from its start (heldBack.from) on.
	handedOver heldBack
}

func (r *Runner) jobSetHistory(ctx context.Context, shard int) *jobSetHistory {
	return &jobSetHistory{r: r, ctx: ctx, shard: shard, sets: map[string]*coord.JobSet{}}
}

// split divides j's missed slots into those the leader of the time did not
// run because it did not have j as defined here (with the text saying so)
// and the rest.
func (h *jobSetHistory) split(j *Job, hash string, missed []time.Time) (absent []time.Time, why []string, rest []time.Time) {
	if h.r.o.JobSets == nil {
		return nil, nil, missed
	}
	h.load()
	for _, s := range missed {
		e, ok := coord.EpochAt(h.epochs, s)
		if !ok || h.ledNone(e, s) {
			rest = append(rest, s)
			continue
		}
		known, same, had := h.defines(e, j, hash)
		if !known || same {
			rest = append(rest, s)
			continue
		}
		what := "did not have the job"
		if had {
			what = "had the job defined differently"
		}
		absent = append(absent, s)
		why = append(why, "not in the leader's job set: "+e.Node+" (shard "+itoa(e.Shard)+", fencing token "+itoa(int(e.Token))+
			"), leading the shard at the scheduled time or the last to lead it before, ran job set "+coord.Short(e.JobSet)+" and "+what)
	}
	return absent, why, rest
}

// orphaned returns those of rest (j's undecided slots before last, its
// last claim, whose leader of the time had j as hash defines it, or that
// came due after it handed the shard over) that nobody was left to
// decide, with the text saying so: the shard's next leader did not have
// j so defined (a failover or a hand-over, during a rolling reload, to a
// replica that got j later), so its catch-up passed j by, and no slot of
// j from s until a leader with j so defined led again is decided. A
// decided later slot means s was decided too, in a record the slot's
// mark stands for: a leader alive after s (its scheduler fires in order;
// slots it dropped are recorded with the latest marked), or a later
// catch-up that coalesced s into a misfire record (attack 30, F1: such a
// slot of a job added by a rolling reload, due in a step-down hand-over's
// gap, had no run and no record once the next leader got the job and
// claimed later slots). Later slots have run, so it does not run late.
func (h *jobSetHistory) orphaned(j *Job, hash string, jc coord.JobClaims, rest []time.Time, last time.Time) (out []time.Time, why []string) {
	if h.r.o.JobSets == nil {
		return nil, nil
	}
	decidedIn := func(from, to time.Time) bool {
		in := func(m time.Time) bool {
			return m.After(from) && m.Before(to) && j.Schedule.Next(m.Add(-time.Nanosecond)).Equal(m)
		}
		return slices.ContainsFunc(jc.Slots, in) || slices.ContainsFunc(jc.Open, func(o coord.OpenClaim) bool { return in(o.Time) })
	}
	for _, s := range rest {
		i := slices.IndexFunc(h.epochs, func(e coord.Epoch) bool { return e.Since.After(s) })
		if i <= 0 {
			continue // before every epoch, or no leader after it
		}
		prev, next := h.epochs[i-1], h.epochs[i]
		if known, same, _ := h.defines(next, j, hash); !known || same || !next.Since.Before(last) {
			continue
		}
		// Until a leader with j so defined led again (at the latest, the
		// one that claimed last).
		until := last.Add(time.Nanosecond)
		for _, e := range h.epochs[i+1:] {
			if !e.Since.Before(until) {
				break
			}
			if _, same, _ := h.defines(e, j, hash); same {
				until = e.Since
				break
			}
		}
		if decidedIn(s, until) {
			continue
		}
		out = append(out, s)
		why = append(why, "came due as shard "+itoa(prev.Shard)+" passed from "+prev.Node+" (fencing token "+itoa(int(prev.Token))+
			"), which had the job, to "+next.Node+" (fencing token "+itoa(int(next.Token))+"), which ran job set "+coord.Short(next.JobSet)+
			" without it; no leader with the job was left to decide it (a failover or a hand-over during a rolling change), "+
			"and later slots of the job have run since, so it is not run late")
	}
	return out, why
}

// ledNone says whether epoch e's term no longer led the shard at slot s:
// it, or a term after it, had handed the shard over and stopped firing
// before s (attack 29, F1: a slot due between a graceful hand-over's
// resignation and the next term, of a job the leaving leader did not
// have, was recorded not_in_job_set against it and not run, though that
// leader had stepped down and the next one had the job). Such a slot was
// held back by the hand-over, or came due while nobody led: the misfire
// policy and the hand-over decide it.
func (h *jobSetHistory) ledNone(e coord.Epoch, s time.Time) bool {
	return !h.handedOver.from.IsZero() && e.Token <= h.handedOver.token && !s.Before(h.handedOver.from)
}

// notClaimed says, for each of slots, who was in charge when it came due
// and did not claim it: the last leader of the shard before the slot (by
// the epochs), other than term t's. "" where no epoch says (before the
// first kept one, or the epochs could not be read): the slot is then put
// down to no replica leading.
func (h *jobSetHistory) notClaimed(t *coord.Term, slots []time.Time) []string {
	if h.r.o.JobSets == nil || len(slots) == 0 {
		return nil
	}
	h.load()
	out := make([]string, len(slots))
	for i, s := range slots {
		if e, ok := coord.EpochAt(h.epochs, s); ok && e.Token != t.Token {
			out[i] = e.Node + " (fencing token " + itoa(int(e.Token)) + "), the last to lead shard " + itoa(e.Shard) +
				" before the scheduled time, did not claim it, nor did a leader after it (that replica stopped, was paused or too slow, or could not reach etcd, or etcd was down)"
		}
	}
	return out
}

// firstHad returns when a leader of the shard first ran j as hash defines
// it (the earliest kept epoch, starting before to, whose job set has it):
// a sound lower bound for the slots of a job never claimed, for none came
// due for a leader before, and none of a job not defined so yet.
func (h *jobSetHistory) firstHad(j *Job, hash string, to time.Time) (time.Time, bool) {
	if h.r.o.JobSets == nil {
		return time.Time{}, false
	}
	h.load()
	for _, e := range h.epochs {
		if !e.Since.Before(to) {
			break
		}
		if _, same, _ := h.defines(e, j, hash); same {
			return e.Since, true
		}
	}
	return time.Time{}, false
}

// load reads the shard's epochs, once.
func (h *jobSetHistory) load() {
	if h.loaded {
		return
	}
	h.loaded = true
	es, err := h.r.o.JobSets.Epochs(h.ctx, h.shard)
	if err != nil {
		h.r.log.Warn("reading which job set each leader ran failed; missed slots are put down to no replica leading", "error", err)
	}
	h.epochs = es
	if h.switched, err = h.r.o.JobSets.AgreedSince(h.ctx); err != nil {
		h.r.log.Warn("reading when the cluster's job set last changed failed; slots of changed jobs due before the old leaders "+
			"stepped down may be left without a record", "error", err)
	}
}

// switchedTo returns since when (just before) hash's set (fp) is the
// cluster's, if j is defined otherwise, or not at all, by a leader of the
// shard in charge after that and before to: the slots of j as hash defines it that came
// due from then on were the cluster's, and that leader did not run them
// (attack 22, T4). ok is false otherwise, which a look that reads no
// claims needs for nearly every job.
func (h *jobSetHistory) switchedTo(j *Job, hash, fp string, to time.Time) (since time.Time, ok bool) {
	if h.r.o.JobSets == nil {
		return time.Time{}, false
	}
	h.load()
	sw := h.switched
	if sw.JobSet != fp || sw.Since.IsZero() || !sw.Since.Before(to) {
		return time.Time{}, false
	}
	for i, e := range h.epochs {
		if !e.Since.Before(to) {
			break
		}
		if i+1 < len(h.epochs) && !h.epochs[i+1].Since.After(sw.Since) {
			continue // over before the switch
		}
		if known, same, _ := h.defines(e, j, hash); known && !same {
			return sw.Since.Add(-time.Nanosecond), true // a slot due at the switch is the new set's
		}
	}
	return time.Time{}, false
}

// diverged returns when a leader of the shard first ran j as hash defines
// it, if a leader in charge after that and before to (the one at that
// time, or a later one) had j otherwise.
func (h *jobSetHistory) diverged(j *Job, hash string, to time.Time) (from time.Time, ok bool) {
	if h.r.o.JobSets == nil {
		return time.Time{}, false
	}
	h.load()
	for _, e := range h.epochs {
		if !e.Since.Before(to) {
			break
		}
		known, same, _ := h.defines(e, j, hash)
		switch {
		case !known:
		case same:
			if from.IsZero() {
				from = e.Since
			}
		case !from.IsZero():
			return from, true
		}
	}
	return time.Time{}, false
}

// defines says how the job set of epoch e's leader has j: known is false
// when that set cannot be read; same when it defines j as hash does; had
// when it has j at all.
func (h *jobSetHistory) defines(e coord.Epoch, j *Job, hash string) (known, same, had bool) {
	set := h.set(e.JobSet)
	if set == nil {
		return false, false, false
	}
	got, had := set.Jobs[j.ID]
	return true, had && got == hash, had
}

func (h *jobSetHistory) set(fp string) *coord.JobSet {
	if s, ok := h.sets[fp]; ok {
		return s
	}
	var out *coord.JobSet
	if s, err := h.r.o.JobSets.JobSet(h.ctx, fp); err == nil {
		out = &s
	} else {
		h.r.log.Warn("job set of an earlier leader not readable; its missed slots are put down to no replica leading",
			"job_set", coord.Short(fp), "error", err)
	}
	h.sets[fp] = out
	return out
}
