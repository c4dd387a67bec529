package coord

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// A job's pause history: when it was paused and resumed, so that a new
// leader deciding the slots that came due while nobody led (runner's
// catch-up) goes by whether the job was paused at each slot's time, not
// by the flag as it is when it takes over. The flag paused/<job> is the
// stretch still open: its value is the pause's note, JSON whose "at" is
// when the job was paused. A resume deletes the flag and, in the same
// transaction, appends the stretch it closes ([the flag's at, the resume
// note's at]) to pauses/<job>, which keeps the job's last maxPauses
// stretches and goes with the job's other keys (ForgetJob).
//
// The times are the wall clocks of the replicas that served the requests.
// A replica of an earlier version ignores the history; a resume it serves
// deletes the flag without appending the stretch, so that stretch is
// forgotten (its slots are decided by the flag, as that version did).

// maxPauses bounds the closed stretches kept per job.
const maxPauses = 32

// Pause is one stretch a job was paused: from From, before Until (zero:
// still paused).
type Pause struct {
	From  time.Time `json:"from"`
	Until time.Time `json:"until,omitzero"`
}

// Holds says whether the job was paused at s.
func (p Pause) Holds(s time.Time) bool {
	return !s.Before(p.From) && (p.Until.IsZero() || s.Before(p.Until))
}

// PausedAt says whether any of pauses held at s.
func PausedAt(pauses []Pause, s time.Time) bool {
	for _, p := range pauses {
		if p.Holds(s) {
			return true
		}
	}
	return false
}

func (c *Coordinator) pausesPrefix() string { return c.prefix + "pauses/" }

// noteAt is the "at" of a pause or resume note (zero: none readable).
func noteAt(note []byte) time.Time {
	var n struct {
		At time.Time `json:"at"`
	}
	if json.Unmarshal(note, &n) != nil {
		return time.Time{}
	}
	return n.At
}

// closedPauses appends the stretch from the flag's note to the resume's
// to the stored history, keeping the last maxPauses. A flag whose note has
// no time adds nothing.
func closedPauses(stored, flag, resume []byte) ([]byte, bool) {
	from := noteAt(flag)
	if from.IsZero() {
		return nil, false
	}
	until := noteAt(resume)
	if until.IsZero() {
		until = time.Now()
	}
	var ps []Pause
	if len(stored) > 0 {
		_ = json.Unmarshal(stored, &ps) // unreadable: start again
	}
	ps = append(ps, Pause{From: from.UTC(), Until: until.UTC()})
	if len(ps) > maxPauses {
		ps = ps[len(ps)-maxPauses:]
	}
	b, err := json.Marshal(ps)
	return b, err == nil
}

// PauseHistory returns, for every job that has any, the stretches it was
// paused: the closed ones kept, then the open one if it is paused now.
func (c *Coordinator) PauseHistory(ctx context.Context) (map[string][]Pause, error) {
	out := map[string][]Pause{}
	err := c.rangeAll(ctx, c.pausesPrefix(), func(kv *mvccKV) {
		var ps []Pause
		if json.Unmarshal(kv.Value, &ps) == nil && len(ps) > 0 {
			out[strings.TrimPrefix(string(kv.Key), c.pausesPrefix())] = ps
		}
	})
	if err != nil {
		return nil, fmt.Errorf("read the pause history: %w", err)
	}
	err = c.rangeAll(ctx, c.pausedPrefix(), func(kv *mvccKV) {
		job := strings.TrimPrefix(string(kv.Key), c.pausedPrefix())
		// A flag without a readable time (not written by Control) holds
		// from the start of time: the job is paused, since when unknown.
		out[job] = append(out[job], Pause{From: noteAt(kv.Value)})
	})
	if err != nil {
		return nil, fmt.Errorf("read the pause flags: %w", err)
	}
	return out, nil
}

// pauseOps are the writes of a pause or resume, given the flag and the
// history as read (nil: absent), and the comparisons that they are still
// so.
func (c *Coordinator) pauseOps(job string, paused bool, note []byte, flag, hist *mvccKV) (ops []clientv3.Op, cmps []clientv3.Cmp) {
	fkey, hkey := c.pausedPrefix()+job, c.pausesPrefix()+job
	frev, hrev := int64(0), int64(0)
	if flag != nil {
		frev = flag.ModRevision
	}
	if hist != nil {
		hrev = hist.ModRevision
	}
	cmps = []clientv3.Cmp{clientv3.Compare(clientv3.ModRevision(fkey), "=", frev)}
	switch {
	case paused && flag == nil:
		ops = append(ops, clientv3.OpPut(fkey, string(note)))
	case paused:
		// Paused already: the stretch goes on from the first pause.
	case flag != nil:
		ops = append(ops, clientv3.OpDelete(fkey))
		var stored []byte
		if hist != nil {
			stored = hist.Value
		}
		if b, ok := closedPauses(stored, flag.Value, note); ok {
			ops = append(ops, clientv3.OpPut(hkey, string(b)))
			cmps = append(cmps, clientv3.Compare(clientv3.ModRevision(hkey), "=", hrev))
		}
	}
	return ops, cmps
}
