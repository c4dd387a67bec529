// Package etcdembed runs a single-node etcd inside the runner process (the
// default when no cluster.etcd.endpoints are set), gives the runner a client
// that calls it in the process (NewClient, Connect), locks its data
// directory, and remembers the leases the runner was granted on it, so
// that a runner restarted after a crash can revoke its predecessor's at
// once. It is the only package besides internal/etcdmember (the fault
// suite's) that links etcd's server; runner and runner/api do not.
package etcdembed

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"github.com/pacerun/pacer/internal/zapslog"
)

// Options configure a single-node etcd inside the runner process.
type Options struct {
	Name string
	Dir  string
	// ClientURL and PeerURL are where it listens ("http://host:port");
	// ClientListen and PeerListen (host:port) are used when they are empty.
	ClientURL, PeerURL       string
	ClientListen, PeerListen string
	// ClientKey and PeerKey name the config keys of the addresses, for
	// error messages (default: the option names).
	ClientKey, PeerKey string
	// QuotaBytes is the space quota (etcd --quota-backend-bytes): when the
	// database file reaches it, etcd refuses writes. Default 2 GiB.
	QuotaBytes int64
	// CompactionRetention is the embedded etcd's own periodic compaction:
	// every this often, revisions older than this are dropped. Default 1m
	// (a single member needs history only for watches that reconnect; a
	// longer one holds more of the database); negative: none (as an etcd
	// that is not told to compact).
	CompactionRetention time.Duration
	Logger              *slog.Logger
	// SyncLog, if set, flushes Logger's output: etcd ends the process
	// after a fatal error, and the lines that say why must be out first.
	SyncLog      func() error
	StartTimeout time.Duration
}

// Embedded etcd's settings besides the options: etcd's defaults, stated
// here because the database's size depends on them.
const (
	// etcdLogEvery: the embedded etcd's log passes on one line per message
	// (and level) in this time; the next after carries the count dropped.
	etcdLogEvery = 10 * time.Second
	// DefaultQuotaBytes is the space quota unless one is given: etcd's own
	// default, 2 GiB.
	DefaultQuotaBytes = 2 << 30
	// embeddedSnapshotCount: raft entries kept in memory between
	// snapshots (etcd's default); bounds the member's memory.
	embeddedSnapshotCount = 10000
	// The backend commits its batch every 100ms or 10,000 writes, and its
	// free pages are kept in a map (etcd's defaults).
	embeddedBatchInterval = 100 * time.Millisecond
	embeddedBatchLimit    = 10000
)

// Embedded is a running embedded etcd member.
type Embedded struct {
	etcd    *embed.Etcd
	closing *atomic.Bool
	log     *slog.Logger
}

// Start starts a single-node etcd and waits until it serves. A port in
// use is an error that names the address and its config key.
func Start(ctx context.Context, o Options) (*Embedded, error) {
	if o.StartTimeout <= 0 {
		o.StartTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.QuotaBytes <= 0 {
		o.QuotaBytes = DefaultQuotaBytes
	}
	if o.CompactionRetention == 0 {
		o.CompactionRetention = time.Minute
	}
	if o.ClientURL == "" {
		o.ClientURL = "http://" + o.ClientListen
	}
	if o.PeerURL == "" {
		o.PeerURL = "http://" + o.PeerListen
	}
	if o.ClientKey == "" {
		o.ClientKey = "client URL"
	}
	if o.PeerKey == "" {
		o.PeerKey = "peer URL"
	}
	cfg := embed.NewConfig()
	cfg.Name = o.Name
	cfg.Dir = o.Dir
	cu, err := url.Parse(o.ClientURL)
	if err != nil {
		return nil, fmt.Errorf("%s: embedded etcd client address %q: %w", o.ClientKey, o.ClientURL, err)
	}
	pu, err := url.Parse(o.PeerURL)
	if err != nil {
		return nil, fmt.Errorf("%s: embedded etcd peer address %q: %w", o.PeerKey, o.PeerURL, err)
	}
	// etcd reports a port in use without saying which of its listeners
	// failed: try each first, to name the key.
	for _, l := range []struct{ key, addr string }{{o.ClientKey, cu.Host}, {o.PeerKey, pu.Host}} {
		ln, err := net.Listen("tcp", l.addr)
		if err != nil {
			if errors.Is(err, syscall.EADDRINUSE) {
				return nil, fmt.Errorf("%s: %s is already in use (another pacer or etcd on this host?): choose a free port", l.key, l.addr)
			}
			return nil, fmt.Errorf("%s: cannot listen on %s: %w", l.key, l.addr, err)
		}
		ln.Close()
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	cfg.QuotaBackendBytes = o.QuotaBytes
	cfg.SnapshotCount = embeddedSnapshotCount
	cfg.BackendBatchInterval, cfg.BackendBatchLimit = embeddedBatchInterval, embeddedBatchLimit
	// Claims and records rewrite keys; keep history short so the database
	// stays small (the leader also compacts: cluster.etcd.compaction_interval).
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = o.CompactionRetention.String()
	if o.CompactionRetention < 0 {
		cfg.AutoCompactionRetention = "0"
	}
	// etcd reports its listeners closing as errors; while we close it on
	// purpose, those lines are demoted to debug.
	closing := new(atomic.Bool)
	log := o.Logger.With("component", "etcd")
	// Every: a restarting member logs some warnings hundreds of times
	// within milliseconds; one line per message per 10 s, with a count.
	core := zapslog.New(log, zapslog.Options{Level: zapcore.WarnLevel, Quiet: closing, Demote: benign, Every: etcdLogEvery, Sync: o.SyncLog,
		OnError: func(msg string, attrs []any) {
			if diskFull(msg, attrs) {
				// etcd stops the process after a failed write (zap
				// Fatal): say what happened, and what to do, in one line.
				log.Error(DiskFullHelp(o.Dir), "etcd_message", msg)
			}
		}})
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(core))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		if errors.Is(err, syscall.EADDRINUSE) {
			return nil, fmt.Errorf("start embedded etcd: %w (%s %s, %s %s): choose free ports", err, o.ClientKey, cu.Host, o.PeerKey, pu.Host)
		}
		return nil, fmt.Errorf("start embedded etcd in %s: %w", o.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return &Embedded{etcd: e, closing: closing, log: log}, nil
	case err := <-e.Err():
		e.Close()
		return nil, fmt.Errorf("embedded etcd failed: %w", err)
	case <-time.After(o.StartTimeout):
		e.Close()
		return nil, fmt.Errorf("embedded etcd did not become ready within %s", o.StartTimeout)
	case <-ctx.Done():
		e.Close()
		return nil, ctx.Err()
	}
}

// Endpoint is the client URL to dial.
func (e *Embedded) Endpoint() string { return e.etcd.Clients[0].Addr().String() }

// Close stops the member. Close every client first: etcd waits for open
// client connections to drain.
func (e *Embedded) Close() {
	e.closing.Store(true)
	// etcd stops its gRPC server gracefully, bounded by its request
	// timeout (5 s + two election timeouts: 7 s): other replicas' watches
	// and lease keepalives on it never end by themselves, so with any
	// connected the stop waits all of it. Said here, not left a silent gap.
	if e.etcd.Server != nil {
		e.log.Info("closing the embedded etcd: it waits for the open client connections (other replicas' watches and lease keepalives) to end, then closes them",
			"wait_max_ms", e.etcd.Server.Cfg.ReqTimeout().Milliseconds())
	}
	e.etcd.Close()
	e.log.Info("embedded etcd closed")
}

// benign lists etcd warnings that are expected for an embedded single-node
// member on loopback and say nothing an operator can act on.
var benign = map[string]bool{
	"Running http and grpc server on single port. This is not recommended for production.": true,
	"simple token is not cryptographically signed":                                         true,
}

// DiskFullHelp is the one line that says the embedded etcd's disk is full.
func DiskFullHelp(dir string) string {
	return "embedded etcd's disk is full (no space left on device in " + dir + "): etcd cannot write, and the runner stops. " +
		"Fix: free space on that file system (or move cluster.data_dir to a larger one), then start pacer again"
}

// diskFull reports whether an etcd log entry is about a write that failed
// for lack of disk space.
func diskFull(msg string, attrs []any) bool {
	if strings.Contains(msg, syscall.ENOSPC.Error()) {
		return true
	}
	for _, a := range attrs {
		if s, ok := a.(string); ok && strings.Contains(s, syscall.ENOSPC.Error()) {
			return true
		}
	}
	return false
}
