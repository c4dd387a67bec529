package etcdembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// leaseFile holds, in the data directory, the leases the runner holding the
// directory's lock was granted and has not revoked: hex IDs, one a line.
const leaseFile = "pacer.leases"

// journalKeep bounds the journal: leases lost (expired) while the runner
// lives are never revoked by it, and only the newest are kept.
const journalKeep = 64

// A LeaseJournal remembers, in the locked data directory, every lease the
// runner is granted, before etcd grants it (the runner picks the ID), and
// forgets it when the runner revokes it. A runner killed with leases alive
// leaves them in the journal; the next runner on the directory, which holds
// its lock and so knows that runner is gone, revokes them at start, and
// leads at once instead of waiting for them to expire. (An embedded etcd
// that restarts gives every lease it holds its full TTL again, plus an
// election timeout, counted from its restart.)
type LeaseJournal struct {
	path string
	log  *slog.Logger

	mu     sync.Mutex
	ids    []clientv3.LeaseID // granted and not revoked, oldest first
	warned bool
	prev   []clientv3.LeaseID // the previous runner's, until RevokePrevious
}

// OpenLeaseJournal reads the journal in dir, which the caller has locked
// (LockDataDir): the leases in it are the previous runner's.
func OpenLeaseJournal(dir string, log *slog.Logger) (*LeaseJournal, error) {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	j := &LeaseJournal{path: filepath.Join(dir, leaseFile), log: log}
	b, err := os.ReadFile(j.path)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("cluster.data_dir: %w", err)
	}
	for f := range strings.FieldsSeq(string(b)) {
		// A line cut short by a crash mid-write cannot happen (the file
		// is replaced whole), but a bad line only costs its lease's TTL.
		if id, err := strconv.ParseInt(f, 16, 64); err == nil && id > 0 {
			j.prev = append(j.prev, clientv3.LeaseID(id))
		}
	}
	return j, nil
}

// Previous returns the leases the previous runner left in the journal.
func (j *LeaseJournal) Previous() []clientv3.LeaseID {
	j.mu.Lock()
	defer j.mu.Unlock()
	return slices.Clone(j.prev)
}

// RevokePrevious revokes the leases the previous runner on this directory
// left (it was killed, or lost its etcd before it could revoke them), so its
// member record and election key go at once. It returns how many were
// still alive. A lease that expired already is no error.
func (j *LeaseJournal) RevokePrevious(ctx context.Context, cli *clientv3.Client) (int, error) {
	prev := j.Previous()
	revoked := 0
	for _, id := range prev {
		_, err := cli.Revoke(ctx, id)
		switch {
		case err == nil:
			revoked++
		case errors.Is(err, rpctypes.ErrLeaseNotFound):
		default:
			return revoked, fmt.Errorf("revoke lease %x of the previous runner: %w", int64(id), err)
		}
	}
	j.mu.Lock()
	j.prev = nil
	err := j.writeLocked()
	j.mu.Unlock()
	return revoked, err
}

// wrap makes cli grant every lease through the journal, asking remote
// (Embedded.Connect).
func (j *LeaseJournal) wrap(cli *clientv3.Client, remote pb.LeaseClient) {
	cli.Lease = &journaledLease{Lease: cli.Lease, j: j, remote: remote}
}

func (j *LeaseJournal) add(id clientv3.LeaseID) {
	j.mu.Lock()
	defer j.mu.Unlock()
	j.ids = append(j.ids, id)
	if len(j.ids) > journalKeep {
		j.ids = slices.Delete(j.ids, 0, len(j.ids)-journalKeep)
	}
	j.writeOrWarnLocked()
}

func (j *LeaseJournal) remove(id clientv3.LeaseID) {
	j.mu.Lock()
	defer j.mu.Unlock()
	if i := slices.Index(j.ids, id); i >= 0 {
		j.ids = slices.Delete(j.ids, i, i+1)
		j.writeOrWarnLocked()
	}
}

func (j *LeaseJournal) writeOrWarnLocked() {
	if err := j.writeLocked(); err != nil && !j.warned {
		j.warned = true
		j.log.Warn("cannot record the runner's etcd leases in its data directory; restarted after a crash, it waits for them to expire", "error", err)
	}
}

// writeLocked replaces the file with the leases alive now, and the previous
// runner's not yet revoked. Called with j.mu held.
func (j *LeaseJournal) writeLocked() error {
	var b strings.Builder
	for _, id := range slices.Concat(j.prev, j.ids) {
		b.WriteString(strconv.FormatInt(int64(id), 16))
		b.WriteByte('\n')
	}
	tmp := j.path + ".tmp"
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	_, err = f.WriteString(b.String())
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, j.path)
	}
	return err
}

// journaledLease grants leases with IDs it picks and records first.
type journaledLease struct {
	clientv3.Lease
	j      *LeaseJournal
	remote pb.LeaseClient
}

func (l *journaledLease) Grant(ctx context.Context, ttl int64) (*clientv3.LeaseGrantResponse, error) {
	for try := 0; ; try++ {
		id := clientv3.LeaseID(rand.Int64N(math.MaxInt64-1) + 1)
		// Recorded before etcd knows it, and kept on any error (a grant
		// whose answer was lost may have happened): a crash leaves no
		// lease unrecorded, and revoking one that never was costs nothing.
		l.j.add(id)
		resp, err := l.remote.LeaseGrant(ctx, &pb.LeaseGrantRequest{TTL: ttl, ID: int64(id)})
		if err != nil {
			err = clientv3.ContextError(ctx, err)
			if errors.Is(err, rpctypes.ErrLeaseExist) && try < 3 {
				continue // taken (by a retry of this very request, most likely): another ID
			}
			return nil, err
		}
		return &clientv3.LeaseGrantResponse{ResponseHeader: resp.GetHeader(), ID: clientv3.LeaseID(resp.ID), TTL: resp.TTL, Error: resp.Error}, nil
	}
}

func (l *journaledLease) Revoke(ctx context.Context, id clientv3.LeaseID) (*clientv3.LeaseRevokeResponse, error) {
	resp, err := l.Lease.Revoke(ctx, id)
	if err == nil || errors.Is(err, rpctypes.ErrLeaseNotFound) {
		l.j.remove(id)
	}
	return resp, err
}
