package observability

import (
	"strings"
	"testing"
	"unicode/utf8"
)

// plantedSecrets are inserted into fuzzed text; none may survive String.
var plantedSecrets = []struct {
	secret string
	leaks  []string // substrings that must not appear in the output
}{
	{"alice@example.com", []string{"alice@example.com"}},
	{"4111 1111 1111 1111", []string{"4111 1111 1111 1111"}},
	{"password=hunter2", []string{"hunter2"}},
	// Beyond the brief's three: one of each remaining class.
	{"10.91.82.73", []string{"10.91.82.73", "91.82"}},
	{"2001:db8::8a2e:370:7334", []string{"8a2e:370:7334", "2001:db8"}},
	{"Bearer zq9xv8w7abc", []string{"zq9xv8w7abc"}},
	{"api_key: qq7ww6ee5", []string{"qq7ww6ee5"}},
	{"https://bob:pw9s3cr3t@db.internal/x", []string{"pw9s3cr3t", "bob:"}},
	{"eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl", []string{"eyJhbGci", "c2lnbmF0dXJl"}},
	{"-----BEGIN PRIVATE KEY----- MIIEvQIBADAN -----END PRIVATE KEY-----", []string{"MIIEvQIBADAN"}},
	{"4111-1111-1111-1111", []string{"4111-1111-1111-1111"}},
	// Bare secrets (issue 11): nothing in front of them.
	{fakeAWS, []string{"IOSFODNN7"}},
	{fakeGitHub, []string{"wWPw5k4aXcaT4f"}},
	{fakeGitLab, []string{"xd8Bn3tRk2vQ9w"}},
	{fakeSlackBot, []string{"263594206564", "FGqddMF8t08v"}},
	{fakeStripe, []string{"4eC39HqLyjWD"}},
	{fakeNPM, []string{"a3Bc5De7Fg9H"}},
	{fakeGoogle, []string{"9tSrke72PouQ"}},
	{"DE89 3704 0044 0532 0130 00", []string{"3704 0044", "0532 0130"}},
	{"GB82WEST12345698765432", []string{"WEST1234", "98765432"}},
	{"+49 30 12345678", []string{"12345678"}},
	{"+1 (415) 555-2671", []string{"555-2671"}},
	// The tester's findings after issue 11.
	{fakeGitHubPATShort, []string{"efghijklmnopqrstuvwxyzABCD"}},
	{fakeSlackHook, []string{"aBcDeFgHiJkLmNoPqRsTuVwX", "T0ABCD1EF"}},
	{"de89370400440532013000", []string{"370400440532"}},
	{"ops%40example.com", []string{"ops%40", "ops@"}},
	{"password%3Dhunter9", []string{"hunter9"}},
}

// plantedMarkers are substrings of the planted secrets; a fuzzed prefix or
// suffix containing one is skipped so that it cannot itself be the leak.
var plantedMarkers = []string{
	"alice", "example", "1111", "hunter", "10.91", "91.82", "82.73", "8a2e", "370", "7334", "2001",
	"zq9", "qq7", "pw9", "bob", "eyJ", "c2ln", "MIIE",
	"IOSF", "wWPw", "xd8B", "2635", "FGqd", "4eC3", "a3Bc", "9tSr", "3704", "0044", "0532", "0130",
	"WEST", "1234", "9876", "5432", "555", "2671", "+",
	"efgh", "aBcD", "T0AB", "ops",
}

// fuzzSanitizer has an operator pattern and key so their code paths are
// fuzzed too.
var fuzzSanitizer = func() *Sanitizer {
	s, err := NewSanitizer(SanitizerOptions{
		RedactKeys: []string{"ssn"},
		Patterns:   []Pattern{{Name: "ticket", Regex: `TCK-[0-9]+`}},
	})
	if err != nil {
		panic(err)
	}
	return s
}()

func FuzzSanitizer(f *testing.F) {
	for _, seed := range [][2]string{
		{"", ""},
		{"user", "logged in"},
		{"password=", "&x=1"},
		{`{"token":"`, `"}`},
		{"token=\"", ""},
		{"bearer", "x"},
		{"Authorization: Basic", "more"},
		{"https://u:p", "@host/x"},
		{"mailto:", ">"},
		{"admin:pw", "@127.0.0.1:23999"},            // user-info without a scheme
		{"Digest username=\"u\", ", "response=\"x"}, // auth-params without a key
		{"Basic \"", "\" [redacted]"},
		{"x:", "@[email]"},
		{"5", "1"},
		{"4111-", "-1111"},
		{"1.2.3.", ".4"},
		{"fe80:", ":1%eth0"},
		{"-----BEGIN RSA PRIVATE KEY-----", "-----END RSA PRIVATE KEY-----"},
		{"eyJhbGciOiJIUzI1NiJ9.", ".sig"},
		{"map[password:", "]"},
		{`\"secret\":\"`, `\"`},
		{"[redacted]", "[email]"},
		{"2024-06-10T12:30:45Z", "trace_id=4bf92f3577b34da6a3ce929d0e0e4736"},
		{"ssn:", "TCK-12"},
		{"\x00\xff", "\xc3"},
		// Found by the fuzzer (see the report in the package history):
		{"0", "0A0"}, // a neighbour group glued to a word hid the card
		{"bearer", ""},
		{"ssn:", ""},                 // "ssn: api_key: x": the first value is the next key
		{"Authorization: Basic", ""}, // ... also after an auth scheme
		{"6000000200", "0"},          // a card window swallowed the "2001" of an IPv6 address
		{"0::%0::0", ""},             // not idempotent: a zone followed by more colons
		{"0.0.0.0..0.0.0.0", ""},     // not idempotent: only the first address of a run was tried
		{"0::00.0.0.0", ""},          // not idempotent: IPv4 tail of a rejected IPv6 run
		{"1::2::1.2.3.4", ""},
		{"::0A.0.0.0.0", ""}, // not idempotent: IPv4 after "hex."
		{"0.0.0.0::0", ""},
		{"::0..0.0.0.0", ""},
		{"0::%-::0", ""},
		{"0::TCK-0", ""}, // a later mask changed the neighbour of a rejected IPv6 candidate
		{"4111111111111111::1", ""},
		{":0.0.0.0:0.0.0.0", ""},
		{"0.0.0.0:0::", ""},
		{"0@0.A\xb70.0.0.0", ""}, // e-mail domain glued to a later-masked IPv4
		{"0.0.0.0:0.0.0.0:0:", ""},
		{"0.0.0.0.", ":0::"},
		{"0.0.0.0.A0.0:0::", ""},
		{"-----BEGIN RSA PRIVATE KEY-----", ""},
		// Bare secrets.
		{"AKIA", "IOSFODNN7EXAMPLE"},
		{"ghp_", "wWPw5k4aXcaT4fNP0UcnZwJUVFk6LO0pINUx"},
		{"xoxb-", "263594206564-x"},
		{"DE89 3704 0044 ", "0532 0130 00"},
		{"+49 30 ", "12345678"},
		{"+44 (0)", "20 7946 0958"},
		{"+1 ", "415 555 2671 4111 1111 1111 1111"},
		// After issue 11: encoded words, webhooks, lower-case IBANs, PEM
		// markers that are not blocks, values that end with their line.
		{"next=%2Fcb%3Faccess_token%3D", "ya29&x=1"},
		{"ops%25", "40example.com"},
		{"https%3A%2F%2Fu%3Ap%40", "h%2Fx"},
		{"hooks.slack.com/services/", "T0ABCD1EF/B0GHIJ2KL/aBcDeFgHiJkLmNoPqRsTuVwX"},
		{"de89 3704 ", "0044 0532 0130 00"},
		{`private_key="-----BEGIN PRIVATE KEY-----"`, "\nline"},
		{"-----BEGIN PRIVATE KEY-----\nMIIE", "\n-----END PRIVATE KEY-----"},
		{"password=\"abc", "\nuser=bob"},
		{"PACER_FENCING_TOKEN=", "42"},
		// A long line's pieces, cut inside a JWT or an authority (K11).
		{"L2 eyJhbGciOiJIUzI1NiJ9.eyJzdWIi…", "eyJ…Il19.sig tail"},
		{"https://admin:pw…", "https://…pw@db/x"},
	} {
		f.Add(seed[0], seed[1])
	}
	f.Fuzz(func(t *testing.T, prefix, suffix string) {
		s := fuzzSanitizer

		// Never panics, and is stable on its own output.
		for _, in := range []string{prefix, suffix, prefix + suffix} {
			out := s.String(in)
			if again := s.String(out); again != out {
				t.Fatalf("not idempotent:\n in %q\nout %q\nagain %q", in, out, again)
			}
			if utf8.ValidString(in) && !utf8.ValidString(out) {
				t.Fatalf("valid UTF-8 became invalid: %q -> %q", in, out)
			}
		}

		// Planted secrets, separated from the fuzzed text by spaces, never
		// survive.
		for _, p := range plantedSecrets {
			skip := false
			for _, l := range plantedMarkers {
				if strings.Contains(prefix, l) || strings.Contains(suffix, l) {
					skip = true
				}
			}
			if skip {
				continue
			}
			in := prefix + " " + p.secret + " " + suffix
			out := s.String(in)
			for _, l := range p.leaks {
				if strings.Contains(out, l) {
					t.Fatalf("planted %q leaked:\n in %q\nout %q", p.secret, in, out)
				}
			}
		}
	})
}
