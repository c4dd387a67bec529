package config

import (
	"crypto/tls"
	"crypto/x509"

	"github.com/pacerun/pacer/internal/regfile"
)

// fileRef is a key of the file that names another file (a certificate, a
// key), with its line, for CheckFiles.
type fileRef struct {
	file string // the config file's name
	path string // key path, e.g. "http.tls.cert_file"
	line int
	name string // the file's name as written
}

// recordFiles remembers, after validation, the keys that name files, and
// those that name secrets' environment variables.
func (d *decoder) recordFiles(c *Config) {
	for _, k := range []struct{ path, name string }{
		{"http.tls.cert_file", c.HTTP.TLS.CertFile},
		{"http.tls.key_file", c.HTTP.TLS.KeyFile},
		{"http.tls.client_ca_file", c.HTTP.TLS.ClientCAFile},
		{"cluster.etcd.tls.ca_file", c.Cluster.Etcd.TLS.CAFile},
		{"cluster.etcd.tls.cert_file", c.Cluster.Etcd.TLS.CertFile},
		{"cluster.etcd.tls.key_file", c.Cluster.Etcd.TLS.KeyFile},
	} {
		if k.name != "" {
			c.files = append(c.files, fileRef{file: d.file, path: k.path, line: d.lineOf(k.path), name: k.name})
		}
	}
	for _, k := range []struct{ path, name string }{
		{"http.token_env", c.HTTP.TokenEnv},
		{"cluster.etcd.password_env", c.Cluster.Etcd.PasswordEnv},
	} {
		if k.name != "" {
			c.secrets = append(c.secrets, fileRef{file: d.file, path: k.path, line: d.lineOf(k.path), name: k.name})
		}
	}
}

// Settings returns a copy of c without its jobs, its warnings and what
// was noted about the file (lines, name): what a reload compares to tell
// whether anything but the jobs changed.
func (c *Config) Settings() Config {
	s := *c
	s.Jobs, s.Warnings, s.files, s.pluginEntries, s.secrets = nil, nil, nil, nil, nil
	return s
}

// CheckFiles reads the certificates and keys the config names (http.tls,
// cluster.etcd.tls), relative to the working directory as the runner does,
// and reports each that cannot be read or parsed, or a key that does not
// match its certificate, as a *Error at the key's line ("pacer.yaml:12:
// http.tls.cert_file: open /etc/pacer/tls.pem: no such file or directory").
// Parse does not, so that a file can be checked on another machine; pacer
// validate and pacer run do.
func (c *Config) CheckFiles() error {
	var probs []Problem
	add := func(r fileRef, format string, args ...any) {
		probs = append(probs, Problem{File: r.file, Line: r.line, Path: r.path, Msg: message(format, args...)})
	}
	data := make(map[string][]byte)
	for _, r := range c.files {
		b, err := regfile.Read(r.name, regfile.MaxPEMBytes)
		if err != nil {
			add(r, "%v", err)
			continue
		}
		data[r.path] = b
	}
	pair := func(prefix string) {
		cert, ok1 := data[prefix+".cert_file"]
		key, ok2 := data[prefix+".key_file"]
		if !ok1 || !ok2 {
			return
		}
		if _, err := tls.X509KeyPair(cert, key); err != nil {
			for _, r := range c.files {
				if r.path == prefix+".cert_file" {
					add(r, "%s with key_file: %v", r.name, err)
				}
			}
		}
	}
	pair("http.tls")
	pair("cluster.etcd.tls")
	for _, r := range c.files {
		if b, ok := data[r.path]; ok && (r.path == "http.tls.client_ca_file" || r.path == "cluster.etcd.tls.ca_file") {
			if !x509.NewCertPool().AppendCertsFromPEM(b) {
				add(r, "%s holds no PEM certificate", r.name)
			}
		}
	}
	if len(probs) == 0 {
		return nil
	}
	return &Error{Problems: sortProblems(probs)}
}
