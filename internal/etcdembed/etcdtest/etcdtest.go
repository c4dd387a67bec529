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
	if o.ClientURL == "" && o.ClientListen == "" {
		o.ClientListen = FreeAddr(tb)
	}
	if o.PeerURL == "" && o.PeerListen == "" {
		o.PeerListen = FreeAddr(tb)
		for o.PeerListen == o.ClientListen {
			o.PeerListen = FreeAddr(tb)
		}
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

// FreeAddr returns a loopback address with a port free at the time of the
// call.
func FreeAddr(tb testing.TB) string {
	tb.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}
