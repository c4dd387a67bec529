package coord

import (
	"bytes"
	"cmp"
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Key layout of job sets and epochs under /pacer/<cluster>/:
//
//	members/<node>               a replica's MemberRecord, on its member lease
//	jobsets/<fingerprint>        a job set's header: jobs, chunks, when written
//	jobsets/<fingerprint>/<n>    its manifest, gzip-compressed, in chunks
//	epochs/<shard>/<token>/<ns>  which job set a shard's leader ran from when on
//
// A job set is stored once per fingerprint, by every replica that holds it
// (the first write wins; later ones find it there). Epochs are written by
// the leader, under its fencing guard, when its term starts and when its
// job set changes during the term; the newest keepEpochs of each shard are
// kept. Job sets
// that no live member and no kept epoch names are removed (collectJobSets).

// ErrUnknownJobSet means no job set is stored under a fingerprint.
var ErrUnknownJobSet = errors.New("job set not stored")

const (
	// keepEpochs bounds the epochs kept: enough to explain every slot a
	// catch-up looks at, short of a cluster whose leader or jobs changed
	// hundreds of times while a job was not run.
	keepEpochs = 256
	// jobSetChunk bounds one stored chunk of a manifest, well within etcd's
	// default request limit (1.5 MiB).
	jobSetChunk = 512 << 10
	// maxManifest bounds a manifest read back (uncompressed).
	maxManifest = 256 << 20
	// jobSetGrace is how long an unnamed job set is kept: a replica stores
	// its set before the member record that names it.
	jobSetGrace = 10 * time.Minute
)

// jobSetHeader is the value of jobsets/<fingerprint>.
type jobSetHeader struct {
	Jobs    int       `json:"jobs"`
	Chunks  int       `json:"chunks"`
	Bytes   int       `json:"bytes"` // compressed
	Written time.Time `json:"written"`
}

// jobSetStore reads and writes job sets and epochs for one cluster. Both
// the Coordinator and the Membership use it.
type jobSetStore struct {
	cli     *clientv3.Client
	prefix  string // /pacer/<cluster>/
	timeout time.Duration

	mu    sync.Mutex
	cache map[string]JobSet // by fingerprint; stored sets never change
	order []string          // cache entries, oldest first
}

func newJobSetStore(cli *clientv3.Client, prefix string, timeout time.Duration) *jobSetStore {
	return &jobSetStore{cli: cli, prefix: prefix, timeout: timeout, cache: map[string]JobSet{}}
}

func (s *jobSetStore) headerKey(fp string) string { return s.prefix + "jobsets/" + fp }
func (s *jobSetStore) chunkKey(fp string, n int) string {
	return fmt.Sprintf("%s/%04d", s.headerKey(fp), n)
}

// put stores set unless it is stored already. Each request is bounded by
// the store's timeout.
func (s *jobSetStore) put(ctx context.Context, set JobSet) error {
	head := s.headerKey(set.Fingerprint)
	do := func(op clientv3.Op) (clientv3.OpResponse, error) {
		ctx, cancel := context.WithTimeout(ctx, s.timeout)
		defer cancel()
		r, err := s.cli.Do(ctx, op)
		if err != nil {
			err = fmt.Errorf("store job set %s: %w", Short(set.Fingerprint), err)
		}
		return r, err
	}
	if r, err := do(clientv3.OpGet(head, clientv3.WithCountOnly())); err != nil {
		return err
	} else if r.Get().Count > 0 {
		return nil
	}
	var z bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&z, gzip.BestSpeed) // level is valid
	_, _ = zw.Write(set.Manifest())
	_ = zw.Close()
	data := z.Bytes()
	var ops []clientv3.Op
	for n := 0; n*jobSetChunk < len(data) || n == 0; n++ {
		ops = append(ops, clientv3.OpPut(s.chunkKey(set.Fingerprint, n), string(data[n*jobSetChunk:min(len(data), (n+1)*jobSetChunk)])))
	}
	hdr, _ := json.Marshal(jobSetHeader{Jobs: len(set.Jobs), Chunks: len(ops), Bytes: len(data), Written: time.Now().UTC()})
	// The header goes last, so that a reader that finds it finds every
	// chunk; a set that fits one request goes in one transaction.
	if len(ops) > 1 {
		for _, op := range ops {
			if _, err := do(op); err != nil {
				return err
			}
		}
		ops = nil
	}
	ops = append(ops, clientv3.OpPut(head, string(hdr)))
	_, err := do(clientv3.OpTxn([]clientv3.Cmp{clientv3.Compare(clientv3.CreateRevision(head), "=", 0)}, ops, nil))
	return err
}

// get reads the job set stored under fingerprint fp.
func (s *jobSetStore) get(ctx context.Context, fp string) (JobSet, error) {
	s.mu.Lock()
	set, ok := s.cache[fp]
	s.mu.Unlock()
	if ok {
		return set, nil
	}
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	head := s.headerKey(fp)
	resp, err := s.cli.Txn(ctx).Then(clientv3.OpGet(head), clientv3.OpGet(head+"/", clientv3.WithPrefix())).Commit()
	if err != nil {
		return JobSet{}, fmt.Errorf("read job set %s: %w", Short(fp), err)
	}
	hk, ck := resp.Responses[0].GetResponseRange().GetKvs(), resp.Responses[1].GetResponseRange().GetKvs()
	if len(hk) == 0 {
		return JobSet{}, fmt.Errorf("%w: %s", ErrUnknownJobSet, Short(fp))
	}
	var h jobSetHeader
	if err := json.Unmarshal(hk[0].Value, &h); err != nil || h.Chunks != len(ck) {
		return JobSet{}, fmt.Errorf("job set %s: header %q does not match its %d chunks", Short(fp), hk[0].Value, len(ck))
	}
	var data []byte
	for _, kv := range ck { // key order is chunk order
		data = append(data, kv.Value...)
	}
	zr, err := gzip.NewReader(bytes.NewReader(data))
	if err != nil {
		return JobSet{}, fmt.Errorf("job set %s: %w", Short(fp), err)
	}
	m, err := io.ReadAll(io.LimitReader(zr, maxManifest))
	if err != nil {
		return JobSet{}, fmt.Errorf("job set %s: %w", Short(fp), err)
	}
	if set, err = ParseManifest(fp, m); err != nil {
		return JobSet{}, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.cache[fp]; !ok {
		s.cache[fp] = set
		s.order = append(s.order, fp)
		if len(s.order) > 8 {
			delete(s.cache, s.order[0])
			s.order = s.order[1:]
		}
	}
	return set, nil
}

// collect removes the job sets that no name in keep refers to and that were
// written more than jobSetGrace ago. It returns how many it removed.
func (s *jobSetStore) collect(ctx context.Context, keep map[string]bool) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	base := s.prefix + "jobsets/"
	resp, err := s.cli.Get(ctx, base, clientv3.WithPrefix(), clientv3.WithKeysOnly())
	if err != nil {
		return 0, err
	}
	removed := 0
	for _, kv := range resp.Kvs {
		fp := strings.TrimPrefix(string(kv.Key), base)
		if strings.Contains(fp, "/") || keep[fp] {
			continue // a chunk, or named
		}
		h, err := s.cli.Get(ctx, string(kv.Key))
		if err != nil {
			return removed, err
		}
		var hdr jobSetHeader
		if len(h.Kvs) == 0 || json.Unmarshal(h.Kvs[0].Value, &hdr) != nil || time.Since(hdr.Written) < jobSetGrace {
			continue
		}
		// Only if the header is still the one read: a set stored again
		// meanwhile is new.
		key := string(kv.Key)
		if _, err := s.cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision(key), "=", h.Kvs[0].ModRevision)).
			Then(clientv3.OpDelete(key), clientv3.OpDelete(key+"/", clientv3.WithPrefix())).Commit(); err != nil {
			return removed, err
		}
		removed++
	}
	return removed, nil
}

// Epoch is a stretch of leadership with one job set. One starts when a
// term starts, and another whenever the leader's job set changes during
// its term; it lasts until the next one starts.
type Epoch struct {
	Since  time.Time `json:"since"`
	Node   string    `json:"node"`
	Shard  int       `json:"shard"`
	Token  int64     `json:"fencing_token"`
	JobSet string    `json:"job_set"`
	Jobs   int       `json:"jobs"`
}

// epochPrefix is every epoch's; shardEpochPrefix a shard's: each shard's
// leaders record theirs (epochs/<shard>/<token>/<unix ns>), and a
// catch-up reads its own shard's, for a fencing token is an etcd revision
// unique across shards, but another shard's leader is not this one's.
func (c *Coordinator) epochPrefix() string { return c.prefix + "epochs/" }
func (c *Coordinator) shardEpochPrefix(shard int) string {
	return c.epochPrefix() + strconv.Itoa(shard) + "/"
}

// RecordEpoch records that t's leader runs set from since on, under t's
// fencing guard, and stores set itself so that a later leader can tell
// which jobs it had. It keeps the newest keepEpochs epochs of t's shard.
func (c *Coordinator) RecordEpoch(ctx context.Context, t *Term, set JobSet, since time.Time) error {
	if err := c.jobSets.put(ctx, set); err != nil {
		return err
	}
	e, _ := json.Marshal(Epoch{Since: since.UTC(), Node: c.opts.Node, Shard: t.Shard, Token: t.Token, JobSet: set.Fingerprint, Jobs: len(set.Jobs)})
	prefix := c.shardEpochPrefix(t.Shard)
	key := fmt.Sprintf("%s%019d/%019d", prefix, t.Token, since.UnixNano())
	if err := c.pastFence(t); err != nil {
		return err
	}
	rctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Txn(rctx).If(clientv3.Compare(clientv3.CreateRevision(t.key), "=", t.Token)).
		Then(clientv3.OpPut(key, string(e))).Commit()
	if err != nil {
		return fmt.Errorf("record epoch: %w", err)
	}
	if !resp.Succeeded {
		c.endTerm(t, ErrNotLeader)
		return ErrNotLeader
	}
	// Best effort: a failure leaves a few more epochs until the next one.
	count, err := c.cli.Get(rctx, prefix, clientv3.WithPrefix(), clientv3.WithCountOnly())
	if err != nil || count.Count <= keepEpochs {
		return nil
	}
	old, err := c.cli.Get(rctx, prefix, clientv3.WithPrefix(), clientv3.WithKeysOnly(),
		clientv3.WithSort(clientv3.SortByKey, clientv3.SortAscend), clientv3.WithLimit(count.Count-keepEpochs))
	if err == nil && len(old.Kvs) > 0 {
		_, _ = c.cli.Delete(rctx, prefix, clientv3.WithRange(string(old.Kvs[len(old.Kvs)-1].Key)+"\x00"))
	}
	return nil
}

// Epochs returns a shard's kept epochs, oldest first: by term, and by time
// within a term. A leader's wall clock may disagree with the previous
// one's; an epoch never starts before the one it follows.
func (c *Coordinator) Epochs(ctx context.Context, shard int) ([]Epoch, error) {
	ctx, cancel := context.WithTimeout(ctx, c.opts.RequestTimeout)
	defer cancel()
	resp, err := c.cli.Get(ctx, c.shardEpochPrefix(shard), clientv3.WithPrefix())
	if err != nil {
		return nil, fmt.Errorf("read epochs: %w", err)
	}
	out := make([]Epoch, 0, len(resp.Kvs))
	for _, kv := range resp.Kvs {
		var e Epoch
		if json.Unmarshal(kv.Value, &e) == nil {
			out = append(out, e)
		}
	}
	slices.SortStableFunc(out, func(a, b Epoch) int {
		return cmp.Or(cmp.Compare(a.Token, b.Token), a.Since.Compare(b.Since))
	})
	for i := 1; i < len(out); i++ {
		if out[i].Since.Before(out[i-1].Since) {
			out[i].Since = out[i-1].Since
		}
	}
	return out, nil
}

// JobSet returns the job set stored under a fingerprint, or an error
// wrapping ErrUnknownJobSet.
func (c *Coordinator) JobSet(ctx context.Context, fingerprint string) (JobSet, error) {
	return c.jobSets.get(ctx, fingerprint)
}

// EpochAt returns the epoch in effect at instant s: the last one that
// started at or before it. ok is false when s is before every epoch.
func EpochAt(epochs []Epoch, s time.Time) (e Epoch, ok bool) {
	i, _ := slices.BinarySearchFunc(epochs, s, func(e Epoch, s time.Time) int {
		if e.Since.After(s) {
			return 1
		}
		return -1
	})
	if i == 0 {
		return Epoch{}, false
	}
	return epochs[i-1], true
}
