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
