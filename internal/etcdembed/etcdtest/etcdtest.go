// Package etcdtest starts a real embedded etcd member for one test or
// benchmark: the tests of the packages that talk to etcd share it rather
// than each carrying a copy of the start, client and clean-up lines.
package etcdtest

import (
	"context"
	"net"
	"testing"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/pacerun/pacer/internal/etcdembed"
)

// Start starts an embedded member with o, and closes it when tb ends. The
// name ("test"), the data directory (a new temporary one) and the client
// and peer addresses (free loopback ports) are filled in where o leaves
// them empty.
func Start(tb testing.TB, o etcdembed.Options) *etcdembed.Embedded {
	tb.Helper()
	if o.Name == "" {
		o.Name = "test"
	}
	if o.Dir == "" {
		o.Dir = tb.TempDir()
	}
	client, peer := Addrs(tb)
	if o.ClientURL == "" && o.ClientListen == "" {
		o.ClientListen = client
	}
	if o.PeerURL == "" && o.PeerListen == "" {
		o.PeerListen = peer
	}
	e, err := etcdembed.Start(context.Background(), o)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(e.Close)
	return e
}

// Client returns a client of e with cfg (its endpoints set to e's), closed
// when tb ends: before e, when e was started first with Start.
func Client(tb testing.TB, e *etcdembed.Embedded, cfg clientv3.Config) *clientv3.Client {
	tb.Helper()
	cfg.Endpoints = []string{e.Endpoint()}
	cli, err := clientv3.New(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { cli.Close() })
	return cli
}

// InProcessClient returns e's in-process client, as the runner has of its
// embedded etcd (etcdembed.NewClient), closed when tb ends: before e, when e
// was started first with Start.
func InProcessClient(tb testing.TB, e *etcdembed.Embedded) *clientv3.Client {
	tb.Helper()
	cli := etcdembed.NewClient(nil)
	e.Connect(cli, nil)
	tb.Cleanup(func() { _ = etcdembed.CloseClient(cli) })
	return cli
}

// Addrs returns a member's client and peer addresses: two loopback
// addresses, distinct, whose ports were free at the time of the call. A
// test that restarts a member on the same addresses takes them here.
func Addrs(tb testing.TB) (client, peer string) {
	tb.Helper()
	var addrs [2]string
	for i := range addrs {
		l, err := net.Listen("tcp", "127.0.0.1:0") // both held open at once, so the kernel gives two ports
		if err != nil {
			tb.Fatal(err)
		}
		defer l.Close()
		addrs[i] = l.Addr().String()
	}
	return addrs[0], addrs[1]
}
