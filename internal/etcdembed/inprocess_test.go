package etcdembed_test

import (
	"bufio"
	"context"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/internal/etcdembed"
	"github.com/pacerun/pacer/internal/etcdembed/etcdtest"
)

// grpcHandled is the number of requests the gRPC servers of this process's
// etcd members handled, from the /metrics the member serves on its client
// URL.
func grpcHandled(t *testing.T, e *etcdembed.Embedded) float64 {
	t.Helper()
	resp, err := http.Get("http://" + e.Endpoint() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	n, seen := 0.0, false
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		seen = seen || strings.HasPrefix(line, "etcd_server_has_leader")
		if strings.HasPrefix(line, "grpc_server_handled_total{") {
			v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
			if err != nil {
				t.Fatalf("bad sample %q", line)
			}
			n += v
		}
	}
	if !seen {
		t.Fatal("no etcd_server_has_leader in the member's /metrics: not its metrics")
	}
	return n
}

// The in-process client does what the runner asks of etcd (reads, fenced
// transactions, leases and their keepalives, watches, status, alarms,
// compaction, defragmentation) without a connection: it has no endpoint,
// and the member's gRPC server handles none of it. Its Close is clean and
// leaves no goroutine behind (TestMain's goleak).
func TestInProcessClientCallsTheServerDirectly(t *testing.T) {
	e := etcdtest.Start(t, etcdembed.Options{})
	j, err := etcdembed.OpenLeaseJournal(t.TempDir(), nil)
	if err != nil {
		t.Fatal(err)
	}
	before := grpcHandled(t, e)
	cli := etcdembed.NewClient(nil)
	e.Connect(cli, j)
	closed := false
	t.Cleanup(func() {
		if !closed {
			etcdembed.CloseClient(cli)
		}
	})
	if eps, conn := cli.Endpoints(), cli.ActiveConnection(); len(eps) != 0 || conn != nil {
		t.Fatalf("endpoints %v, connection %v: want none", eps, conn)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	w := cli.Watch(ctx, "k")
	l, err := cli.Grant(ctx, 30)
	if err != nil {
		t.Fatal(err)
	}
	if len(j.Previous()) != 0 {
		t.Fatal("a new journal holds previous leases")
	}
	ka, err := cli.KeepAlive(ctx, l.ID)
	if err != nil {
		t.Fatal(err)
	}
	if r := <-ka; r == nil || r.ID != l.ID {
		t.Fatalf("keepalive answer %v, want one for lease %x", r, l.ID)
	}
	put, err := cli.Put(ctx, "k", "v", clientv3.WithLease(l.ID))
	if err != nil {
		t.Fatal(err)
	}
	txn, err := cli.Txn(ctx).If(clientv3.Compare(clientv3.ModRevision("k"), "=", put.Header.Revision)).
		Then(clientv3.OpPut("k", "w", clientv3.WithLease(l.ID))).Commit()
	if err != nil || !txn.Succeeded {
		t.Fatalf("fenced txn: %v, %v", txn, err)
	}
	var values []string
	for len(values) < 2 {
		wr := <-w
		if err := wr.Err(); err != nil {
			t.Fatal(err)
		}
		for _, ev := range wr.Events {
			values = append(values, string(ev.Kv.Value))
		}
	}
	if values[0] != "v" || values[1] != "w" {
		t.Fatalf("watched %q, want v then w", values)
	}
	if got, err := cli.Get(ctx, "k"); err != nil || len(got.Kvs) != 1 || string(got.Kvs[0].Value) != "w" {
		t.Fatalf("get: %v, %v", got, err)
	}
	// The endpoint is only a name: the status is the member's.
	st, err := cli.Status(ctx, "http://"+e.Endpoint())
	if err != nil || st.DbSize == 0 || st.Leader == 0 {
		t.Fatalf("status: %v, %v", st, err)
	}
	if _, err := cli.AlarmList(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Compact(ctx, txn.Header.Revision, clientv3.WithCompactPhysical()); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Defragment(ctx, ""); err != nil {
		t.Fatal(err)
	}
	if _, err := cli.Revoke(ctx, l.ID); err != nil {
		t.Fatal(err)
	}
	if got, err := cli.Get(ctx, "k"); err != nil || len(got.Kvs) != 0 {
		t.Fatalf("the key outlived its revoked lease: %v, %v", got, err)
	}
	if n := grpcHandled(t, e) - before; n != 0 {
		t.Errorf("etcd's gRPC server handled %v requests; want none: the client calls the server directly", n)
	}
	closed = true
	if err := etcdembed.CloseClient(cli); err != nil {
		t.Errorf("CloseClient: %v", err)
	}
}
