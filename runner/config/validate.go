package config

import (
	"encoding/json"
	"fmt"
	"math"
	"net"
	"net/url"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/pacerun/pacer/internal/didyoumean"
	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/schedule"
	"github.com/pacerun/pacer/runner/shard"
)

const maxJobIDLen = 128

var (
	clusterNameRe = regexp.MustCompile(`^[a-z0-9_-]+$`)
	patternNameRe = regexp.MustCompile(`^[a-z0-9_]+$`)
	jobIDRe       = regexp.MustCompile(`^[A-Za-z0-9._-]+$`)
	envNameRe     = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
	inheritEnvRe  = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*\*?$`)
	checksumRe    = regexp.MustCompile(`^sha256:[0-9a-f]{64}$`)
	checksumAnyRe = regexp.MustCompile(`^(?i:sha256):[0-9a-fA-F]{64}$`)
)

// problem reports a semantic problem with the value at path, at the line of
// that value (or of the nearest enclosing value the file sets). Paths whose
// value already failed to decode are skipped: that was reported already.
func (d *decoder) problem(path, format string, args ...any) {
	if d.failedAt(path) {
		return
	}
	d.add(d.lineOf(path), path, format, args...)
}

// warn records a warning about the value at path: valid, but probably not
// what the author meant.
func (d *decoder) warn(path, format string, args ...any) {
	d.warnings = append(d.warnings, Problem{File: d.file, Line: d.lineOf(path), Path: path, Msg: message(format, args...)})
}

// Bounds on a job's retries: a retry storm (a huge count with a tiny
// backoff) is refused when the config is loaded.
const (
	MaxRetries      = 100
	MinRetryBackoff = 100 * time.Millisecond
)

// Bounds on values far outside what their keys are for (attack 23, U8 and
// U10).
const (
	// minHistoryMaxAge: records older than history.max_age are removed,
	// so a tiny one empties the history at once.
	minHistoryMaxAge = time.Minute
	// maxEtcdTimeout bounds cluster.etcd.dial_timeout and
	// request_timeout: an etcd request that takes longer is an outage, and
	// the API keeps trying for twice request_timeout.
	maxEtcdTimeout = time.Minute
	// minEtcdTimeout is the least of them: no etcd round trip fits in
	// less (attack 24, V5).
	minEtcdTimeout = 100 * time.Millisecond
	// maxJobTimeout bounds a job's timeout: a week.
	maxJobTimeout = 168 * time.Hour
	// maxJobConcurrency bounds a job's max_concurrency, as
	// plugins.max_concurrency is bounded.
	maxJobConcurrency = 10000
)

// validate checks c, whose defaults have been applied, and fills in the
// derived Job fields (Location, Sched).
func (d *decoder) validate(c *Config) {
	san := logSanitizer(&c.Observability.Sanitize)
	d.validateNode(&c.Node, san)
	d.validateCluster(&c.Cluster)
	d.validateHTTP(c)
	d.validatePlugins(&c.Plugins)
	d.validateHistory(&c.History)
	d.validateShutdown(&c.Shutdown)
	d.validateTriggers(&c.Triggers)
	d.validateObservability(&c.Observability)
	d.validateJobs(c.Jobs, san)
	d.validateInheritEnv(c)
	d.validateParams(c.Jobs)
}

// validateParams checks that every job's params can travel to its task:
// a run sends them as a protobuf Struct (JSON's values; pluginhost
// converts them, and only it speaks the wire protocol), whatever the
// task's schema, so a value YAML reads as something else (an unquoted date
// is a timestamp, a !!binary node bytes that may not be text) would
// fail every run with "invalid params" (attack 17, K6). A task without a
// schema is not checked by its plugin, so it is checked here, for all.
func (d *decoder) validateParams(jobs []Job) {
	// A number travels as a double: an integer beyond ±2^53 would reach
	// the task as another one (9007199254740993 as ...992), with success
	// (attack 18, R7).
	// So would one past 64 bits, which YAML reads as a float (or, written
	// in hex, octal or binary, as a string): anyValue noted those in
	// d.bigInts (attack 19, P1: 100000000000000000000 failed every run of
	// a Go task, and a Python task got another integer).
	exact := func(path string, beyond bool, v any) {
		if beyond {
			d.problem(path, "%v is too large to pass as a number exactly (params carry numbers as doubles: beyond ±2^53 they are rounded); quote it to pass it as text", v)
		}
	}
	// A map or list nested deeper than MaxParamsDepth would pass here and
	// be refused by the Python SDK's protobuf decoder (its recursion limit
	// of 100 messages: three per level), which breaks the plugin's run
	// stream for every run on it (attack 18, R8).
	var walk func(path string, v any, depth int)
	walk = func(path string, v any, depth int) {
		switch v.(type) {
		case map[string]any, []any:
			if depth++; depth > MaxParamsDepth {
				d.problem(path, "nested more than %d levels deep, which plugins cannot decode; flatten it", MaxParamsDepth)
				return
			}
		}
		switch v := v.(type) {
		case nil, bool:
		case float64:
			// JSON has no infinity or NaN; and as NaN != NaN, every
			// reload saw a job with one as changed, which stopped its
			// pending retries (attack 19, P1).
			switch {
			case math.IsNaN(v):
				d.problem(path, "YAML reads this as NaN (not a number), which params (JSON's values) cannot carry; quote it to pass it as text")
			case math.IsInf(v, 0):
				d.problem(path, "YAML reads this as infinity, which params (JSON's values) cannot carry; quote it to pass it as text")
			}
			lit, big := d.bigInts[path]
			exact(path, big, lit)
		case int:
			exact(path, v > 1<<53 || v < -1<<53, v)
		case int64:
			exact(path, v > 1<<53 || v < -1<<53, v)
		case uint64:
			exact(path, v > 1<<53, v)
		case string:
			if lit, big := d.bigInts[path]; big {
				exact(path, big, lit)
			} else if !utf8.ValidString(v) {
				d.problem(path, "is not UTF-8 text (a !!binary value?), which params cannot carry")
			}
		case map[string]any:
			for k, e := range v {
				walk(joinPath(path, k), e, depth)
			}
		case []any:
			for i, e := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), e, depth)
			}
		case time.Time:
			d.problem(path, "YAML reads this as a timestamp, which params cannot carry; quote it to pass it as text: %q", v.Format(time.RFC3339Nano))
		default: // what YAML decodes is one of the above, or a timestamp
			d.problem(path, "a value of Go type %T, which params cannot carry", v)
		}
	}
	for i := range jobs {
		p := fmt.Sprintf("jobs[%d]", i)
		if d.failedAt(p) {
			continue
		}
		walk(p+".params", map[string]any(jobs[i].Params), 0)
		// A run's request must fit in one 4 MiB message (attack 18, R9:
		// every run of a job with 5 MB of params failed at once).
		if b, err := json.Marshal(jobs[i].Params); err == nil && len(b) > MaxParamsBytes {
			d.problem(p+".params", "%d bytes as JSON; at most %d, so that a run's request fits in one message: pass large data by reference (a file, a URL)", len(b), MaxParamsBytes)
		}
	}
}

// Bounds on a job's params, so that every run's request can be sent and
// decoded by the SDKs.
const (
	MaxParamsDepth = 30
	MaxParamsBytes = 1 << 20
)

// maxNodeNameLen bounds node.name, which every log line carries: a host
// name is at most 64 bytes on Linux, 253 in DNS.
const maxNodeNameLen = 128

// validateNode checks node.name as job ids are checked, for the same
// reasons: it names the replica in every log line (log.With("node")), in
// metric labels (pacer_leader{node}), in its etcd member key
// (/pacer/<cluster>/members/<node>, where a "/" would nest it under another
// replica's) and as the embedded etcd's member name (where "," or "=" break
// its initial-cluster string). A name the log sanitizer would mask
// ("10.0.0.5" logged as "[ipv4]") would make the log name another replica
// than the metrics and `pacer status`. When node.name is not set it is the
// host name, and the message says to set node.name if that does not pass.
func (d *decoder) validateNode(n *Node, san *observability.Sanitizer) {
	var msg string
	switch {
	case n.Name == "":
		d.problem("node.name", "not set, and the host name could not be determined; set node.name")
		return
	case len(n.Name) > maxNodeNameLen:
		msg = fmt.Sprintf("node name is %d characters long; the limit is %d", len(n.Name), maxNodeNameLen)
	case !jobIDRe.MatchString(n.Name) || n.Name == "." || n.Name == "..":
		msg = fmt.Sprintf(`invalid node name %q: use only letters, digits, ".", "_" and "-" (it is part of the replica's etcd keys)`, n.Name)
	case masked("node name", n.Name, san) != "":
		msg = masked("node name", n.Name, san)
	default:
		return
	}
	if !d.isSet("node.name") {
		msg = "not set, so it is the host name, which cannot be used: " + msg + `; set node.name to a name for this replica, unique in the cluster, such as "web-1"`
	}
	d.problem("node.name", "%s", msg)
}

// maxLeaseTTL bounds cluster.lease_ttl: a replica killed with SIGKILL (or
// cut off) leaves its shards unled until its lease expires.
const maxLeaseTTL = 5 * time.Minute

func (d *decoder) validateCluster(c *Cluster) {
	if !clusterNameRe.MatchString(c.Name) {
		d.problem("cluster.name", `invalid cluster name %q: use only lowercase letters, digits, "-" and "_"`, c.Name)
	}
	switch {
	case c.LeaseTTL < 2*time.Second:
		d.problem("cluster.lease_ttl", "%s is too short: must be at least 2s", c.LeaseTTL)
	case c.LeaseTTL > maxLeaseTTL:
		d.problem("cluster.lease_ttl", "%s is too long: at most %s (the shards of a replica that crashes stay unled for up to a lease TTL)", c.LeaseTTL, maxLeaseTTL)
	case c.LeaseTTL%time.Second != 0:
		d.problem("cluster.lease_ttl", "%s is not a whole number of seconds (etcd leases are in seconds); use e.g. %q",
			c.LeaseTTL, c.LeaseTTL.Round(time.Second).String())
	}
	if c.Shards < 1 || c.Shards > shard.Max {
		d.problem("cluster.shards", "%d shards: must be from 1 to %d", c.Shards, shard.Max)
	}
	switch {
	case c.ShardSettle < 0:
		d.problem("cluster.shard_settle", "%s is negative", c.ShardSettle)
	case c.ShardSettle > time.Hour:
		d.problem("cluster.shard_settle", "%s is too long: at most 1h", c.ShardSettle)
	}

	d.oneOf("cluster.job_set_mismatch", "job set mismatch policy", c.JobSetMismatch, "refuse", "warn")
	if d.positive("cluster.job_set_settle", c.JobSetSettle) && c.JobSetSettle > time.Hour {
		d.problem("cluster.job_set_settle", "%s is too long: at most 1h (a replica would keep running jobs the cluster no longer agrees on that long)", c.JobSetSettle)
	}

	e := &c.Etcd
	first := make(map[string]int)
	for i, ep := range e.Endpoints {
		p := fmt.Sprintf("cluster.etcd.endpoints[%d]", i)
		if msg := checkEndpoint(ep); msg != "" {
			d.problem(p, "%s", msg)
			continue
		}
		if j, dup := first[ep]; dup {
			d.problem(p, "duplicate endpoint %q (also endpoints[%d])", ep, j)
			continue
		}
		first[ep] = i
		if u, err := url.Parse(ep); err == nil && u.User != nil {
			// Not quoted: the endpoint holds the password.
			d.warn(p, "the endpoint holds a user name and password (user@ or user:password@ before the host), which the etcd client "+
				"does not send: it dials the host alone; set cluster.etcd.username and cluster.etcd.password_env (or password_file) "+
				"for etcd's authentication, and take them out of the endpoint")
		}
	}
	switch {
	case !d.positive("cluster.etcd.dial_timeout", e.DialTimeout):
	case e.DialTimeout > maxEtcdTimeout:
		d.problem("cluster.etcd.dial_timeout", "%s is too long: at most 1m (how long the etcd client waits to connect at start)", e.DialTimeout)
	case e.DialTimeout < minEtcdTimeout:
		d.problem("cluster.etcd.dial_timeout", "%s is too short: at least 100ms (no connection to etcd is made in less)", e.DialTimeout)
	}
	switch {
	case !d.positive("cluster.etcd.request_timeout", e.RequestTimeout):
	case e.RequestTimeout > maxEtcdTimeout:
		d.problem("cluster.etcd.request_timeout", "%s is too long: at most 1m (each etcd request waits this long, "+
			"and the API keeps trying for twice it)", e.RequestTimeout)
	case e.RequestTimeout < minEtcdTimeout:
		// Attack 24, V5: 1ns started a replica that never got a lease.
		d.problem("cluster.etcd.request_timeout", "%s is too short: at least 100ms (no etcd request completes in less, "+
			"and the replica would never get its lease)", e.RequestTimeout)
	}
	d.envName("cluster.etcd.password_env", e.PasswordEnv)
	switch {
	case e.PasswordEnv != "" && e.PasswordFile != "":
		d.problem("cluster.etcd.password_file", "set password_env or password_file, not both")
	case (e.PasswordEnv != "" || e.PasswordFile != "") && e.Username == "":
		d.problem("cluster.etcd.password_env", "a password is set but username is not; etcd authentication needs both")
	case e.Username != "" && e.PasswordEnv == "" && e.PasswordFile == "":
		d.problem("cluster.etcd.username", "username is set but password_env is not; etcd authentication needs both (or use password_file)")
	}
	switch {
	case e.TLS.CertFile != "" && e.TLS.KeyFile == "":
		d.problem("cluster.etcd.tls.key_file", "cert_file is set but key_file is not; set both or neither")
	case e.TLS.KeyFile != "" && e.TLS.CertFile == "":
		d.problem("cluster.etcd.tls.cert_file", "key_file is set but cert_file is not; set both or neither")
	}
	if e.CompactionInterval != 0 && e.CompactionInterval < time.Second {
		d.problem("cluster.etcd.compaction_interval", "%s: must be 0 (Pacer does not compact etcd) or at least 1s", e.CompactionInterval)
	}
	d.validateEmbedded(c)
}

// validateEmbedded checks the embedded etcd's settings and resolves its
// addresses: cluster.embedded.{client_url,peer_url}, or the older
// cluster.etcd.embedded.{client_listen,peer_listen}, not both.
func (d *decoder) validateEmbedded(c *Cluster) {
	emb, old := &c.Embedded, &c.Etcd.Embedded
	d.listenAddr("cluster.etcd.embedded.client_listen", old.ClientListen)
	d.listenAddr("cluster.etcd.embedded.peer_listen", old.PeerListen)
	for _, a := range []struct {
		url, key      *string
		newKey, oldKy string
		listen        string
		open          string // what anyone who reaches it could do
	}{
		{&emb.ClientURL, &emb.ClientKey, "cluster.embedded.client_url", "cluster.etcd.embedded.client_listen", old.ClientListen,
			"the embedded etcd has no authentication, so anyone who reaches it could read and write Pacer's keys " +
				"(queue triggers, pause jobs, forge run records)"},
		{&emb.PeerURL, &emb.PeerKey, "cluster.embedded.peer_url", "cluster.etcd.embedded.peer_listen", old.PeerListen,
			"the embedded etcd's peer port has no authentication, so anyone who reaches it could talk to it as an etcd member"},
	} {
		switch newSet, oldSet := d.isSet(a.newKey), d.isSet(a.oldKy); {
		case newSet && oldSet && hostPort(*a.url) != a.listen:
			d.problem(a.newKey, "%q and %s %q differ: set one of them (%s is the older key)", *a.url, a.oldKy, a.listen, a.oldKy)
			continue
		case oldSet && !newSet:
			*a.url, *a.key = "http://"+a.listen, a.oldKy
			if checkHostPort(a.listen, true) != "" {
				continue // reported above
			}
		default:
			*a.key = a.newKey
		}
		if msg := checkEmbeddedURL(*a.url); msg != "" {
			d.problem(*a.key, "%s", msg)
			continue
		}
		// As http.listen without a token (attack 23, U9); with endpoints
		// set the embedded etcd does not start.
		if hp := hostPort(*a.url); len(c.Etcd.Endpoints) == 0 && !emb.InsecureNoAuth && !loopbackListen(hp) {
			d.problem(*a.key, "%q can be reached from other machines, and %s; keep it on a loopback address, use an external "+
				"etcd with authentication (cluster.etcd.endpoints, with username and password_env or client certificates), "+
				"or set cluster.embedded.insecure_no_auth: true to expose it on purpose", hp, a.open)
		}
	}
	if hostPort(emb.ClientURL) == hostPort(emb.PeerURL) {
		d.problem(emb.PeerKey, "the embedded etcd's client and peer addresses are both %q; they must differ", hostPort(emb.PeerURL))
	}
	if emb.QuotaBytes < 16<<20 || emb.QuotaBytes > 64<<30 {
		d.problem("cluster.embedded.quota_bytes", "%d: must be between 16 MiB (16777216) and 64 GiB (68719476736); etcd's default is 2 GiB", emb.QuotaBytes)
	}
}

// checkEmbeddedURL returns a problem message, or "" if u is an http URL
// with a host and a port, and nothing else.
func checkEmbeddedURL(u string) string {
	p, err := url.Parse(u)
	switch {
	case err != nil:
		return fmt.Sprintf("invalid URL %q: %v", u, err)
	case p.Scheme != "http":
		return fmt.Sprintf(`invalid URL %q: the embedded etcd serves plain http (keep it on a loopback address); want "http://host:port"`, u)
	case p.Path != "" && p.Path != "/", p.RawQuery != "", p.User != nil:
		return fmt.Sprintf(`invalid URL %q: want only "http://host:port"`, u)
	}
	if msg := checkHostPort(p.Host, false); msg != "" {
		return msg
	}
	return ""
}

// hostPort is the host:port of an http URL ("" if it has none).
func hostPort(u string) string {
	p, err := url.Parse(u)
	if err != nil {
		return ""
	}
	return p.Host
}

func (d *decoder) validateHTTP(c *Config) {
	h := &c.HTTP
	d.listenAddr("http.listen", h.Listen)
	if len(c.Cluster.Etcd.Endpoints) == 0 {
		emb := c.Cluster.Embedded
		switch h.Listen {
		case hostPort(emb.ClientURL):
			d.problem("http.listen", "%q is also the embedded etcd's client address (%s); they must differ", h.Listen, emb.ClientKey)
		case hostPort(emb.PeerURL):
			d.problem("http.listen", "%q is also the embedded etcd's peer address (%s); they must differ", h.Listen, emb.PeerKey)
		}
	}
	if h.ProbeListen != "" {
		d.listenAddr("http.probe_listen", h.ProbeListen)
		switch {
		case sameListener(h.ProbeListen, h.Listen):
			d.problem("http.probe_listen", "%q is also http.listen's port (%q); give the probes a port of their own", h.ProbeListen, h.Listen)
		case len(c.Cluster.Etcd.Endpoints) == 0 && sameListener(h.ProbeListen, hostPort(c.Cluster.Embedded.ClientURL)):
			d.problem("http.probe_listen", "%q is also the embedded etcd's client address (%s); they must differ", h.ProbeListen, c.Cluster.Embedded.ClientKey)
		case len(c.Cluster.Etcd.Endpoints) == 0 && sameListener(h.ProbeListen, hostPort(c.Cluster.Embedded.PeerURL)):
			d.problem("http.probe_listen", "%q is also the embedded etcd's peer address (%s); they must differ", h.ProbeListen, c.Cluster.Embedded.PeerKey)
		}
	}
	d.envName("http.token_env", h.TokenEnv)
	t := &h.TLS
	switch {
	case t.CertFile != "" && t.KeyFile == "":
		d.problem("http.tls.key_file", "cert_file is set but key_file is not; set both or neither")
	case t.KeyFile != "" && t.CertFile == "":
		d.problem("http.tls.cert_file", "key_file is set but cert_file is not; set both or neither")
	case t.ClientCAFile != "" && t.CertFile == "":
		d.problem("http.tls.client_ca_file", "client certificates need HTTPS: set cert_file and key_file too")
	}
	if h.MaxConnections < 1 || h.MaxConnections > 1_000_000 {
		d.problem("http.max_connections", "must be between 1 and 1000000, got %d", h.MaxConnections)
	}
	switch r := h.RateLimit; {
	case !(r.PerSecond >= 0 && r.PerSecond <= 1e6):
		d.problem("http.rate_limit.per_second", "%v is out of range: must be between 0 (no limit) and 1000000", r.PerSecond)
	case r.PerSecond > 0 && r.Burst < 1:
		d.problem("http.rate_limit.burst", "must be at least 1, got %d", r.Burst)
	}
	open := h.TokenEnv == "" && t.ClientCAFile == ""
	if h.AuthAll && open {
		// Asked for authenticated reads, and there is nothing to
		// authenticate with: every call would stay open (attack 23, U1).
		d.problem("http.auth_all", "requires a token on every call, but the API has none: set http.token_env to the name of an "+
			"environment variable holding one (or require client certificates with http.tls.client_ca_file), or remove auth_all")
	}
	if open && !h.InsecureNoAuth && checkHostPort(h.Listen, true) == "" && !loopbackListen(h.Listen) {
		d.problem("http.listen", "%q can be reached from other machines, and the API has no token, so anyone who reaches it could pause, "+
			"resume and trigger jobs; set http.token_env to the name of an environment variable holding a token (or require client "+
			"certificates with http.tls.client_ca_file), or set http.insecure_no_auth: true to run it open on purpose", h.Listen)
	}
}

// sameListener reports whether two listen addresses use the same port
// number (however written: "027030" is 27030), whatever their hosts:
// "localhost", 127.0.0.1 and every interface overlap, and a second port
// for the probes is what the setting is for. Port 0 (any free port) never
// collides.
func sameListener(a, b string) bool {
	_, pa, errA := net.SplitHostPort(a)
	_, pb, errB := net.SplitHostPort(b)
	na, errA2 := strconv.ParseUint(pa, 10, 16)
	nb, errB2 := strconv.ParseUint(pb, 10, 16)
	return errA == nil && errB == nil && errA2 == nil && errB2 == nil && na == nb && na != 0
}

// loopbackListen reports whether a listen address accepts connections from
// this machine only: a loopback IP or "localhost". An empty host means every
// interface.
func loopbackListen(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// validateInheritEnv checks the allowlists of runner variables passed to
// plugin processes (plugins.inherit_env) and to tasks (a job's
// params.inherit_env, which it also copies to Job.InheritEnv): each entry is
// a variable name or a prefix followed by "*", and none names the variable
// holding the API token or the etcd password, which are never passed.
func (d *decoder) validateInheritEnv(c *Config) {
	secret := map[string]string{}
	if v := c.HTTP.TokenEnv; v != "" {
		secret[v] = "the API token (http.token_env)"
	}
	if v := c.Cluster.Etcd.PasswordEnv; v != "" {
		secret[v] = "the etcd password (cluster.etcd.password_env)"
	}
	check := func(path string, list []string) {
		for i, e := range list {
			p := fmt.Sprintf("%s[%d]", path, i)
			switch {
			case e == "*":
				d.problem(p, `"*" would pass the runner's whole environment: list the variables (NAME) or prefixes (NAME_*) needed`)
			case !inheritEnvRe.MatchString(e):
				d.problem(p, "invalid entry %q (want a variable name, NAME, or a prefix followed by *, NAME_*)", e)
			case secret[e] != "":
				d.problem(p, "%s holds %s, which is never passed to plugins or tasks; remove it", e, secret[e])
			}
		}
	}
	check("plugins.inherit_env", c.Plugins.InheritEnv)
	for i := range c.Jobs {
		j := &c.Jobs[i]
		raw, ok := j.Params["inherit_env"].([]any)
		if !ok {
			continue // absent, or not a list: the plugin's schema judges it
		}
		list := make([]string, 0, len(raw))
		for _, v := range raw {
			if s, ok := v.(string); ok {
				list = append(list, s)
			}
		}
		if len(list) != len(raw) {
			continue
		}
		check(fmt.Sprintf("jobs[%d].params.inherit_env", i), list)
		j.InheritEnv = list
	}
}

func (d *decoder) validateHistory(h *History) {
	if h.Keep < 1 || h.Keep > 100000 {
		d.problem("history.keep", "must be between 1 and 100000, got %d", h.Keep)
	}
	if d.positive("history.max_age", h.MaxAge) && h.MaxAge < minHistoryMaxAge {
		d.problem("history.max_age", "%s is too short: at least 1m (records older than it are removed, so the history would "+
			"empty at once); to keep fewer records, lower history.keep", h.MaxAge)
	}
}

// maxDrainTimeout bounds shutdown.drain_timeout: a rollout waits this long
// per replica.
const maxDrainTimeout = 24 * time.Hour

func (d *decoder) validateShutdown(s *Shutdown) {
	if s.DrainTimeout > maxDrainTimeout {
		d.problem("shutdown.drain_timeout", "%s is too long: at most %s", s.DrainTimeout, maxDrainTimeout)
		return
	}
	d.positive("shutdown.drain_timeout", s.DrainTimeout)
}

func (d *decoder) validateTriggers(t *Triggers) {
	switch {
	case t.ExpireAfter <= 0:
		d.problem("triggers.expire_after", "%s: must be greater than 0", t.ExpireAfter)
	case t.ExpireAfter > 7*24*time.Hour:
		d.problem("triggers.expire_after", "%s is longer than 168h: a request that old is no longer \"now\"", t.ExpireAfter)
	}
	if t.MaxPendingPerJob < 1 || t.MaxPendingPerJob > 10000 {
		d.problem("triggers.max_pending_per_job", "must be between 1 and 10000, got %d", t.MaxPendingPerJob)
	}
	switch {
	case t.MaxPending < 1 || t.MaxPending > 100000:
		d.problem("triggers.max_pending", "must be between 1 and 100000, got %d", t.MaxPending)
	case t.MaxPending < t.MaxPendingPerJob:
		d.problem("triggers.max_pending", "%d is below max_pending_per_job (%d); the total bound must be at least the per-job one",
			t.MaxPending, t.MaxPendingPerJob)
	}
}

// maxCancelGrace bounds plugins.cancel_grace: a stop waits this long for
// cancelled runs after the drain, and so does a replaced run.
const maxCancelGrace = 24 * time.Hour

// treeGrace is the time the SDKs give a cancelled command's process tree
// between SIGTERM and SIGKILL (sdk/proctree DefaultGrace, the Python SDK's
// ctx.run): a plugins.cancel_grace not above it kills the plugin, and
// fails its other runs, whenever a command ignores SIGTERM.
const treeGrace = 2 * time.Second

func (d *decoder) validatePlugins(p *Plugins) {
	d.positive("plugins.start_timeout", p.StartTimeout)
	if p.CancelGrace > maxCancelGrace {
		d.problem("plugins.cancel_grace", "%s is too long: at most %s", p.CancelGrace, maxCancelGrace)
	} else {
		d.positive("plugins.cancel_grace", p.CancelGrace)
	}
	if p.CancelGrace > 0 && p.CancelGrace <= treeGrace+time.Second {
		d.warn("plugins.cancel_grace", "%s leaves a cancelled command no room: the shell plugin's and the SDKs' commands get SIGTERM, "+
			"then SIGKILL %s later, and a plugin whose task has not returned within cancel_grace is killed, failing its other runs "+
			"and counting toward its quarantine; use more than %s (the default is %s)",
			p.CancelGrace, treeGrace, treeGrace+time.Second, defaultPluginCancelGrace)
	}
	if p.MaxConcurrency < 1 || p.MaxConcurrency > 10000 {
		d.problem("plugins.max_concurrency", "must be between 1 and 10000, got %d", p.MaxConcurrency)
	}
	for _, name := range sortedKeys(p.Checksums) {
		path := joinPath("plugins.checksums", name)
		sum := p.Checksums[name]
		switch {
		case name == "":
			d.problem(path, "plugin name must not be empty")
		case checksumRe.MatchString(sum):
		case checksumAnyRe.MatchString(sum):
			d.problem(path, "invalid checksum %q: write it in lowercase, as %q", sum, strings.ToLower(sum))
		default:
			d.problem(path, `invalid checksum %q: want "sha256:" followed by 64 lowercase hex digits, as printed by sha256sum`, sum)
		}
	}
	for _, name := range sortedKeys(p.Paths) {
		path := joinPath("plugins.paths", name)
		switch {
		case name == "":
			d.problem(path, "plugin name must not be empty")
		case p.Paths[name] == "":
			d.problem(path, "must not be empty")
		}
	}
}

// checkTraceHeader says what is wrong with a header an OTLP export sends,
// or "": an exporter refuses every export with a bad one, and says so only
// in a WARN line every 30 s. The name must be an HTTP token (over gRPC,
// letters, digits, "-", "_" and "."; gRPC lowercases it); the value may
// hold no control character (over gRPC, only printable ASCII). The value,
// often an API key, is never quoted.
func checkTraceHeader(protocol, name, value string) string {
	grpc := protocol != "http"
	if name == "" {
		return "header name must not be empty"
	}
	for i := 0; i < len(name); i++ {
		c := name[i]
		alnum := c >= '0' && c <= '9' || c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z'
		if grpc && !(alnum || c == '-' || c == '_' || c == '.') {
			return fmt.Sprintf("invalid header name %q: over gRPC (protocol: grpc) a name may hold only letters, digits, \"-\", \"_\" and \".\"", name)
		}
		if !grpc && !(alnum || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return fmt.Sprintf("invalid header name %q: an HTTP header name may hold only letters, digits and !#$%%&'*+-.^_`|~", name)
		}
	}
	if grpc && strings.HasPrefix(strings.ToLower(name), "grpc-") {
		return fmt.Sprintf("invalid header name %q: names starting \"grpc-\" are gRPC's own", name)
	}
	for i := 0; i < len(value); i++ {
		c := value[i]
		if grpc && (c < 0x20 || c > 0x7e) {
			return "the value (not shown) holds a control character or a non-ASCII byte, which gRPC metadata cannot carry; only printable ASCII"
		}
		if !grpc && (c < 0x20 && c != '\t' || c == 0x7f) {
			return "the value (not shown) holds a control character (a line break?), which an HTTP header cannot carry"
		}
	}
	return ""
}

func (d *decoder) validateObservability(o *Observability) {
	d.oneOf("observability.log.level", "log level", o.Log.Level, "debug", "info", "warn", "error")
	d.oneOf("observability.log.format", "log format", o.Log.Format, "json", "text")
	if q := o.Log.QueueBytes; q < 64<<10 || q > 1<<30 {
		d.problem("observability.log.queue_bytes", "%d: must be between 64 KiB (65536) and 1 GiB (1073741824); the default is 8 MiB", q)
	}
	t := &o.Tracing
	d.oneOf("observability.tracing.exporter", "exporter", t.Exporter, "none", "stdout", "otlp")
	d.oneOf("observability.tracing.protocol", "OTLP protocol", t.Protocol, "grpc", "http")
	if t.Exporter == "otlp" && t.Endpoint != "" {
		if msg := checkHostPort(t.Endpoint, false); msg != "" {
			d.problem("observability.tracing.endpoint", "%s", msg)
		}
	}
	if r := *t.SampleRatio; !(r >= 0 && r <= 1) {
		d.problem("observability.tracing.sample_ratio", "%v is out of range: must be between 0 and 1", r)
	}
	for _, name := range sortedKeys(t.Headers) {
		if msg := checkTraceHeader(t.Protocol, name, t.Headers[name]); msg != "" {
			d.problem(joinPath("observability.tracing.headers", name), "%s", msg)
		}
	}

	s := &o.Sanitize
	for i, k := range s.RedactKeys {
		if k == "" {
			d.problem(fmt.Sprintf("observability.sanitize.redact_keys[%d]", i), "must not be empty")
		}
	}
	names := make(map[string]string)
	for i, pat := range s.Patterns {
		p := fmt.Sprintf("observability.sanitize.patterns[%d]", i)
		if d.required(p+".name", "name", pat.Name) {
			if !patternNameRe.MatchString(pat.Name) {
				d.problem(p+".name", `invalid pattern name %q: use only lowercase letters, digits and "_"`, pat.Name)
			} else if first, dup := names[pat.Name]; dup {
				d.problem(p+".name", "duplicate pattern name %q (first defined at line %d)", pat.Name, d.lineOf(first))
			} else {
				names[pat.Name] = p + ".name"
			}
		}
		if d.required(p+".regex", "regex", pat.Regex) {
			if re, err := regexp.Compile(pat.Regex); err != nil {
				d.problem(p+".regex", "does not compile: %v", err)
			} else if re.MatchString("") {
				// The sanitizer refuses it (it would put a mark between
				// every two characters): say so here, at its line, not
				// when the runner is built (attack 16, G8).
				d.problem(p+".regex", "%q matches the empty string; make it match at least one character", pat.Regex)
			}
		}
	}
}

// logSanitizer is the sanitizer the runner's log lines will pass, built
// from o; the built-in one if o does not build (its problems are reported).
func logSanitizer(o *Sanitize) *observability.Sanitizer {
	opts := observability.SanitizerOptions{RedactKeys: o.RedactKeys}
	for _, p := range o.Patterns {
		opts.Patterns = append(opts.Patterns, observability.Pattern{Name: p.Name, Regex: p.Regex})
	}
	if s, err := observability.NewSanitizer(opts); err == nil {
		return s
	}
	return observability.DefaultSanitizer()
}

// masked is the problem with a job's id, plugin or task that the log
// sanitizer would change: its log lines would carry another name than its
// metrics, runs and API answers, and could not be joined to them (an ID
// "sync-10.0.0.5" logged as "sync-[ipv4]"). Such a name is refused, as a
// correlation ID is, rather than logged changed. "" if san leaves it.
func masked(what, name string, san *observability.Sanitizer) string {
	if out := san.String(name); out != name {
		// (The name itself is masked in the message too: the line says
		// which it is.)
		return fmt.Sprintf("the %s would read %q in every log line, not as in metrics and runs (the sanitizer masks addresses, card and "+
			"phone numbers, tokens, IBANs and observability.sanitize patterns); choose a %s without one", what, out, what)
	}
	return ""
}

func (d *decoder) validateJobs(jobs []Job, san *observability.Sanitizer) {
	ids := make(map[string]string) // id -> path of its first definition
	for i := range jobs {
		j := &jobs[i]
		p := fmt.Sprintf("jobs[%d]", i)
		if d.failedAt(p) {
			continue
		}
		if d.required(p+".id", "id", j.ID) {
			switch {
			case len(j.ID) > maxJobIDLen:
				d.problem(p+".id", "job id is %d characters long; the limit is %d", len(j.ID), maxJobIDLen)
			case !jobIDRe.MatchString(j.ID) || j.ID == "." || j.ID == "..":
				d.problem(p+".id", `invalid job id %q: use only letters, digits, ".", "_" and "-"`, j.ID)
			case masked("job id", j.ID, san) != "":
				d.problem(p+".id", "%s", masked("job id", j.ID, san))
			}
			if first, dup := ids[j.ID]; dup {
				d.problem(p+".id", "duplicate job id %q (first defined at line %d)", j.ID, d.lineOf(first))
			} else {
				ids[j.ID] = p + ".id"
			}
		}
		if d.required(p+".plugin", "plugin", j.Plugin) {
			if m := masked("plugin", j.Plugin, san); m != "" {
				d.problem(p+".plugin", "%s", m)
			}
		}
		if d.required(p+".task", "task", j.Task) {
			if m := masked("task", j.Task, san); m != "" {
				d.problem(p+".task", "%s", m)
			}
		}

		loc := time.UTC
		switch {
		case j.Timezone == "Local":
			d.problem(p+".timezone", `"Local" is each host's own time zone, so replicas could disagree; use an IANA name such as "Europe/Berlin"`)
		case hostZone(j.Timezone) != "":
			d.problem(p+".timezone", "%s", hostZone(j.Timezone))
		default:
			l, err := time.LoadLocation(j.Timezone)
			if err != nil {
				d.problem(p+".timezone", `unknown time zone %q: use an IANA name such as "Europe/Berlin" or "UTC"`, j.Timezone)
			} else {
				loc = l
				j.Location = l
			}
		}
		if d.required(p+".schedule", "schedule", j.Schedule) {
			s, err := schedule.Parse(j.Schedule, loc)
			switch {
			case err != nil:
				d.problem(p+".schedule", "%v", err)
			case schedule.NeverFires(s):
				d.warn(p+".schedule", "%q can never fire: no date matches it; the job is listed with next: never", j.Schedule)
				j.Sched = s
			default:
				j.Sched = s
			}
		}

		if d.positive(p+".timeout", j.Timeout) && j.Timeout > maxJobTimeout {
			d.problem(p+".timeout", "%s is too long: at most 168h (a week); split longer work into shorter runs", j.Timeout)
		}
		switch {
		case j.Retries.Max < 0:
			d.problem(p+".retries.max", "%d is negative; use 0 for no retries", j.Retries.Max)
		case j.Retries.Max > MaxRetries:
			d.problem(p+".retries.max", "%d retries is more than the limit of %d; a slot that fails that often needs a fix, not more attempts", j.Retries.Max, MaxRetries)
		}
		if d.isSet(p+".retries.initial_backoff") && j.Retries.InitialBackoff > 0 && j.Retries.InitialBackoff < MinRetryBackoff {
			d.problem(p+".retries.initial_backoff", "%s is below the minimum of %s", j.Retries.InitialBackoff, MinRetryBackoff)
		} else if d.positive(p+".retries.initial_backoff", j.Retries.InitialBackoff) && j.Retries.MaxBackoff < j.Retries.InitialBackoff {
			if d.isSet(p + ".retries.max_backoff") {
				d.problem(p+".retries.max_backoff", "%s is less than initial_backoff (%s)", j.Retries.MaxBackoff, j.Retries.InitialBackoff)
			} else {
				d.problem(p+".retries.initial_backoff", "%s is more than max_backoff (%s by default); raise max_backoff too",
					j.Retries.InitialBackoff, j.Retries.MaxBackoff)
			}
		}
		d.oneOf(p+".overlap", "overlap policy", j.Overlap, "forbid", "allow", "replace")
		d.oneOf(p+".delivery", "delivery policy", j.Delivery, "at-most-once", "at-least-once")
		if j.MaxConcurrency < 1 || j.MaxConcurrency > maxJobConcurrency {
			d.problem(p+".max_concurrency", "must be between 1 and %d, got %d", maxJobConcurrency, j.MaxConcurrency)
		}
		d.oneOf(p+".misfire.policy", "misfire policy", j.Misfire.Policy, "skip", "once", "all")
		d.notNegative(p+".misfire.grace", j.Misfire.Grace)
		d.notNegative(p+".jitter", j.Jitter)
		d.jitterBound(p+".jitter", j)
	}
}

// MaxJitter bounds a job's jitter.
const MaxJitter = 24 * time.Hour

// jitterHorizon is how far ahead jitterBound looks for the clock changes of
// the job's time zone: two years, so each kind of change (spring, autumn, and
// a zone's rarer ones) is seen on both of the weekdays it may fall on.
const jitterHorizon = 2 * 365 * 24 * time.Hour

// jitterBound refuses a jitter over MaxJitter, or not less than the
// shortest gap between the schedule's fire times: each slot would then
// start after the next one is due, and the job would run late or not at all.
// The gap is looked for in the next fire times and around each daylight-
// saving change of the next two years (a daily "0 2 * * *" in Berlin fires
// 23 h apart after the spring change), and named with its date.
func (d *decoder) jitterBound(path string, j *Job) {
	if j.Jitter <= 0 {
		return
	}
	if j.Jitter > MaxJitter {
		d.problem(path, "%s is more than the limit of %s", j.Jitter, MaxJitter)
		return
	}
	if j.Sched == nil {
		return
	}
	g, ok := schedule.ShortestGap(j.Sched, time.Now(), j.Jitter, jitterHorizon)
	if !ok || g.Len() <= 0 || j.Jitter < g.Len() {
		return
	}
	loc := j.Location
	if loc == nil {
		loc = time.UTC
	}
	at := fmt.Sprintf("from %s to %s", g.From.In(loc).Format(time.RFC3339), g.To.In(loc).Format(time.RFC3339))
	if !g.Change.IsZero() {
		at += fmt.Sprintf(", when the clocks change at %s", g.Change.In(loc).Format(time.RFC3339))
	}
	d.problem(path, "%s is not less than the schedule's shortest interval between slots (%s, %s): a slot would start after the next is due; "+
		"use a jitter below %s", j.Jitter, g.Len(), at, g.Len())
}

// required reports a missing or empty required string and returns whether
// it is present.
func (d *decoder) required(path, key, val string) bool {
	if val != "" {
		return true
	}
	if d.isSet(path) {
		d.problem(path, "must not be empty")
	} else {
		d.problem(path, "missing required key %q", key)
	}
	return false
}

func (d *decoder) positive(path string, v time.Duration) bool {
	if v <= 0 {
		d.problem(path, "%s: must be greater than 0", v)
		return false
	}
	return true
}

func (d *decoder) notNegative(path string, v time.Duration) {
	if v < 0 {
		d.problem(path, "%s is negative", v)
	}
}

func (d *decoder) oneOf(path, what, val string, allowed ...string) {
	if slices.Contains(allowed, val) {
		return
	}
	msg := fmt.Sprintf("invalid %s %q: must be one of %s", what, val, strings.Join(allowed, ", "))
	if s := didyoumean.Closest(val, allowed); s != "" {
		msg += fmt.Sprintf(" (did you mean %q?)", s)
	}
	d.problem(path, "%s", msg)
}

func (d *decoder) envName(path, name string) {
	if name == "" || envNameRe.MatchString(name) {
		return
	}
	// The value is not quoted: a key that takes a variable's name and got
	// something else most often got the secret itself (attack 23, U5).
	// What is wrong with it is said instead, and the line shows where.
	why := "it starts with a digit"
	ascii := func(r rune) bool {
		return r == '_' || 'a' <= r && r <= 'z' || 'A' <= r && r <= 'Z' || '0' <= r && r <= '9'
	}
	if i := strings.IndexFunc(name, func(r rune) bool { return !ascii(r) }); i >= 0 {
		r, _ := utf8.DecodeRuneInString(name[i:])
		why = fmt.Sprintf("character %d, %q, is not a letter, digit or underscore", utf8.RuneCountInString(name[:i])+1, r)
		if unicode.IsLetter(r) || unicode.IsDigit(r) { // of another script: part of a word, not shown
			why = fmt.Sprintf("character %d is not an ASCII letter, digit or underscore", utf8.RuneCountInString(name[:i])+1)
		}
	}
	d.problem(path, "not an environment variable name (%s); this key takes the name of a variable that holds the secret, "+
		"not the secret itself, which is why the value is not shown here", why)
}

func (d *decoder) listenAddr(path, addr string) {
	if msg := checkHostPort(addr, true); msg != "" {
		d.problem(path, "%s", msg)
	}
}

// checkHostPort returns a problem message, or "" if addr is host:port. The
// host may be empty (all interfaces).
func checkHostPort(addr string, allowZeroPort bool) string {
	host, port, err := net.SplitHostPort(addr)
	if err != nil || strings.ContainsAny(host, " \t/") {
		return fmt.Sprintf(`invalid address %q: want host:port, such as "127.0.0.1:8080" or ":8080"`, addr)
	}
	n, err := strconv.ParseUint(port, 10, 16)
	if err != nil || n == 0 && !allowZeroPort {
		lo := 1
		if allowZeroPort {
			lo = 0
		}
		return fmt.Sprintf("invalid address %q: port must be a number from %d to %d", addr, lo, math.MaxUint16)
	}
	return ""
}

// checkEndpoint accepts what the etcd client accepts: host:port or a URL
// with scheme http, https, unix or unixs.
func checkEndpoint(ep string) string {
	if !strings.Contains(ep, "://") {
		return checkHostPort(ep, false)
	}
	u, err := url.Parse(ep)
	if err != nil {
		return fmt.Sprintf("invalid endpoint %q: %v", ep, err)
	}
	switch u.Scheme {
	case "http", "https":
		if u.Host == "" {
			return fmt.Sprintf("invalid endpoint %q: no host", ep)
		}
		if u.Port() != "" {
			if n, err := strconv.ParseUint(u.Port(), 10, 16); err != nil || n == 0 {
				return fmt.Sprintf("invalid endpoint %q: port must be a number from 1 to %d", ep, math.MaxUint16)
			}
		}
	case "unix", "unixs":
	default:
		return fmt.Sprintf("invalid endpoint %q: scheme must be http, https, unix or unixs", ep)
	}
	return ""
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// hostZone explains why name, a file of the host's zoneinfo directory that
// time.LoadLocation would read, is no IANA zone that every replica reads
// alike, or returns "". Like "Local", such names depend on the host: Debian's
// "localtime" links to /etc/localtime, "posixrules" holds the host's default
// DST rules, and the "right/" (leap-second) and "posix/" trees are copies of
// the zones that only some hosts install (not the zone data compiled into
// pacer); Go reads "right/" zones wrongly (right/Europe/Berlin gave +02:00
// in January).
func hostZone(name string) string {
	switch {
	case name == "localtime":
		return `"localtime" is each host's own time zone (a link to /etc/localtime), so replicas could disagree; use an IANA name such as "Europe/Berlin"`
	case name == "posixrules":
		return `"posixrules" is the host's file of default daylight-saving rules, not an IANA zone, so replicas could disagree; use an IANA name such as "America/New_York"`
	case strings.HasPrefix(name, "right/"), strings.HasPrefix(name, "posix/"):
		tree, zone, _ := strings.Cut(name, "/")
		return fmt.Sprintf("%q is from the host's %s/ copy of the zone data, which not every host has (nor the zone data built into pacer), and %s; use the IANA name %q",
			name, tree, map[string]string{"right": "whose leap-second clock Go does not read right", "posix": "it is the same zone"}[tree], zone)
	}
	return ""
}
