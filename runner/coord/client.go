package coord

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"

	"github.com/pacerun/pacer/internal/regfile"
	"github.com/pacerun/pacer/internal/zapslog"
)

// ClientOptions describe how to reach etcd.
type ClientOptions struct {
	Endpoints   []string
	DialTimeout time.Duration
	Username    string
	// PasswordEnv names the environment variable holding the password;
	// PasswordFile, a file holding it.
	PasswordEnv  string
	PasswordFile string
	// CAFile, CertFile and KeyFile configure TLS; CertFile and KeyFile go
	// together.
	CAFile, CertFile, KeyFile string
	Logger                    *slog.Logger
}

// reconnect is how the etcd client's connections come back after etcd was
// unreachable: gRPC's default backoff grows to two minutes, so after an
// outage of a minute or two a replica took up to 70 s after etcd was back
// to reconnect (attack 27, R5), while the docs promise it leads once etcd
// answers. Capped at 2 s: one etcd member gets a few connection attempts a
// second from a whole cluster of replicas at most.
var reconnect = grpc.ConnectParams{
	Backoff:           backoff.Config{BaseDelay: 250 * time.Millisecond, Multiplier: 1.6, Jitter: 0.2, MaxDelay: 2 * time.Second},
	MinConnectTimeout: 5 * time.Second,
}

// ClientLogger is the etcd client's logger: its errors, as the runner's
// lines with component etcd-client.
func ClientLogger(log *slog.Logger) *zap.Logger {
	return zap.New(zapslog.New(log.With("component", "etcd-client"), zapslog.Options{Level: zapcore.ErrorLevel}))
}

// ClientConfig turns o into an etcd client configuration.
func ClientConfig(o ClientOptions) (clientv3.Config, error) {
	cfg := clientv3.Config{
		Endpoints:   o.Endpoints,
		DialTimeout: o.DialTimeout,
		Username:    o.Username,
		// Keepalive on the connection itself, so a dead link is noticed
		// between requests too.
		DialKeepAliveTime:    5 * time.Second,
		DialKeepAliveTimeout: 3 * time.Second,
		DialOptions:          []grpc.DialOption{grpc.WithConnectParams(reconnect)},
	}
	if o.Logger != nil {
		cfg.Logger = ClientLogger(o.Logger)
	}
	if o.PasswordFile != "" {
		pw, err := regfile.Read(o.PasswordFile, regfile.MaxPEMBytes)
		if err != nil {
			return cfg, fmt.Errorf("cluster.etcd.password_file: %w", err)
		}
		cfg.Password = strings.TrimRight(string(pw), "\r\n")
	}
	if o.PasswordEnv != "" {
		pw, ok := os.LookupEnv(o.PasswordEnv)
		if !ok {
			return cfg, fmt.Errorf("cluster.etcd.password_env: environment variable %s is not set", o.PasswordEnv)
		}
		cfg.Password = pw
	}
	if o.CAFile == "" && o.CertFile == "" {
		return cfg, nil
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := regfile.Read(o.CAFile, regfile.MaxPEMBytes)
		if err != nil {
			return cfg, fmt.Errorf("cluster.etcd.tls.ca_file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return cfg, fmt.Errorf("cluster.etcd.tls.ca_file: no PEM certificates in %s", o.CAFile)
		}
		tc.RootCAs = pool
	}
	if o.CertFile != "" {
		cert, err := regfile.KeyPair(o.CertFile, o.KeyFile)
		if err != nil {
			return cfg, fmt.Errorf("cluster.etcd.tls: client certificate: %w", err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	cfg.TLS = tc
	return cfg, nil
}
