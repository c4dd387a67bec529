package etcdembed

import (
	"context"
	"errors"
	"time"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.etcd.io/etcd/server/v3/etcdserver"
	"go.etcd.io/etcd/server/v3/etcdserver/api/v3rpc"
	"go.etcd.io/etcd/server/v3/proxy/grpcproxy/adapter"
	"go.uber.org/zap"
	"google.golang.org/grpc"
)

// NewClient returns a client of an embedded etcd that calls its server in
// this process, not over its client URL: no protobuf encoding, HTTP/2
// framing or socket on either side of a request. It has no parts yet, so
// that it can be handed to its users before the member starts: Connect
// gives it them, and nothing may use it before. It has no endpoints
// (Endpoints is empty) and no connection (ActiveConnection is nil).
// Close it with CloseClient, before the member.
func NewClient(log *zap.Logger) *clientv3.Client {
	if log == nil {
		log = zap.NewNop()
	}
	return clientv3.NewCtxClient(context.Background(), clientv3.WithZapLogger(log))
}

// Connect gives cli, from NewClient, its KV, Lease, Watcher, Maintenance,
// Cluster and Auth, which call e's server directly through etcd's own
// adapters (as its v3client package does); with a journal, every lease it
// is granted is recorded in it first. Call it once, before cli is used.
//
// The calls skip etcd's gRPC interceptors: etcd's grpc_server_* metrics
// do not count them, clientv3.WithRequireLeader is not checked (a single
// member leads itself), and no auth token is sent, so that an embedded
// etcd with authentication enabled refuses them: use a client of its URL
// then.
func (e *Embedded) Connect(cli *clientv3.Client, j *LeaseJournal) {
	s := e.etcd.Server
	cli.KV = clientv3.NewKVFromKVClient(adapter.KvServerToKvClient(v3rpc.NewQuotaKVServer(s)), cli)
	lc := adapter.LeaseServerToLeaseClient(v3rpc.NewQuotaLeaseServer(s))
	// time.Second: the lessor's default for its first keepalive's answer.
	cli.Lease = clientv3.NewLeaseFromLeaseClient(lc, cli, time.Second)
	cli.Watcher = clientv3.NewWatchFromWatchClient(adapter.WatchServerToWatchClient(v3rpc.NewWatchServer(s)), cli)
	mc := adapter.MaintenanceServerToMaintenanceClient(v3rpc.NewMaintenanceServer(s, nil))
	cli.Maintenance = clientv3.NewMaintenanceFromMaintenanceClient(defragmenter{mc, s}, cli)
	cli.Cluster = clientv3.NewClusterFromClusterClient(adapter.ClusterServerToClusterClient(v3rpc.NewClusterServer(s)), cli)
	cli.Auth = clientv3.NewAuthFromAuthClient(adapter.AuthServerToAuthClient(v3rpc.NewAuthServer(s)), cli)
	if j != nil {
		j.wrap(cli, lc)
	}
}

// CloseClient closes a client from NewClient: Close, whose
// context.Canceled (the client's own context, which it cancels; a client
// of a URL returns its connection's error instead) is no error here.
func CloseClient(cli *clientv3.Client) error {
	if err := cli.Close(); err != nil && !errors.Is(err, context.Canceled) {
		return err
	}
	return nil
}

// defragmenter defragments through the server itself: etcd's maintenance
// server, built without the gRPC health server it tells of a
// defragmentation (which an in-process client has none of), would call a
// nil notifier. The health server only stops serving during one when etcd
// is told to (StopGRPCServiceOnDefrag, off in an embedded member).
type defragmenter struct {
	pb.MaintenanceClient
	s *etcdserver.EtcdServer
}

func (d defragmenter) Defragment(context.Context, *pb.DefragmentRequest, ...grpc.CallOption) (*pb.DefragmentResponse, error) {
	if err := d.s.Defragment(); err != nil {
		return nil, err
	}
	return &pb.DefragmentResponse{}, nil
}
