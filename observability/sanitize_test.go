package observability

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"
)

type sanitizeCase struct {
	name string
	in   string
	want string
}

// runCases checks each case and that sanitizing the output again changes
// nothing (idempotence).
func runCases(t *testing.T, s *Sanitizer, cases []sanitizeCase) {
	t.Helper()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			got := s.String(tc.in)
			if got != tc.want {
				t.Fatalf("String(%q)\n got %q\nwant %q", tc.in, got, tc.want)
			}
			if again := s.String(got); again != got {
				t.Errorf("not idempotent: String(%q) = %q", got, again)
			}
		})
	}
}

func mustSanitizer(t testing.TB, o SanitizerOptions) *Sanitizer {
	t.Helper()
	s, err := NewSanitizer(o)
	if err != nil {
		t.Fatalf("NewSanitizer: %v", err)
	}
	return s
}

func TestSanitizeEmail(t *testing.T) {
	t.Parallel()
	runCases(t, mustSanitizer(t, SanitizerOptions{}), []sanitizeCase{
		{"plain", "contact alice@example.com today", "contact [email] today"},
		{"subdomain and tag", "<bob.smith+tag@mail.example.co.uk>", "<[email]>"},
		{"sentence end", "sent to alice@example.com.", "sent to [email]."},
		{"mailto", "mailto:alice@example.com", "mailto:[email]"},
		{"json", `{"to":"a_b-c@ex-ample.io"}`, `{"to":"[email]"}`},
		{"two", "a@example.com,b@example.org", "[email],[email]"},
		{"idn", "josé@exämple.com", "[email]"},
		{"go module version", "github.com/x/y@v1.2.3", "github.com/x/y@v1.2.3"},
		{"npm version", "node@18.0.0", "node@18.0.0"},
		{"no tld", "root@localhost", "root@localhost"},
		{"bare at", "@ @@ a@ @b.com", "@ @@ a@ @b.com"},
		{"numeric tld", "x@host.123", "x@host.123"},
		{"placeholder userinfo", "https://[userinfo]@host", "https://[userinfo]@host"},
	})
}

func TestSanitizeIPv4(t *testing.T) {
	t.Parallel()
	runCases(t, mustSanitizer(t, SanitizerOptions{}), []sanitizeCase{
		{"plain", "from 10.0.0.1 ok", "from [ipv4] ok"},
		{"port", "listening on 10.1.2.3:9464", "listening on [ipv4]:9464"},
		{"loopback kept", "listening on 127.0.0.1:9464", "listening on 127.0.0.1:9464"},
		{"unspecified kept", "bind 0.0.0.0:80", "bind 0.0.0.0:80"},
		{"cidr", "allow 10.0.0.0/8", "allow [ipv4]/8"},
		{"parens", "(192.168.1.254)", "([ipv4])"},
		{"sentence end", "resolved to 8.8.8.8.", "resolved to [ipv4]."},
		{"kv", "client_ip=203.0.113.7", "client_ip=[ipv4]"},
		{"max octets", "255.255.255.255", "[ipv4]"},
		{"url host", "http://10.1.2.3:8080/x", "http://[ipv4]:8080/x"},
		{"octet too big", "256.1.1.1", "256.1.1.1"},
		{"long dotted run", "version 1.2.3.4.5", "version 1.2.3.4.5"},
		{"prefixed version", "v1.2.3.4 go1.26.8", "v1.2.3.4 go1.26.8"},
		{"three parts", "version 1.26.8", "version 1.26.8"},
		{"glued suffix", "10.0.0.1a", "10.0.0.1a"},
		{"four digit part", "1.2.3.1000", "1.2.3.1000"},
		{"float", "pi 3.14159 took 0.25s", "pi 3.14159 took 0.25s"},
		{"rfc3339", "2024-06-10T12:30:45.123456789+02:00", "2024-06-10T12:30:45.123456789+02:00"},
	})
}

func TestSanitizeIPv6(t *testing.T) {
	t.Parallel()
	runCases(t, mustSanitizer(t, SanitizerOptions{}), []sanitizeCase{
		{"loopback kept", "dial ::1", "dial ::1"},
		{"documentation", "dial 2001:db8::42", "dial [ipv6]"},
		{"zone", "fe80::1%eth0 up", "[ipv6] up"},
		{"doc", "2001:db8::8a2e:370:7334", "[ipv6]"},
		{"full", "addr=2001:0db8:0000:0000:0000:ff00:0042:8329", "addr=[ipv6]"},
		{"bracketed port", "[2001:db8::1]:8080", "[[ipv6]]:8080"},
		{"v4 mapped", "::ffff:10.0.0.1", "[ipv6]"},
		{"after key colon", "host:fe80::1", "host:[ipv6]"},
		{"sentence end", "peer 2001:db8::1.", "peer [ipv6]."},
		{"trailing colon", "dial 2001:db8::1: refused", "dial [ipv6]: refused"},
		{"prefix", "route 2001:db8::/32", "route [ipv6]/32"},
		{"time", "at 12:30:45 ok", "at 12:30:45 ok"},
		{"time fraction", "12:30:45.123", "12:30:45.123"},
		{"rfc3339", "2024-06-10T12:30:45Z", "2024-06-10T12:30:45Z"},
		{"mac", "hw 00:1a:2b:3c:4d:5e", "hw 00:1a:2b:3c:4d:5e"},
		{"cpp scope", "std::vector crate::abc::def", "std::vector crate::abc::def"},
		{"hex word", "deadbeef cafe", "deadbeef cafe"},
		{"durations", "took 1m30s, 1h2m3.5s", "took 1m30s, 1h2m3.5s"},
		{"bare double colon", "a :: b", "a :: b"},
		{"two groups", "ab:cd", "ab:cd"},
		{"glued word", "fe80::1g", "fe80::1g"},
	})
}

func TestSanitizeBearerAndJWT(t *testing.T) {
	t.Parallel()
	const jwt = "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"
	runCases(t, mustSanitizer(t, SanitizerOptions{}), []sanitizeCase{
		{"header", "Authorization: Bearer xyz", "Authorization: Bearer [token]"},
		{"lower", "bearer xyz", "Bearer [token]"},
		{"upper", "BEARER abc-def_ghi.jkl~mno+pqr/stu==", "Bearer [token]"},
		{"quoted", `{"Authorization":"Bearer abc123"}`, `{"Authorization":"Bearer [token]"}`},
		{"jwt", "token " + jwt + " ok", "token [jwt] ok"},
		{"bearer jwt", "Authorization: Bearer " + jwt, "Authorization: Bearer [jwt]"},
		{"jwt sentence", "got " + jwt + ".", "got [jwt]."},
		{"jwt unsigned", "eyJhbGciOiJub25lIn0.eyJzdWIiOiIxIn0.", "[jwt]"},
		{"word bearers", "the bearers arrived", "the bearers arrived"},
		{"bearer alone", "Bearer", "Bearer"},
		{"bearer newline", "Bearer\nxyz", "Bearer\nxyz"},
		{"not jwt glued", "xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig", "xeyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.sig"},
		{"not jwt one dot", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0"},
	})
}

func TestSanitizeKeyValues(t *testing.T) {
	t.Parallel()
	runCases(t, mustSanitizer(t, SanitizerOptions{}), []sanitizeCase{
		{"logfmt", "user=bob password=hunter2 ok=1", "user=bob password=[redacted] ok=1"},
		{"json", `{"api_key": "abc", "n": 1}`, `{"api_key": "[redacted]", "n": 1}`},
		{"json compact", `{"password":"hu\"nter2","x":1}`, `{"password":"[redacted]","x":1}`},
		{"json number", `{"password":12345}`, `{"password":"[redacted]"}`},
		{"json object", `{"secret":{"a":"b","c":[1,2]},"x":1}`, `{"secret":"[redacted]","x":1}`},
		{"yaml", "token: abc", "token: [redacted]"},
		{"spaces", "secret = s3cr3t!", "secret = [redacted]"},
		{"query", "GET /cb?token=abc&x=1", "GET /cb?token=[redacted]&x=1"},
		{"query access token", "?access_token=a.b.c&refresh_token=d", "?access_token=[redacted]&refresh_token=[redacted]"},
		{"authorization basic", "Authorization: Basic dXNlcjpwYXNz", "Authorization: Basic [redacted]"},
		{"authorization kv", "authorization=xyz", "authorization=[redacted]"},
		{"passwd", "passwd=x", "passwd=[redacted]"},
		{"client_secret", "client_secret=abc123", "client_secret=[redacted]"},
		{"private_key", "private_key='k'", "private_key='[redacted]'"},
		{"header dash", "X-Api-Key: k123", "X-Api-Key: [redacted]"},
		{"camel", `{"clientSecret":"x","accessToken":"y"}`, `{"clientSecret":"[redacted]","accessToken":"[redacted]"}`},
		{"env", "DB_PASSWORD=pw AWS_SECRET_ACCESS_KEY=sk", "DB_PASSWORD=[redacted] AWS_SECRET_ACCESS_KEY=[redacted]"},
		{"go map", "map[password:abc user:bob]", "map[password:[redacted] user:bob]"},
		{"go struct", "{User:bob Password:abc}", "{User:bob Password:[redacted]}"},
		{"python dict", "{'password': 'abc'}", "{'password': '[redacted]'}"},
		{"escaped json", `"{\"password\":\"x y\"}"`, `"{\"password\":\"[redacted]\"}"`},
		{"unterminated quote", `password="abc def`, `password="[redacted]`},
		// A value ends with its line: the lines after it are not the value.
		{"unterminated quote, more lines", "password=\"abc def\nnext line\nlast", "password=\"[redacted]\nnext line\nlast"},
		{"unterminated single quote, more lines", "secret: 'abc\nuser: bob", "secret: '[redacted]\nuser: bob"},
		{"closing quote on a later line", "token=\"abc\nx=\"y\"", "token=\"[redacted]\nx=\"y\""},
		{"unterminated object, more lines", "secret: {a: 1\nuser: bob", "secret: [redacted]\nuser: bob"},
		{"multi-line object", "secret: {\n a: 1\n}\nuser: bob", "secret: [redacted]\nuser: bob"},
		// The fencing token is not a secret (docs/observability.md).
		{"fencing token env", "PACER_FENCING_TOKEN=42", "PACER_FENCING_TOKEN=42"},
		{"fencing token json", `{"fencing_token":42,"token":"x"}`, `{"fencing_token":42,"token":"[redacted]"}`},
		{"fencing token attribute", "pacer.fencing_token=7 fencingToken: 8", "pacer.fencing_token=7 fencingToken: 8"},
		{"other fencing-like keys", "my_fencing_token=9 PACER_TOKEN=1", "my_fencing_token=[redacted] PACER_TOKEN=[redacted]"},
		// A file path ending in a key's name, before a colon, is a path
		// (an error message), not a key; a key after a path-less slash,
		// after '=', or quoted, still is.
		{"path ending in passwd", "want an executable plugin at /etc/passwd: not an executable file",
			"want an executable plugin at /etc/passwd: not an executable file"},
		{"relative and home paths", "open ./api.token: no such file; read ~/.secret: denied; ../token: gone",
			"open ./api.token: no such file; read ~/.secret: denied; ../token: gone"},
		{"windows path", `open C:\run\token: access denied`, `open C:\run\token: access denied`},
		{"slash in a key", "db/password: hunter2", "db/password: [redacted]"},
		{"url ending in a key", "https://vault/v1/token: s3cr3t", "https://vault/v1/token: [redacted]"},
		{"path with equals", "/etc/passwd=hunter2", "/etc/passwd=[redacted]"},
		{"quoted path key", `{"/run/token": "x"}`, `{"/run/token": "[redacted]"}`},
		// A quoted path before a colon and words after it: an error
		// message, not a key and its value.
		{"quoted path in a message", `unknown time zone "../../../etc/passwd": use an IANA name such as "UTC"`,
			`unknown time zone "../../../etc/passwd": use an IANA name such as "UTC"`},
		{"quoted path, quoted value", `{"/run/secrets/db_password": "hunter2"}`, `{"/run/secrets/db_password": "[redacted]"}`},
		{"quoted key, bare value", `"db_password": hunter2`, `"db_password": "[redacted]"`},
		{"already typed", "password=alice@example.com", "password=[email]"},
		{"partly typed", "password=x:10.0.0.1", "password=[redacted]"},
		{"empty value", "password= ", "password= "},
		{"not sensitive", "token_count=3 tokens=5 max_tokens=9 author=bob", "token_count=3 tokens=5 max_tokens=9 author=bob"},
		{"message text", "error: invalid input", "error: invalid input"},
		{"url scheme", "see https://example.com/a", "see https://example.com/a"},
		// Attack 14, K9: colour codes around a key or a value, and Python
		// bytes values.
		{"coloured key", "\x1b[1mpassword\x1b[0m=pwx_a1", "password=[redacted]"},
		{"coloured env key", "\x1b[32mDB_PASSWORD\x1b[0m: pwx_a2", "DB_PASSWORD: [redacted]"},
		{"coloured value", "password=\x1b[1mpwx_a3\x1b[0m", "password=[redacted]"},
		{"python bytes", "{'password': b'pwx_e8', 'user': 'bob'}", "{'password': b'[redacted]', 'user': 'bob'}"},
		{"other escapes kept", "\x1b[2Kline", "\x1b[2Kline"},
	})
}

func TestSanitizeCards(t *testing.T) {
	t.Parallel()
	runCases(t, mustSanitizer(t, SanitizerOptions{}), []sanitizeCase{
		{"visa spaces", "card 4111 1111 1111 1111 ok", "card [card] ok"},
		{"visa dashes", "4111-1111-1111-1111", "[card]"},
		{"visa plain", "n=4111111111111111", "n=[card]"},
		{"mastercard", "5555555555554444", "[card]"},
		{"mastercard 2-series", "2223003122003222", "[card]"},
		{"amex grouped", "3782 822463 10005", "[card]"},
		{"discover", "(6011111111111117)", "([card])"},
		{"visa 13", "4222222222222", "[card]"},
		{"neighbour digits", "5 4111 1111 1111 1111 7", "5 [card] 7"},
		{"json", `{"pan":"4012888888881881"}`, `{"pan":"[card]"}`},
		{"luhn invalid", "4111111111111112", "4111111111111112"},
		{"luhn invalid grouped", "4111 1111 1111 1112", "4111 1111 1111 1112"},
		{"too short", "411111111111", "411111111111"},
		{"too long", "41111111111111111111", "41111111111111111111"},
		{"epoch millis", "ts=1718041234567", "ts=1718041234567"},
		{"trace id", "trace 4bf92f3577b34da6a3ce929d0e0e4736", "trace 4bf92f3577b34da6a3ce929d0e0e4736"},
		{"span id digits", "00f067aa0ba902b7", "00f067aa0ba902b7"},
		{"uuid", "123e4567-e89b-12d3-a456-426614174000", "123e4567-e89b-12d3-a456-426614174000"},
		{"glued letters", "x4111111111111111 4111111111111111y", "x4111111111111111 4111111111111111y"},
		{"decimal", "3.4111111111111111 4111111111111111.5", "3.4111111111111111 4111111111111111.5"},
		{"short groups", "41 11 11 11 11 11 11 11", "41 11 11 11 11 11 11 11"},
		{"date and time", "2024-06-10 12:30:45 4242", "2024-06-10 12:30:45 4242"},
		{"glued neighbour group", "0 4111 1111 1111 1111 0A0", "0 [card] 0A0"},
		{"decimal neighbour", "3.14 4111 1111 1111 1111 1.5", "3.14 [card] 1.5"},
		{"dash-joined token", "1234-4111-1111-1111-1111", "1234-4111-1111-1111-1111"},
		{"all-digit uuid", "32345678-4111-1111-1111-111111111111", "32345678-4111-1111-1111-111111111111"},
	})
}

func TestSanitizeURLUserinfoAndPEM(t *testing.T) {
	t.Parallel()
	runCases(t, mustSanitizer(t, SanitizerOptions{}), []sanitizeCase{
		{"userinfo", "https://user:pass@host/x", "https://[userinfo]@host/x"},
		{"db dsn", "postgres://admin:s3cr3t@db.internal:5432/app?sslmode=disable", "postgres://[userinfo]@db.internal:5432/app?sslmode=disable"},
		{"at in password", "redis://:p@ss@cache:6379", "redis://[userinfo]@cache:6379"},
		{"user only", "ssh://git@github.com/org/repo", "ssh://[userinfo]@github.com/org/repo"},
		{"no userinfo", "https://example.com/x?y=1", "https://example.com/x?y=1"},
		{"at in path", "https://example.com/u/a@b", "https://example.com/u/a@b"},
		{"at in path after a port", "https://example.com:8443/u/a@b", "https://example.com:8443/u/a@b"},
		// Attack 32, S3: a password with a '/' (base64 makes them).
		{"slash in password", "DATABASE_URL=postgres://app:Xy7/kQ9pS3KRIT@db:5432/app", "DATABASE_URL=postgres://[userinfo]@db:5432/app"},
		{"slashes in password", "https://bob:pa/ss/S3KRIT@db.example.com:5432/x", "https://[userinfo]@db.example.com:5432/x"},
		{"slash in password, quoted", `invalid endpoint "http://bob:pa/ssEP1@127.0.0.1:42379": bad`, `invalid endpoint "http://[userinfo]@127.0.0.1:42379": bad`},
		// Without a scheme: a word with a ':' before its '@'.
		{"bare userinfo", `invalid address "admin:listenpw-x1@127.0.0.1:23999": want host:port`, `invalid address "[userinfo]@127.0.0.1:23999": want host:port`},
		{"bare dsn", "dial user:rawpw-a1@db.internal:5432 failed", "dial [userinfo]@db.internal:5432 failed"},
		{"bare empty user", "cache=:pw9@cache:6379", "cache=[userinfo]@cache:6379"},
		{"bare protocol-relative", "//u:pw@h/x", "//[userinfo]@h/x"},
		{"bare e-mail stays an e-mail", "mail ops@example.com, ssh git@github.com:org/repo", "mail [email], ssh [email]:org/repo"},
		{"mailto", "mailto:ops@example.com", "mailto:[email]"},
		{"no host", "user:pw@ and user:pw@ ", "user:pw@ and user:pw@ "},
		{
			"pem",
			"key: -----BEGIN RSA PRIVATE KEY-----\nMIIEow+/eyJ4111111111111111\n-----END RSA PRIVATE KEY----- done",
			"key: [private_key] done",
		},
		{
			"pem escaped newlines",
			`{"k":"-----BEGIN PRIVATE KEY-----\nMIIE\n-----END PRIVATE KEY-----\n"}`,
			`{"k":"[private_key]\n"}`,
		},
		{"pem unterminated", "x -----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXk", "x [private_key]"},
		{"pem unterminated, last newline kept", "-----BEGIN PRIVATE KEY-----\nMIIE\nAAAA\n", "[private_key]\n"},
		{"pem unterminated on one line", `{"k":"-----BEGIN PRIVATE KEY-----\nMIIEvQIB","user":"bob"}`, `{"k":"[private_key]","user":"bob"}`},
		{"pem unterminated, words after", "-----BEGIN RSA PRIVATE KEY----- 10.91.82.73 x\nnext", "[private_key]\nnext"},
		// A quoted BEGIN line is a marker, not a key: only it is masked.
		{"pem marker quoted", "private_key=\"-----BEGIN PRIVATE KEY-----\"\nline 2\nline 3", "private_key=\"[private_key]\"\nline 2\nline 3"},
		{"pem marker in a sentence", "grep -- '-----BEGIN RSA PRIVATE KEY-----' id_rsa\nfound", "grep -- '[private_key]' id_rsa\nfound"},
		{"pgp", "-----BEGIN PGP PRIVATE KEY BLOCK-----\nabc\n-----END PGP PRIVATE KEY BLOCK-----", "[private_key]"},
		{"certificate", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----", "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----"},
	})
}

func TestSanitizeCleanLines(t *testing.T) {
	t.Parallel()
	s := mustSanitizer(t, SanitizerOptions{})
	for _, in := range []string{
		"2024-06-10T12:30:45.123456789Z INFO run finished job=nightly-backup attempt=2 duration=1m30.5s",
		"trace_id=4bf92f3577b34da6a3ce929d0e0e4736 span_id=00f067aa0ba902b7",
		"run 018f6b2c-6d0a-7c3e-9a4b-1f2e3d4c5b6a claimed by node-3 at 12:30:45",
		"pacer v1.26.8 (go1.26.8 linux/amd64) build 1.2.3.4.5",
		"retrying in 250ms: context deadline exceeded (attempt 3/5)",
		"",
		"héllo wörld ✓ 12:30",
	} {
		t.Run(in, func(t *testing.T) {
			t.Parallel()
			if got := s.String(in); got != in {
				t.Fatalf("clean line changed:\n got %q\nwant %q", got, in)
			}
		})
	}
}

func TestSanitizeCombined(t *testing.T) {
	t.Parallel()
	runCases(t, mustSanitizer(t, SanitizerOptions{}), []sanitizeCase{
		{
			"everything",
			"user alice@example.com from 10.0.0.1 paid 4111 1111 1111 1111 with password=hunter2 via https://u:p@h/x",
			"user [email] from [ipv4] paid [card] with password=[redacted] via https://[userinfo]@h/x",
		},
		{"password is card", "token: 4111 1111 1111 1111", "token: [card]"},
		{"bearer swallows kv", "bearer password=hunter2", "Bearer [token]"},
		{"multiline", "a=1\npassword=x\nb@example.com\n", "a=1\npassword=[redacted]\n[email]\n"},
		// Regressions found by FuzzSanitizer.
		{"value is the next key", "password= api_key: qq7 x", "password= api_key: [redacted] x"},
		{"scheme then key", "Authorization: Basic api_key: qq7", "Authorization: [redacted] api_key: [redacted]"},
		{"bearer bearer", "bearer Bearer abc", "bearer Bearer [token]"},
		{"card next to ipv6", "6000000200 2001:db8::1 0", "6000000200 [ipv6] 0"},
		{"go dial error", "dial tcp 10.0.0.1:5432: connect: connection refused", "dial tcp [ipv4]:5432: connect: connection refused"},
		{"after time", "at 12:30:10.0.0.1 up", "at 12:30:[ipv4] up"},
		{"before rejected ipv6", "10.0.0.1:0::x", "10.0.0.1:0::x"},
	})
}

func TestSanitizerOperatorRules(t *testing.T) {
	t.Parallel()
	s := mustSanitizer(t, SanitizerOptions{
		RedactKeys: []string{"SSN", "session-id"},
		Patterns: []Pattern{
			{Name: "ticket", Regex: `TCK-\d+`},
			{Name: "employee", Regex: `\bEMP-\d{6}\b`},
		},
	})
	runCases(t, s, []sanitizeCase{
		{"pattern", "see TCK-1234 and TCK-9", "see [ticket] and [ticket]"},
		{"pattern after builtins", "ask EMP-123456 or alice@example.com", "ask [employee] or [email]"},
		{"redact key", "ssn=123-45-6789 session_id: abc", "ssn=[redacted] session_id: [redacted]"},
		{"redact key json", `{"SessionID":"abc"}`, `{"SessionID":"[redacted]"}`},
		{"redact key is exact", "user_ssn=1 ssnx=2", "user_ssn=1 ssnx=2"},
		{"kv keeps operator placeholder", "token=[ticket]", "token=[ticket]"},
	})

	for _, tc := range []struct {
		key  string
		want bool
	}{
		{"ssn", true}, {"S.S.N", true}, {"session_id", true}, {"SESSION-ID", true}, {"sessionId", true},
		{"password", true}, {"Password", true}, {"db_password", true}, {"passwd", true},
		{"api_key", true}, {"API-KEY", true}, {"apiKey", true}, {"x-api-key", true},
		{"token", true}, {"access_token", true}, {"refreshToken", true}, {"secret", true},
		{"client_secret", true}, {"authorization", true}, {"Proxy-Authorization", true},
		{"private_key", true}, {"aws_secret_access_key", true},
		{"", false}, {"user", false}, {"token_count", false}, {"tokens", false}, {"author", false},
		{"secret_name", false}, {"trace_id", false}, {"key", false}, {"user_ssn", false},
	} {
		if got := s.SensitiveKey(tc.key); got != tc.want {
			t.Errorf("SensitiveKey(%q) = %v, want %v", tc.key, got, tc.want)
		}
	}
}

func TestNewSanitizerErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		opts SanitizerOptions
		want string
	}{
		{"bad regex", SanitizerOptions{Patterns: []Pattern{{Name: "ticket", Regex: `TCK-[0-9`}}},
			`sanitize pattern "ticket": error parsing regexp: missing closing ]`},
		{"empty name", SanitizerOptions{Patterns: []Pattern{{Regex: `x`}}}, "empty name"},
		{"bad name", SanitizerOptions{Patterns: []Pattern{{Name: "a b", Regex: `x`}}}, `sanitize pattern "a b": name may only`},
		{"empty regex", SanitizerOptions{Patterns: []Pattern{{Name: "t"}}}, `sanitize pattern "t": empty regex`},
		{"empty match", SanitizerOptions{Patterns: []Pattern{{Name: "t", Regex: `x*`}}}, `sanitize pattern "t": regex "x*" matches the empty string`},
		{"empty key", SanitizerOptions{RedactKeys: []string{"-_"}}, `sanitize redact key "-_"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			s, err := NewSanitizer(tc.opts)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("NewSanitizer() = %v, %v; want error containing %q", s, err, tc.want)
			}
		})
	}
}

func TestSanitizerZeroWidthMatchesSkipped(t *testing.T) {
	t.Parallel()
	// `\bx?` cannot match "" on its own but matches empty at word boundaries.
	s := mustSanitizer(t, SanitizerOptions{Patterns: []Pattern{{Name: "x", Regex: `\bx?y`}}})
	if got, want := s.String("ab y xy"), "ab [x] [x]"; got != want {
		t.Fatalf("got %q want %q", got, want)
	}
}

func TestSanitizerStringNoAllocWhenClean(t *testing.T) {
	s := mustSanitizer(t, SanitizerOptions{Patterns: []Pattern{{Name: "ticket", Regex: `TCK-\d+`}}})
	in := "2024-06-10T12:30:45.123Z INFO worker started job=nightly queue=default attempt=1 " +
		"duration=1m30s trace_id=4bf92f3577b34da6a3ce929d0e0e4736 ver=1.2.3 msg: token_count=3 ok 12:30:45 std::x"
	var out string
	allocs := testing.AllocsPerRun(200, func() { out = s.String(in) })
	if allocs != 0 {
		t.Errorf("String allocated %.1f times on a clean line", allocs)
	}
	if unsafe.StringData(out) != unsafe.StringData(in) || out != in {
		t.Errorf("String did not return its input unchanged")
	}
	if allocs := testing.AllocsPerRun(200, func() { _ = s.SensitiveKey("Some-Header.Name") }); allocs != 0 {
		t.Errorf("SensitiveKey allocated %.1f times", allocs)
	}
}

func TestSanitizerNil(t *testing.T) {
	t.Parallel()
	var s *Sanitizer
	if got := s.String("password=x a@example.com"); got != "password=[redacted] [email]" {
		t.Fatalf("nil sanitizer: %q", got)
	}
	if !s.SensitiveKey("token") {
		t.Fatal("nil sanitizer: token not sensitive")
	}
}

func TestSanitizerConcurrent(t *testing.T) {
	t.Parallel()
	s := mustSanitizer(t, SanitizerOptions{Patterns: []Pattern{{Name: "ticket", Regex: `TCK-\d+`}}})
	const in = "alice@example.com 10.0.0.1 password=x TCK-1 fe80::1"
	const want = "[email] [ipv4] password=[redacted] [ticket] [ipv6]"
	var wg sync.WaitGroup
	errs := make(chan string, 8)
	for range 8 {
		wg.Go(func() {
			for range 200 {
				if got := s.String(in); got != want {
					errs <- got
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for got := range errs {
		t.Errorf("concurrent String = %q, want %q", got, want)
	}
}

type testStruct struct {
	Email    string `json:"email"`
	Password string `json:"password"`
	N        int    `json:"n"`
}

type namedString string

func TestSanitizerMap(t *testing.T) {
	t.Parallel()
	s := mustSanitizer(t, SanitizerOptions{})
	ts := time.Date(2024, 6, 10, 12, 30, 45, 0, time.UTC)
	in := map[string]any{
		"job":      "nightly",
		"password": "hunter2",
		"n":        42,
		"ok":       true,
		"nil":      nil,
		"at":       ts,
		"took":     time.Second,
		"note":     "mail alice@example.com from 10.0.0.1",
		"err":      errors.New("dial 10.0.0.1:5432: refused"),
		"headers":  map[string]string{"Authorization": "Bearer abc", "Accept": "a@example.com"},
		"nested": map[string]any{
			"list":   []any{"bob@example.com", 1, map[string]any{"token": "t"}},
			"tags":   []string{"x", "10.0.0.2"},
			"secret": map[string]any{"a": "b"},
		},
		"records":         []map[string]any{{"api_key": "k", "v": "c@example.com"}},
		"struct":          testStruct{Email: "d@example.com", Password: "p", N: 1},
		"named":           namedString("e@example.com"),
		"bytes":           []byte("f@example.com"),
		"g@example.com":   "key is an email",
		"h@example.com":   "another",
		"[email]":         "literal placeholder key",
		"client_password": nil,
	}
	got := s.Map(in)
	want := map[string]any{
		"job":      "nightly",
		"password": "[redacted]",
		"n":        42,
		"ok":       true,
		"nil":      nil,
		"at":       ts,
		"took":     time.Second,
		"note":     "mail [email] from [ipv4]",
		"err":      "dial [ipv4]:5432: refused",
		"headers":  map[string]string{"Authorization": "[redacted]", "Accept": "[email]"},
		"nested": map[string]any{
			"list":   []any{"[email]", 1, map[string]any{"token": "[redacted]"}},
			"tags":   []string{"x", "[ipv4]"},
			"secret": "[redacted]",
		},
		"records":         []map[string]any{{"api_key": "[redacted]", "v": "[email]"}},
		"struct":          map[string]any{"email": "[email]", "password": "[redacted]", "n": json.Number("1")},
		"named":           namedString("[email]"),
		"bytes":           []byte("[email]"),
		"[email]":         "literal placeholder key",
		"[email]#2":       "key is an email",
		"[email]#3":       "another",
		"client_password": "[redacted]",
	}
	if g, w := fmt.Sprintf("%#v", got), fmt.Sprintf("%#v", want); g != w {
		t.Fatalf("Map:\n got %s\nwant %s", g, w)
	}
	if in["password"] != "hunter2" || in["nested"].(map[string]any)["tags"].([]string)[1] != "10.0.0.2" {
		t.Fatal("Map modified its input")
	}
	if s.Map(nil) != nil {
		t.Fatal("Map(nil) != nil")
	}
}

func TestSanitizerMapDepthLimit(t *testing.T) {
	t.Parallel()
	s := mustSanitizer(t, SanitizerOptions{})
	cyclic := map[string]any{}
	cyclic["self"] = cyclic
	out := s.Map(cyclic)
	depth := 0
	for cur := any(out); ; depth++ {
		m, ok := cur.(map[string]any)
		if !ok {
			if cur != "[truncated]" {
				t.Fatalf("innermost = %#v", cur)
			}
			break
		}
		cur = m["self"]
	}
	if depth < 10 || depth > 2*sanitizeMaxDepth {
		t.Fatalf("depth %d", depth)
	}
}

func BenchmarkSanitizer(b *testing.B) {
	s := mustSanitizer(b, SanitizerOptions{})
	cases := []struct{ name, in string }{
		{"clean", "2024-06-10T12:30:45.123456Z INFO run finished job=nightly-backup node=node-3 " +
			"run_id=018f6b2c-6d0a-7c3e-9a4b-1f2e3d4c5b6a attempt=2 duration=1m30.5s " +
			"trace_id=4bf92f3577b34da6a3ce929d0e0e4736 status=success exit=0"},
		{"email_ip", "2024-06-10T12:30:45.123456Z WARN login failed user=alice@example.com " +
			"client=203.0.113.9:52114 job=nightly-backup attempt=2 trace_id=4bf92f3577b34da6a3ce929d0e0e4736"},
		{"json_record", `{"run_id":"018f6b2c-6d0a-7c3e-9a4b-1f2e3d4c5b6a","job":"nightly-backup",` +
			`"started_at":"2024-06-10T12:30:45Z","env":{"DB_HOST":"10.0.0.7","DB_PASSWORD":"hunter2",` +
			`"NOTIFY":"ops@example.com"},"args":["--verbose","--since","2024-06-01"],"exit_code":0,` +
			`"output":"backup of 1204 files done in 1m30s"}`},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(c.in)))
			b.ReportAllocs()
			for b.Loop() {
				_ = s.String(c.in)
			}
		})
	}
}

// TestSanitizeKeyShapes: values after a key in the shapes a tester found
// unmasked (attack 3, B5): every auth-param of Digest and AWS4, quoted Basic
// credentials, Go's ":=", flags, tabs, cookies, XML elements, "pass".
func TestSanitizeKeyShapes(t *testing.T) {
	t.Parallel()
	runCases(t, mustSanitizer(t, SanitizerOptions{}), []sanitizeCase{
		{"digest", `Proxy-Authorization: Digest username="u", response="S3KRITc1"`, `Proxy-Authorization: Digest [redacted]`},
		{"digest, then text", `Authorization: Digest username="u", nc=00000001, response="6629f" done`, `Authorization: Digest [redacted] done`},
		{"aws4", "Authorization: AWS4-HMAC-SHA256 Credential=AKID/2015/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=S3KRITd7",
			"Authorization: AWS4-HMAC-SHA256 [redacted]"},
		// Attack 32, S6: every real SigV4 header lists its SignedHeaders
		// with ';', where masking stopped, leaving the Signature.
		{"aws4 signed headers", "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=content-type;host;x-amz-date, Signature=S3KRITs6",
			"Authorization: AWS4-HMAC-SHA256 [redacted]"},
		{"aws4 signed headers, no key", "x AWS4-HMAC-SHA256 Credential=AKID/x/aws4_request, SignedHeaders=host;x-amz-date, Signature=S3KRITs6b end",
			"x AWS4-HMAC-SHA256 [redacted] end"},
		// Attack 32, S7: a value that starts with a character that would
		// end it; an empty value before the next key stays.
		{"value starts with &", "level=info msg=login password=&S3KRITs7 user=bob", "level=info msg=login password=[redacted] user=bob"},
		{"value starts with <", "password=<S3KRITs7b>", "password=[redacted]"},
		{"value starts with , ; )", "DB_PASSWORD: ,k9L password=;k9M token=)k9N", "DB_PASSWORD: [redacted] password=[redacted] token=[redacted]"},
		{"empty query value", "https://h/x?token=&x=1", "https://h/x?token=&x=1"},
		{"empty value, then a key", "password=,user=bob", "password=,user=bob"},
		{"basic quoted", `Authorization: Basic "S3KRITg5"`, `Authorization: Basic "[redacted]"`},
		{"basic token68 padding", "Authorization: Basic dXNlcjpwYXNz==", "Authorization: Basic [redacted]"},
		{"go short assignment", "password := S3KRITf5", "password := [redacted]"},
		{"fat arrow", `{"password" => "x1"}`, `{"password" => "[redacted]"}`},
		{"flags", "run --token S3KRIT --password 'a b' -v", "run --token [redacted] --password '[redacted]' -v"},
		{"flag then flag", "--token --verbose", "--token --verbose"},
		{"switch", "--no-password foo", "--no-password foo"},
		{"flag not sensitive", "--token-ttl 5m --password-file /run/pw", "--token-ttl 5m --password-file /run/pw"},
		{"tab", "login\tbob\npassword\tS3KRIT\n", "login\tbob\npassword\t[redacted]\n"},
		{"spaces only", "passphrase S3KRIT", "passphrase S3KRIT"},
		{"prose", "Enter passphrase for key '/root/.ssh/id_ed25519':", "Enter passphrase for key '/root/.ssh/id_ed25519':"},
		{"set-cookie", "Set-Cookie: sid=S3KRIT; Path=/; HttpOnly", "Set-Cookie: [redacted]"},
		{"cookie", "Cookie: a=1; b=S3KRIT\nnext", "Cookie: [redacted]\nnext"},
		{"cookie json", `{"cookie":"a=1; b=2","n":1}`, `{"cookie":"[redacted]","n":1}`},
		{"xml", "<password>S3KRIT</password>", "<password>[redacted]</password>"},
		{"xml namespace attrs", `<db:password enc="none">S3KRIT</db:password>`, `<db:password enc="none">[redacted]</db:password>`},
		{"xml cdata", "<secret><![CDATA[a<b S3]]></secret>", "<secret><![CDATA[[redacted]]]></secret>"},
		{"xml empty and self-closing", "<password></password><token/>x", "<password></password><token/>x"},
		{"xml not sensitive", "<user>bob</user>", "<user>bob</user>"},
		{"pass key", "user: bob pass: S3KRIT", "user: bob pass: [redacted]"},
		{"pass compound", "DB_PASS=S3 smtpPass: x mail.pass=y", "DB_PASS=[redacted] smtpPass: [redacted] mail.pass=[redacted]"},
		{"pass count", "pass: 12 fail: 0", "pass: 12 fail: 0"},
		{"not pass", "bypass: true compass=north", "bypass: true compass=north"},
	})
}

// A config key path before ": " in a message: a last element named like a
// secret goes in brackets, so the sanitizer leaves the message after it.
func TestMessagePath(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"jobs[0].params.env.PASSWORD":         "jobs[0].params.env[PASSWORD]",
		"observability.tracing.headers.token": "observability.tracing.headers[token]",
		"jobs[0].timezone":                    "jobs[0].timezone",
		"password":                            "password",
		`jobs[0].params.env["a.password"]`:    `jobs[0].params.env["a.password"]`,
	} {
		if got := MessagePath(in); got != want {
			t.Errorf("MessagePath(%q) = %q, want %q", in, got, want)
		}
		msg := MessagePath(in) + ": expected string, got number"
		if strings.HasSuffix(want, "]") && !strings.HasSuffix(want, `"]`) && DefaultSanitizer().String(msg) != msg {
			t.Errorf("String(%q) = %q: the message is masked", msg, DefaultSanitizer().String(msg))
		}
	}
}

// Credentials after an auth scheme with no Authorization key in front (a
// header logged without its name): quoted ones, and two or more auth-params
// after a scheme that takes them, are masked; a scheme's name in prose is
// left alone (attack 9, finding 9).
func TestSanitizeBareAuthSchemes(t *testing.T) {
	t.Parallel()
	runCases(t, mustSanitizer(t, SanitizerOptions{}), []sanitizeCase{
		{"digest", `B2 Digest username="u", realm="r", response="resp-b2"`, `B2 Digest [redacted]`},
		{"aws4", "B6 AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20150830/us-east-1/iam/aws4_request, SignedHeaders=host, Signature=sig-b6 end",
			"B6 AWS4-HMAC-SHA256 [redacted] end"},
		{"basic quoted", `B8 Basic "quotedbasic-b8" x`, `B8 Basic "[redacted]" x`},
		{"www-authenticate", `WWW-Authenticate: Digest realm="api", nonce="n0nce", qop="auth"`, `WWW-Authenticate: Digest [redacted]`},
		{"keyed stays as it was", `Authorization: Digest username="u", response="x"`, `Authorization: Digest [redacted]`},
		{"prose", "Basic usage: see Token count=5 and Digest mode=fast; the digest username=\"u\", realm=\"r\"",
			"Basic usage: see Token count=5 and Digest mode=fast; the digest username=\"u\", realm=\"r\""},
		{"glued", `xDigest username="u", realm="r"`, `xDigest username="u", realm="r"`},
	})
}
