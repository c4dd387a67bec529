package main

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/pacerun/pacer/internal/regfile"
	"github.com/pacerun/pacer/sdk"
)

const maxRedirects = 10

// params are the task's params. The SDK derives the schema the runner checks
// jobs against from this struct (see sdk.Typed).
type params struct {
	URL             string            `json:"url" desc:"absolute http or https URL"`
	Method          string            `json:"method" default:"GET" desc:"HTTP method"`
	Headers         map[string]string `json:"headers,omitempty"`
	Body            string            `json:"body,omitempty"`
	ExpectStatus    statusList        `json:"expect_status,omitempty" desc:"status codes or classes such as 2xx; default [2xx]"`
	Timeout         string            `json:"timeout,omitempty" desc:"Go duration bounding the request"`
	FollowRedirects bool              `json:"follow_redirects" default:"true" desc:"follow at most 10 redirects"`
	// At most 1 MiB keeps the result well inside one plugin message (4 MiB);
	// the runner bounds output further anyway.
	MaxResponseBytes int        `json:"max_response_bytes" default:"65536" minimum:"1" maximum:"1048576" desc:"body bytes kept in the output"`
	TLS              *tlsParams `json:"tls,omitempty"`
}

type tlsParams struct {
	CAFile             string `json:"ca_file,omitempty"`
	CertFile           string `json:"cert_file,omitempty"`
	KeyFile            string `json:"key_file,omitempty"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify,omitempty"`
	ServerName         string `json:"server_name,omitempty"`
}

// JSONSchema implements sdk.JSONSchemer: one code or class, or a list of them.
func (statusList) JSONSchema() string {
	return `{"oneOf":[{"type":"integer"},{"type":"string"},{"type":"array","items":{"oneOf":[{"type":"integer"},{"type":"string"}]}}]}`
}

// request is a validated params with the defaults applied.
type request struct {
	url             *url.URL
	method          string
	header          http.Header
	host            string // a "Host" entry of headers, which net/http takes from Request.Host
	body            string
	expect          statusList
	timeout         time.Duration // 0: only the run's deadline
	followRedirects bool
	maxResponse     int
	tls             *tls.Config // nil: net/http's default
}

func invalid(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{sdk.ErrInvalidParams}, args...)...)
}

func (p *params) validate() (*request, error) {
	r := &request{
		method:          p.Method,
		header:          http.Header{},
		body:            p.Body,
		expect:          p.ExpectStatus,
		followRedirects: p.FollowRedirects,
		maxResponse:     p.MaxResponseBytes,
	}

	if p.URL == "" {
		return nil, invalid("url is required, e.g. url: https://example.com/health")
	}
	u, err := url.Parse(p.URL)
	if err != nil {
		// url.Error repeats the whole URL, user-info included: keep only
		// the reason.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return nil, invalid("url: %v", err)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, invalid("url must be an absolute http:// or https:// URL, not %s", displayURL(u))
	}
	if u.Host == "" {
		return nil, invalid("url %s has no host", displayURL(u))
	}
	r.url = u

	if !isToken(r.method) {
		return nil, invalid("method %q is not a valid HTTP method", r.method)
	}

	for k, v := range p.Headers {
		if !isToken(k) {
			return nil, invalid("headers: invalid header name %q", k)
		}
		// Never echo a header's value: it may be a credential.
		if strings.ContainsAny(v, "\r\n\x00") {
			return nil, invalid("headers: value of %q contains a line break or NUL", k)
		}
		ck := http.CanonicalHeaderKey(k)
		if _, dup := r.header[ck]; dup || (ck == "Host" && r.host != "") {
			return nil, invalid("headers: %q is given more than once", ck)
		}
		if ck == "Host" {
			r.host = v
			continue
		}
		r.header.Set(ck, v)
	}

	if r.expect == nil {
		r.expect = statusList{{class: 2}}
	} else if len(r.expect) == 0 {
		return nil, invalid(`expect_status must not be empty; omit it for the default ["2xx"]`)
	}

	if p.Timeout != "" {
		d, err := time.ParseDuration(p.Timeout)
		if err != nil {
			return nil, invalid("timeout: %v (use a Go duration such as 10s)", err)
		}
		if d <= 0 {
			return nil, invalid("timeout must be positive, got %s", p.Timeout)
		}
		r.timeout = d
	}

	if p.TLS != nil {
		if r.tls, err = p.TLS.config(); err != nil {
			return nil, err
		}
	}
	return r, nil
}

// config builds the client TLS configuration. A CA file replaces the system
// roots, like curl's --cacert.
func (t *tlsParams) config() (*tls.Config, error) {
	cfg := &tls.Config{
		MinVersion:         tls.VersionTLS12,
		ServerName:         t.ServerName,
		InsecureSkipVerify: t.InsecureSkipVerify,
	}
	if t.CAFile != "" {
		pem, err := regfile.Read(t.CAFile, regfile.MaxPEMBytes)
		if err != nil {
			return nil, invalid("tls.ca_file: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, invalid("tls.ca_file: %s holds no PEM certificate", t.CAFile)
		}
		cfg.RootCAs = pool
	}
	switch {
	case (t.CertFile == "") != (t.KeyFile == ""):
		return nil, invalid("tls.cert_file and tls.key_file must be given together")
	case t.CertFile != "":
		cert, err := regfile.KeyPair(t.CertFile, t.KeyFile)
		if err != nil {
			return nil, invalid("tls.cert_file/key_file: %v", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

// statusPattern matches one status code (code != 0) or a class such as 2xx.
type statusPattern struct {
	code  int
	class int
}

func (s statusPattern) match(code int) bool {
	if s.code != 0 {
		return code == s.code
	}
	return code/100 == s.class
}

func (s statusPattern) String() string {
	if s.code != 0 {
		return strconv.Itoa(s.code)
	}
	return strconv.Itoa(s.class) + "xx"
}

// statusList accepts a list of codes and classes (200, "404", "2xx"), or
// a single one.
type statusList []statusPattern

func (l *statusList) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if string(b) == "null" {
		return nil
	}
	var items []json.RawMessage
	if len(b) > 0 && b[0] == '[' {
		if err := json.Unmarshal(b, &items); err != nil {
			return errors.New(`expect_status must be a list of status codes or classes, e.g. [200, "3xx"]`)
		}
	} else {
		items = []json.RawMessage{b}
	}
	list := statusList{}
	for _, it := range items {
		s, err := parseStatus(it)
		if err != nil {
			return err
		}
		list = append(list, s)
	}
	*l = list
	return nil
}

func parseStatus(raw json.RawMessage) (statusPattern, error) {
	bad := fmt.Errorf(`expect_status: %s is not a status code (100-599) or a class such as "2xx"`, raw)
	var text string
	if err := json.Unmarshal(raw, &text); err != nil {
		var n json.Number
		if err := json.Unmarshal(raw, &n); err != nil {
			return statusPattern{}, bad
		}
		text = n.String()
	}
	text = strings.ToLower(strings.TrimSpace(text))
	if len(text) == 3 && text[1:] == "xx" && text[0] >= '1' && text[0] <= '5' {
		return statusPattern{class: int(text[0] - '0')}, nil
	}
	code, err := strconv.Atoi(text)
	if err != nil || code < 100 || code > 599 {
		return statusPattern{}, bad
	}
	return statusPattern{code: code}, nil
}

func (l statusList) match(code int) bool {
	for _, s := range l {
		if s.match(code) {
			return true
		}
	}
	return false
}

// String reads "2xx", "200 or 204", "200, 204 or 3xx".
func (l statusList) String() string {
	parts := make([]string, len(l))
	for i, s := range l {
		parts[i] = s.String()
	}
	if len(parts) <= 1 {
		return strings.Join(parts, "")
	}
	return strings.Join(parts[:len(parts)-1], ", ") + " or " + parts[len(parts)-1]
}

// isToken reports whether s is an RFC 9110 token: what methods and header
// names are made of.
func isToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0:
		default:
			return false
		}
	}
	return true
}

// displayURL is u as it may appear in messages and results: without
// user-info or fragment, and with query values masked, since credentials
// often travel there.
func displayURL(u *url.URL) string {
	if u == nil {
		return ""
	}
	c := *u
	c.User = nil
	c.Fragment, c.RawFragment = "", ""
	if c.RawQuery != "" {
		q, err := url.ParseQuery(c.RawQuery)
		if err != nil {
			c.RawQuery = "xxxxx"
		} else {
			for _, vs := range q {
				for i := range vs {
					if vs[i] != "" {
						vs[i] = "xxxxx"
					}
				}
			}
			c.RawQuery = q.Encode()
		}
	}
	return c.String()
}
