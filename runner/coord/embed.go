package coord

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"sync/atomic"
	"time"

	"go.etcd.io/etcd/server/v3/embed"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// EmbeddedOptions configure a single-node etcd inside the runner process.
type EmbeddedOptions struct {
	Name         string
	Dir          string
	ClientListen string // host:port
	PeerListen   string // host:port
	Logger       *slog.Logger
	StartTimeout time.Duration
}

// Embedded is a running embedded etcd member.
type Embedded struct {
	etcd    *embed.Etcd
	closing *atomic.Bool
}

// StartEmbedded starts a single-node etcd and waits until it serves.
func StartEmbedded(ctx context.Context, o EmbeddedOptions) (*Embedded, error) {
	if o.StartTimeout <= 0 {
		o.StartTimeout = 30 * time.Second
	}
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	cfg := embed.NewConfig()
	cfg.Name = o.Name
	cfg.Dir = o.Dir
	cu, err := url.Parse("http://" + o.ClientListen)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd client address %q: %w", o.ClientListen, err)
	}
	pu, err := url.Parse("http://" + o.PeerListen)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd peer address %q: %w", o.PeerListen, err)
	}
	cfg.ListenClientUrls, cfg.AdvertiseClientUrls = []url.URL{*cu}, []url.URL{*cu}
	cfg.ListenPeerUrls, cfg.AdvertisePeerUrls = []url.URL{*pu}, []url.URL{*pu}
	cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	// Slot claims churn keys; keep history short so the database stays small.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "10m"
	// etcd reports its listeners closing as errors; while we close it on
	// purpose, those lines are demoted to debug.
	closing := new(atomic.Bool)
	core := &slogCore{log: o.Logger.With("component", "etcd"), level: zapcore.WarnLevel, quiet: closing}
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(core))

	e, err := embed.StartEtcd(cfg)
	if err != nil {
		return nil, fmt.Errorf("start embedded etcd in %s: %w", o.Dir, err)
	}
	select {
	case <-e.Server.ReadyNotify():
		return &Embedded{etcd: e, closing: closing}, nil
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
	e.etcd.Close()
}

// slogCore is a zapcore.Core that writes to slog, so etcd's own logs come out
// in the runner's format and through its sanitizer.
type slogCore struct {
	log   *slog.Logger
	level zapcore.Level
	quiet *atomic.Bool // when set, everything is logged at debug
}

func newSlogCore(log *slog.Logger, level zapcore.Level) zapcore.Core {
	return &slogCore{log: log, level: level, quiet: new(atomic.Bool)}
}

func (c *slogCore) Enabled(l zapcore.Level) bool { return l >= c.level }

func (c *slogCore) With(fields []zapcore.Field) zapcore.Core {
	return &slogCore{log: c.log.With(fieldAttrs(fields)...), level: c.level, quiet: c.quiet}
}

func (c *slogCore) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if c.Enabled(e.Level) {
		return ce.AddCore(e, c)
	}
	return ce
}

// benign lists etcd warnings that are expected for an embedded single-node
// member on loopback and say nothing an operator can act on.
var benign = map[string]bool{
	"Running http and grpc server on single port. This is not recommended for production.": true,
	"simple token is not cryptographically signed":                                         true,
}

func (c *slogCore) Write(e zapcore.Entry, fields []zapcore.Field) error {
	lv := slog.LevelInfo
	switch {
	case e.Level >= zapcore.ErrorLevel:
		lv = slog.LevelError
	case e.Level == zapcore.WarnLevel:
		lv = slog.LevelWarn
	case e.Level <= zapcore.DebugLevel:
		lv = slog.LevelDebug
	}
	if c.quiet.Load() || benign[e.Message] {
		lv = slog.LevelDebug
	}
	c.log.Log(context.Background(), lv, e.Message, fieldAttrs(fields)...)
	return nil
}

func (c *slogCore) Sync() error { return nil }

func fieldAttrs(fields []zapcore.Field) []any {
	enc := zapcore.NewMapObjectEncoder()
	for _, f := range fields {
		f.AddTo(enc)
	}
	out := make([]any, 0, 2*len(enc.Fields))
	for k, v := range enc.Fields {
		out = append(out, k, v)
	}
	return out
}
