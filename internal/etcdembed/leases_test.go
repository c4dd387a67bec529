package etcdembed_test

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/goleak"

	"github.com/pacerun/pacer/internal/etcdembed"
	"github.com/pacerun/pacer/internal/etcdembed/etcdtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// A runner killed with leases alive leaves them in its data directory's
// journal; the next runner there revokes them, so the keys on them go at
// once. Without that, the embedded etcd, restarted, keeps them a TTL (and an
// election timeout) longer. Leases revoked by their runner leave the
// journal; a lease that expired, or a line that is not a lease, costs
// nothing.
func TestLeaseJournalRevokesAKilledRunnersLeases(t *testing.T) {
	dir := t.TempDir()
	client, peer := etcdtest.Addrs(t)
	// As the runner: its in-process client, granting leases through the
	// journal.
	start := func(j *etcdembed.LeaseJournal) (*etcdembed.Embedded, *clientv3.Client) {
		e, err := etcdembed.Start(context.Background(), etcdembed.Options{Name: "t", Dir: filepath.Join(dir, "etcd"), ClientListen: client, PeerListen: peer})
		if err != nil {
			t.Fatal(err)
		}
		cli := etcdembed.NewClient(nil)
		e.Connect(cli, j)
		return e, cli
	}
	ctx := context.Background()

	// The first runner: two leases alive when it dies, one revoked.
	j, err := etcdembed.OpenLeaseJournal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, cli := start(j)
	var alive []clientv3.LeaseID
	for _, key := range []string{"member", "election", "gone"} {
		l, err := cli.Grant(ctx, 60)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := cli.Put(ctx, key, "x", clientv3.WithLease(l.ID)); err != nil {
			t.Fatal(err)
		}
		if key == "gone" {
			if _, err := cli.Revoke(ctx, l.ID); err != nil {
				t.Fatal(err)
			}
			continue
		}
		alive = append(alive, l.ID)
	}
	cli.Close()
	e.Close() // as a kill: nothing revoked

	b, err := os.ReadFile(filepath.Join(dir, "pacer.leases"))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "pacer.leases"), append(b, "not-a-lease\n7fffffff\n"...), 0o600); err != nil {
		t.Fatal(err)
	}

	// The next runner on the directory.
	j, err = etcdembed.OpenLeaseJournal(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	e, cli = start(j)
	t.Cleanup(e.Close)
	t.Cleanup(func() { etcdembed.CloseClient(cli) })
	prev := j.Previous()
	if len(prev) != 3 || prev[0] != alive[0] || prev[1] != alive[1] || prev[2] != 0x7fffffff {
		t.Fatalf("previous leases %x, want the two alive %x and the unknown 7fffffff", prev, alive)
	}
	keys := func() int64 {
		resp, err := cli.Get(ctx, "", clientv3.WithFromKey(), clientv3.WithCountOnly())
		if err != nil {
			t.Fatal(err)
		}
		return resp.Count
	}
	if n := keys(); n != 2 {
		t.Fatalf("%d keys after the restart; want the two on live leases (an etcd restart keeps them)", n)
	}
	n, err := j.RevokePrevious(ctx, cli)
	if err != nil || n != 2 {
		t.Fatalf("RevokePrevious = %d, %v; want 2 revoked", n, err)
	}
	if n := keys(); n != 0 {
		t.Fatalf("%d keys left after revoking the previous runner's leases", n)
	}
	// This runner's own lease is recorded; once revoked, the journal is empty.
	l, err := cli.Grant(ctx, 60)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "pacer.leases")); strings.TrimSpace(string(b)) != strconv.FormatInt(int64(l.ID), 16) {
		t.Fatalf("journal %q, want only %x", b, int64(l.ID))
	}
	if _, err := cli.Revoke(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(filepath.Join(dir, "pacer.leases")); len(strings.TrimSpace(string(b))) != 0 {
		t.Fatalf("journal %q after every lease was revoked, want empty", b)
	}
}
