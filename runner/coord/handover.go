package coord

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/internal/duration"
)

// HandOver is the mark a leader leaves when it hands a shard over
// gracefully (handovers/<shard>): from FiringStopped until the next term of
// the shard starts, its slots were held back by the hand-over, not missed
// for want of a leader, so the next leader runs them late instead of
// applying the misfire policy.
type HandOver struct {
	Shard        int    `json:"shard"`
	Node         string `json:"node"`
	FencingToken int64  `json:"fencing_token"`
	// FiringStopped is when the term stopped starting slots; Resigned
	// when it deleted its election key (wall clocks of the old leader).
	FiringStopped time.Time `json:"firing_stopped"`
	Resigned      time.Time `json:"resigned"`
	// HeldUntil, set by TakeHandOver, ends the slots held back: zero when
	// the taking term started promptly after the resignation on a replica
	// that was running then (every slot from FiringStopped to that term's
	// start was held back), Resigned when it did not (a lone replica
	// restarted, however soon, a replica started since, or a crash came
	// between): the slots of the drain were held back, the later ones
	// missed for want of a leader.
	HeldUntil time.Time `json:"-"`
	// Revision is the mark's mod revision, for TakeHandOver.
	Revision int64 `json:"-"`
}

func (c *Coordinator) handOverKey(n int) string { return c.prefix + "handovers/" + strconv.Itoa(n) }

// markHandOver writes t's hand-over mark under its fencing guard.
func (c *Coordinator) markHandOver(t *Term, firingStopped time.Time) error {
	v, err := json.Marshal(HandOver{Shard: t.Shard, Node: c.opts.Node, FencingToken: t.Token,
		FiringStopped: firingStopped.UTC(), Resigned: time.Now().UTC()})
	if err != nil {
		return err
	}
	if err := c.pastFence(t); err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.Token)).
		Then(clientv3.OpPut(c.handOverKey(t.Shard), string(v))).Commit()
	switch {
	case err != nil:
		return fmt.Errorf("write hand-over mark of shard %d: %w", t.Shard, err)
	case !resp.Succeeded:
		return fmt.Errorf("write hand-over mark of shard %d: %w", t.Shard, ErrNotLeader)
	}
	return nil
}

// TakeHandOver reads the mark an earlier leader of t's shard left when it
// handed the shard over gracefully, and removes it under t's fencing
// guard, so that no later term takes it for its own. ok is false when
// there is none to take. Only the slots of its drain were held back
// (HeldUntil) if it resigned before this replica's process started (a lone
// replica restarted within a lease TTL: nobody was there to take its slots
// meanwhile), or more than a lease TTL (plus the request timeout, for
// clocks and a slow election) before t started (the leader that stopped had
// no successor in time, or a crash came between).
func (c *Coordinator) TakeHandOver(ctx context.Context, t *Term) (h HandOver, ok bool, err error) {
	key := c.handOverKey(t.Shard)
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, key)
	if err != nil {
		return HandOver{}, false, fmt.Errorf("read hand-over mark of shard %d: %w", t.Shard, err)
	}
	if len(resp.Kvs) == 0 {
		return HandOver{}, false, nil
	}
	kv := resp.Kvs[0]
	// Taken (deleted) whatever it says: it is about this term's start or
	// about nothing any more.
	del, err := c.cli.Txn(ctx).If(clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.Token),
		clientv3.Compare(clientv3.ModRevision(key), "=", kv.ModRevision)).Then(clientv3.OpDelete(key)).Commit()
	switch {
	case err != nil:
		return HandOver{}, false, fmt.Errorf("take hand-over mark of shard %d: %w", t.Shard, err)
	case !del.Succeeded:
		return HandOver{}, false, nil // another term's, or this one ended
	}
	if json.Unmarshal(kv.Value, &h) != nil || h.FencingToken >= t.Token || h.FiringStopped.IsZero() {
		return HandOver{}, false, nil
	}
	switch gap := t.Since.Sub(h.Resigned); {
	case gap < -c.opts.LeaseTTL:
		return HandOver{}, false, nil // resigned after t started, by a clock too far off to tell
	case gap > duration.Sum(c.opts.LeaseTTL, c.opts.RequestTimeout):
		h.HeldUntil = h.Resigned // nobody took over in time: the slots since were missed
	case h.Resigned.Before(c.created):
		// This replica was not running when the mark was left (attack
		// 13, J1: a lone replica restarted within a lease TTL): the slots
		// since were missed, not held for it.
		h.HeldUntil = h.Resigned
	}
	h.Revision = kv.ModRevision
	return h, true, nil
}
