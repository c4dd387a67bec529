// Command etcdmember runs one embedded etcd member until SIGTERM or SIGINT.
// Pacer's fault-injection tests (cmd/pacer/chaos_*_test.go) start several of
// them as separate processes to build real etcd clusters they can kill,
// pause and restart.
//
//	etcdmember --name n1 --dir D --client 127.0.0.1:P1 --peer 127.0.0.1:P2 \
//	    --initial-cluster n1=http://127.0.0.1:P2,n2=http://127.0.0.1:P4
//
// With --advertise-peer the member tells its peers to reach it at another
// address than it listens on (a fault-injection proxy in front of it).
//
// It prints "ready" on stdout once the member serves clients. Restarted on
// the same --dir it rejoins with its existing data (the initial cluster is
// then ignored).
package main

import (
	"flag"
	"fmt"
	"net/url"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
)

func main() {
	name := flag.String("name", "n1", "member name")
	dir := flag.String("dir", "", "data directory")
	client := flag.String("client", "127.0.0.1:2379", "client listen host:port")
	peer := flag.String("peer", "127.0.0.1:2380", "peer listen host:port")
	advertise := flag.String("advertise-peer", "", "peer host:port to advertise (default: --peer)")
	initial := flag.String("initial-cluster", "", "name=http://peer,... (default: this member alone)")
	timeout := flag.Duration("start-timeout", 60*time.Second, "how long to wait for the member to serve")
	retention := flag.String("auto-compaction-retention", "10m", `periodic compaction's retention; "0": the member never compacts itself`)
	flag.Parse()
	if *dir == "" {
		fail("--dir is required")
	}

	cfg := embed.NewConfig()
	cfg.Name = *name
	cfg.Dir = *dir
	cu, err := url.Parse("http://" + *client)
	if err != nil {
		fail("--client: %v", err)
	}
	pu, err := url.Parse("http://" + *peer)
	if err != nil {
		fail("--peer: %v", err)
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	apu := pu
	if *advertise != "" {
		if apu, err = url.Parse("http://" + *advertise); err != nil {
			fail("--advertise-peer: %v", err)
		}
	}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*apu}
	if *initial != "" {
		cfg.InitialCluster = *initial
	} else {
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	}
	cfg.ClusterState = embed.ClusterStateFlagNew
	cfg.InitialClusterToken = "pacer-chaos"
	cfg.LogLevel = "error"
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = *retention

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		fail("start etcd: %v", err)
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGTERM, syscall.SIGINT)
	select {
	case <-e.Server.ReadyNotify():
		fmt.Println("ready")
	case err := <-e.Err():
		e.Close()
		fail("etcd: %v", err)
	case <-time.After(*timeout):
		e.Close()
		fail("etcd did not become ready within %s", *timeout)
	case <-sig:
		e.Close()
		return
	}
	select {
	case <-sig:
	case err := <-e.Err():
		e.Close()
		fail("etcd: %v", err)
	}
	e.Close()
}

func fail(f string, a ...any) {
	fmt.Fprintf(os.Stderr, "etcdmember: "+f+"\n", a...)
	os.Exit(1)
}
