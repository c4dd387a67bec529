package coord

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Agreed says since when the cluster's job set is the one it names, as a
// replica that holds that set saw the cluster switch to it (a rolling
// update reaching its majority): until the leaders with the old set step
// down, after job_set_settle, they run the jobs as the old set defines
// them, and the slots of the new definitions that come due meanwhile are
// the new leaders' to record (attack 22, T4: a job whose new definition
// no leader had run before the switch had slots with neither a run nor a
// record). One key, agreed, holds the latest switch.
type Agreed struct {
	JobSet string    `json:"job_set"`
	Since  time.Time `json:"since"`
	Node   string    `json:"node"`
}

func (s *jobSetStore) agreedKey() string { return s.prefix + "agreed" }

// noteAgreed records a switch to a.JobSet, unless the key names that set
// already (another holder of it saw the switch too: the first one's time
// stands).
func (s *jobSetStore) noteAgreed(ctx context.Context, a Agreed) error {
	b, err := json.Marshal(a)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	key := s.agreedKey()
	resp, err := s.cli.Get(ctx, key)
	if err != nil {
		return fmt.Errorf("read the job set switch: %w", err)
	}
	var cmp clientv3.Cmp
	if len(resp.Kvs) > 0 {
		var cur Agreed
		if json.Unmarshal(resp.Kvs[0].Value, &cur) == nil && cur.JobSet == a.JobSet {
			return nil
		}
		cmp = clientv3.Compare(clientv3.ModRevision(key), "=", resp.Kvs[0].ModRevision)
	} else {
		cmp = clientv3.Compare(clientv3.CreateRevision(key), "=", 0)
	}
	if _, err := s.cli.Txn(ctx).If(cmp).Then(clientv3.OpPut(key, string(b))).Commit(); err != nil {
		return fmt.Errorf("record the job set switch: %w", err)
	}
	return nil
}

// AgreedSince returns the cluster's latest recorded job-set switch (a zero
// Agreed if none is recorded).
func (c *Coordinator) AgreedSince(ctx context.Context) (Agreed, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.jobSets.agreedKey())
	if err != nil {
		return Agreed{}, fmt.Errorf("read the job set switch: %w", err)
	}
	var a Agreed
	if len(resp.Kvs) > 0 {
		_ = json.Unmarshal(resp.Kvs[0].Value, &a)
	}
	return a, nil
}

// NoteAgreed records a switch of the cluster's job set (the membership
// does, on the replicas that hold the new set; see Agreed).
func (c *Coordinator) NoteAgreed(ctx context.Context, a Agreed) error {
	return c.jobSets.noteAgreed(ctx, a)
}
