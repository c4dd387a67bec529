package config

import (
	"slices"
	"strings"
	"testing"

	"github.com/pacerun/pacer/observability"
)

// TestOpenAPIOnTheNetworkIsRefused: without a token, an API that other
// machines can reach is a config error naming http.token_env and the
// explicit opt-out; on loopback, with a token, with client certificates or
// with the opt-out, the config is valid.
func TestOpenAPIOnTheNetworkIsRefused(t *testing.T) {
	t.Parallel()
	// A message passes the sanitizer, as the log does: a non-loopback
	// address is personal data there ([ipv4], [ipv6]); file:line says
	// which value it is.
	shown := map[string]string{"10.0.0.5:9464": "[ipv4]:9464", "[2001:db8::1]:9464": "[[ipv6]]:9464"}
	for _, listen := range []string{":9464", "0.0.0.0:9464", "10.0.0.5:9464", "[::]:9464", "web-1.internal:9464", "[2001:db8::1]:9464"} {
		_, err := Parse("pacer.yaml", y("http:", "  listen: '"+listen+"'"))
		quoted := listen
		if s, ok := shown[listen]; ok {
			quoted = s
		}
		want := `pacer.yaml:2: http.listen: "` + quoted + `" can be reached from other machines, and the API has no token`
		if err == nil || !strings.HasPrefix(err.Error(), want) ||
			!strings.Contains(err.Error(), "http.token_env") || !strings.Contains(err.Error(), "http.insecure_no_auth: true") {
			t.Errorf("listen %s: err = %v\nwant %s ... naming http.token_env and http.insecure_no_auth", listen, err, want)
		}
	}
	for _, src := range [][]string{
		{"http: {listen: '127.0.0.1:9464'}"},
		{"http: {listen: '127.8.9.10:9464'}"},
		{"http: {listen: 'localhost:9464'}"},
		{"http: {listen: '[::1]:9464'}"},
		{"http: {listen: '0.0.0.0:9464', token_env: PACER_API_TOKEN}"},
		{"http: {listen: '0.0.0.0:9464', insecure_no_auth: true}"},
		{"http: {listen: '127.0.0.1:9464', auth_all: true, token_env: PACER_API_TOKEN}"},
		{"http:", "  auth_all: true", "  tls: {cert_file: a.pem, key_file: a-key.pem, client_ca_file: ca.pem}"},
		{"http:", "  listen: '0.0.0.0:9464'", "  tls: {cert_file: a.pem, key_file: a-key.pem, client_ca_file: ca.pem}"},
	} {
		if _, err := Parse("pacer.yaml", y(src...)); err != nil {
			t.Errorf("%s: %v", strings.Join(src, " "), err)
		}
	}
}

func TestHTTPSecurityProblems(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		src  []string
		want []string
	}{
		{[]string{"http:", "  tls: {cert_file: a.pem}"}, []string{
			`pacer.yaml:2: http.tls.key_file: cert_file is set but key_file is not; set both or neither`}},
		{[]string{"http:", "  tls: {key_file: a.pem}"}, []string{
			`pacer.yaml:2: http.tls.cert_file: key_file is set but cert_file is not; set both or neither`}},
		{[]string{"http:", "  tls: {client_ca_file: ca.pem}"}, []string{
			`pacer.yaml:2: http.tls.client_ca_file: client certificates need HTTPS: set cert_file and key_file too`}},
		{[]string{"http:", "  max_connections: 0", "  rate_limit: {per_second: -1}"}, []string{
			`pacer.yaml:2: http.max_connections: must be between 1 and 1000000, got 0`,
			`pacer.yaml:3: http.rate_limit.per_second: -1 is out of range: must be between 0 (no limit) and 1000000`}},
		{[]string{"http:", "  rate_limit: {per_second: 5, burst: 0}"}, []string{
			`pacer.yaml:2: http.rate_limit.burst: must be at least 1, got 0`}},
		// Attack 23, U1: authenticated reads asked for, with nothing to
		// authenticate with, were accepted, and every read stayed open.
		{[]string{"http:", "  listen: 127.0.0.1:9464", "  auth_all: true"}, []string{
			`pacer.yaml:3: http.auth_all: requires a token on every call, but the API has none: set http.token_env to the name of an ` +
				`environment variable holding one (or require client certificates with http.tls.client_ca_file), or remove auth_all`}},
	} {
		checkProblems(t, tc.src, tc.want)
	}
}

// TestSecretVariablesNeverInherited: listing the variable that holds the API
// token or the etcd password in an inherit_env list is a config error, in
// plugins.inherit_env and in a job's params; so are "*" and malformed
// entries. A valid list is copied to Job.InheritEnv.
func TestSecretVariablesNeverInherited(t *testing.T) {
	t.Parallel()
	src := y(
		"cluster:",
		"  etcd: {endpoints: [etcd:2379], username: pacer, password_env: PACER_ETCD_PASSWORD}",
		"http: {token_env: PACER_API_TOKEN}",
		"plugins:",
		"  inherit_env: [LANG, PACER_ETCD_PASSWORD]",
		"jobs:",
		"  - id: a",
		"    plugin: shell",
		"    task: exec",
		"    schedule: '@every 1m'",
		"    params:",
		"      command: [env]",
		"      inherit_env: [HOME, PACER_API_TOKEN, '*', 'A-B', 'X*Y', ' ATK_TOKEN']",
	)
	_, err := Parse("pacer.yaml", src)
	want := []string{
		`pacer.yaml:5: plugins.inherit_env[1]: PACER_ETCD_PASSWORD holds the etcd password (cluster.etcd.password_env), which is never passed to plugins or tasks; remove it`,
		`pacer.yaml:13: jobs[0].params.inherit_env[1]: PACER_API_TOKEN holds the API token (http.token_env), which is never passed to plugins or tasks; remove it`,
		`pacer.yaml:13: jobs[0].params.inherit_env[2]: "*" would pass the runner's whole environment: list the variables (NAME) or prefixes (NAME_*) needed`,
		`pacer.yaml:13: jobs[0].params.inherit_env[3]: invalid entry "A-B" (want a variable name, NAME, or a prefix followed by *, NAME_*)`,
		`pacer.yaml:13: jobs[0].params.inherit_env[4]: invalid entry "X*Y" (want a variable name, NAME, or a prefix followed by *, NAME_*)`,
		// Attack 32, C2: with a ": " after the quoted name, the sanitizer
		// took "want" for the value of a key ending in TOKEN.
		`pacer.yaml:13: jobs[0].params.inherit_env[5]: invalid entry " ATK_TOKEN" (want a variable name, NAME, or a prefix followed by *, NAME_*)`,
	}
	var got []string
	if err != nil {
		got = strings.Split(err.Error(), "\n")
	}
	if !slices.Equal(got, want) {
		t.Fatalf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	cfg, err := Parse("pacer.yaml", y(
		"jobs:",
		"  - {id: a, plugin: shell, task: exec, schedule: '@every 1m', params: {command: [env], inherit_env: [HOME, AWS_*]}}",
		"  - {id: b, plugin: shell, task: exec, schedule: '@every 1m', params: {command: [env]}}",
	))
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(cfg.Jobs[0].InheritEnv, []string{"HOME", "AWS_*"}) || cfg.Jobs[1].InheritEnv != nil {
		t.Fatalf("InheritEnv = %q, %q", cfg.Jobs[0].InheritEnv, cfg.Jobs[1].InheritEnv)
	}
}

// A token_env or password_env that is no variable name is refused
// without quoting it: most often it is the secret itself (attack 23, U5),
// and the message says what is wrong instead. It survives the sanitizer
// every printed error passes intact (attack 23, U2: a name like "MY TOKEN"
// quoted with a colon after it read as a key and its value, and the
// message's next word was masked).
func TestBadVariableNameIsNotEchoed(t *testing.T) {
	t.Parallel()
	san := observability.DefaultSanitizer()
	tail := "; this key takes the name of a variable that holds the secret, not the secret itself, which is why the value is not shown here"
	for _, tc := range []struct{ key, value, want string }{
		{"http.token_env", "MY TOKEN", `pacer.yaml:2: http.token_env: not an environment variable name (character 3, ' ', is not a letter, digit or underscore)` + tail},
		{"http.token_env", "9f86d081884c7d659a2feaa0c55ad015", `pacer.yaml:2: http.token_env: not an environment variable name (it starts with a digit)` + tail},
		{"http.token_env", "tok-8c1f2e7a9b-SECRETVAL", `pacer.yaml:2: http.token_env: not an environment variable name (character 4, '-', is not a letter, digit or underscore)` + tail},
		{"http.token_env", "clé_secrète", `pacer.yaml:2: http.token_env: not an environment variable name (character 3 is not an ASCII letter, digit or underscore)` + tail},
	} {
		_, err := Parse("pacer.yaml", y("http:", "  token_env: '"+tc.value+"'"))
		if err == nil {
			t.Fatalf("%s %q accepted", tc.key, tc.value)
		}
		if got := san.String(err.Error()); got != tc.want {
			t.Errorf("%s %q, printed:\n%s\nwant\n%s", tc.key, tc.value, got, tc.want)
		}
	}
}

// TestOpenEmbeddedEtcdOnTheNetworkIsRefused: the embedded etcd has no
// authentication, so an address of it that other machines can reach is a
// config error at its line (either key, the older ones too) naming
// cluster.embedded.insecure_no_auth, as http.listen's names
// http.insecure_no_auth (attack 23, U9: anyone on the network could queue
// triggers, pause jobs and forge records). On loopback, with the opt-in,
// or with cluster.etcd.endpoints (no embedded etcd then), it is valid.
func TestOpenEmbeddedEtcdOnTheNetworkIsRefused(t *testing.T) {
	t.Parallel()
	tail := "; keep it on a loopback address, use an external etcd with authentication (cluster.etcd.endpoints, with " +
		"username and password_env or client certificates), or set cluster.embedded.insecure_no_auth: true to expose it on purpose"
	client := `can be reached from other machines, and the embedded etcd has no authentication, so anyone who reaches it ` +
		`could read and write Pacer's keys (queue triggers, pause jobs, forge run records)` + tail
	peer := `can be reached from other machines, and the embedded etcd's peer port has no authentication, so anyone who ` +
		`reaches it could talk to it as an etcd member` + tail
	for _, tc := range []struct {
		src  []string
		want []string
	}{
		{[]string{"cluster:", "  embedded:", "    client_url: 'http://0.0.0.0:44990'", "    peer_url: 'http://0.0.0.0:44991'"}, []string{
			`pacer.yaml:3: cluster.embedded.client_url: "0.0.0.0:44990" ` + client,
			`pacer.yaml:4: cluster.embedded.peer_url: "0.0.0.0:44991" ` + peer}},
		{[]string{"cluster:", "  embedded: {client_url: 'http://etcd-a.internal:2379'}"}, []string{
			`pacer.yaml:2: cluster.embedded.client_url: "etcd-a.internal:2379" ` + client}},
		{[]string{"cluster:", "  embedded: {peer_url: 'http://[::]:2380'}"}, []string{
			`pacer.yaml:2: cluster.embedded.peer_url: "[::]:2380" ` + peer}},
		{[]string{"cluster:", "  etcd:", "    embedded: {client_listen: ':2379'}"}, []string{
			`pacer.yaml:3: cluster.etcd.embedded.client_listen: ":2379" ` + client}},
	} {
		checkProblems(t, tc.src, tc.want)
	}
	// A non-loopback IP is masked when printed ([ipv4]); file:line says
	// which value it is.
	_, err := Parse("pacer.yaml", y("cluster: {embedded: {client_url: 'http://10.0.0.5:2379'}}"))
	if want := `pacer.yaml:1: cluster.embedded.client_url: "[ipv4]:2379" ` + client; err == nil || err.Error() != want {
		t.Errorf("10.0.0.5: err = %v\nwant %s", err, want)
	}

	// Exposed says so, for the start-up WARN line.
	for _, tc := range []struct {
		src     string
		exposed bool
	}{
		{"jobs: []", false},
		{"cluster: {embedded: {client_url: 'http://127.0.0.1:2379', peer_url: 'http://[::1]:2380'}}", false},
		{"cluster: {embedded: {client_url: 'http://localhost:2379', peer_url: 'http://127.9.9.9:2380'}}", false},
		{"cluster: {embedded: {client_url: 'http://0.0.0.0:2379', peer_url: 'http://10.0.0.5:2380', insecure_no_auth: true}}", true},
		{"cluster: {embedded: {peer_url: 'http://10.0.0.5:2380', insecure_no_auth: true}}", true},
		{"cluster: {etcd: {embedded: {client_listen: ':2379'}}, embedded: {insecure_no_auth: true}}", true},
		{"cluster: {etcd: {endpoints: ['etcd:2379']}, embedded: {client_url: 'http://0.0.0.0:2379'}}", true},
	} {
		cfg, err := Parse("pacer.yaml", y(tc.src))
		if err != nil {
			t.Errorf("%s: %v", tc.src, err)
			continue
		}
		if got := cfg.Cluster.Embedded.Exposed(); got != tc.exposed {
			t.Errorf("%s: Exposed() = %t, want %t", tc.src, got, tc.exposed)
		}
	}
}

// An etcd endpoint with user-info is valid, as before, but warned about
// without being quoted: the etcd client does not send it, and
// cluster.etcd.username and password_env are how to authenticate (attack
// 23, U7).
func TestEtcdEndpointWithUserinfoWarns(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("pacer.yaml", y("cluster:", "  etcd:",
		"    endpoints: ['http://etcduser:EtcdUrlPw55@127.0.0.1:2379', 'https://etcd-2:2379', 'https://ops@etcd-3:2379']"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, w := range cfg.Warnings {
		got = append(got, w.String())
	}
	if len(got) != 2 || !strings.HasPrefix(got[0], "pacer.yaml:3: cluster.etcd.endpoints[0]: the endpoint holds a user name and password") ||
		!strings.HasPrefix(got[1], "pacer.yaml:3: cluster.etcd.endpoints[2]: ") {
		t.Fatalf("warnings %q, want one for endpoints[0] and [2]", got)
	}
	for _, w := range got {
		if strings.Contains(w, "EtcdUrlPw55") || strings.Contains(w, "etcduser") ||
			!strings.Contains(w, "cluster.etcd.username") || !strings.Contains(w, "cluster.etcd.password_env") {
			t.Errorf("warning %q: quotes the endpoint, or does not name cluster.etcd.username and password_env", w)
		}
	}
}

// A token_env or password_env naming a variable that is not set is said by
// name only when the name is in capitals, as variables are named: another
// may be the secret itself, pasted where the name goes, in a shape the
// sanitizer does not know (attack 24, V2: a random 32-character key was
// printed whole).
func TestSecretProblemsDoNotQuoteANameThatMayBeTheSecret(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("pacer.yaml", y("http:", "  token_env: q7XkP2mZ9vLw4RtY8nBc3HdF6jGs1AeK",
		"cluster: {etcd: {endpoints: ['http://127.0.0.1:2379'], username: pacer, password_env: PACER_ETCD_PASSWORD}}"))
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, p := range cfg.SecretProblems(func(string) (string, bool) { return "", false }) {
		got = append(got, p.String())
	}
	want := []string{
		"pacer.yaml:2: http.token_env: the environment variable this key names (its name not shown: it is not in capitals, and may be " +
			"the secret itself) is empty, blank or not set; set it, or remove token_env to run the API without a token",
		"pacer.yaml:3: cluster.etcd.password_env: environment variable PACER_ETCD_PASSWORD is not set",
	}
	if !slices.Equal(got, want) {
		t.Errorf("problems:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

// checkProblems parses the lines of src as pacer.yaml and checks that its
// problems, one a line, are want (none: nil).
func checkProblems(t *testing.T, src, want []string) {
	t.Helper()
	_, err := Parse("pacer.yaml", y(src...))
	var got []string
	if err != nil {
		got = strings.Split(err.Error(), "\n")
	}
	if !slices.Equal(got, want) {
		t.Errorf("%s:\n got %q\nwant %q", strings.Join(src, " | "), got, want)
	}
}
