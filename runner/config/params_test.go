package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Attack 17, K6: params a run cannot carry (it sends them as a protobuf
// Struct) are refused at their line when the config is loaded, whatever
// the task's schema: an unquoted date (YAML's timestamp), in a list and an
// object too, bytes that are not text (!!binary), and (attack 18, R7) an
// integer a double cannot hold exactly. Before, `pacer validate` passed them
// and every run failed "invalid params: proto: invalid type: time.Time".
// Attack 16, G8: so is a sanitize pattern that matches the empty string,
// which `pacer validate` passed and the runner refused when it was built
// (exit 1, after a dump of fx's dependency graph).
func TestParamsThatCannotTravelAreRefusedAtTheirLine(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "pacer.yaml")
	src := y(
		"observability:",
		"  sanitize:",
		"    patterns:",
		"      - {name: ticket, regex: 'TICKET-[0-9]+'}",
		"      - {name: empty, regex: 'a|'}",
		"jobs:",
		"  - id: dated",
		"    plugin: py",
		"    task: raw",
		"    schedule: '@every 1s'",
		"    params:",
		"      since: 2026-01-01",
		"      quoted: '2026-01-01'",
		"      days: [2026-01-02, x]",
		"      bin: !!binary /w==",
		"      nested: {1: one, when: 2026-01-03 10:00:00}",
		"      id: 9007199254740993",
		"      neg: -18446744073709551",
		"  - id: fine",
		"    plugin: py",
		"    task: raw",
		"    schedule: '@every 1s'",
		"    params: {n: 1, f: 1.5, b: true, s: x, l: [1, '2026-01-01'], o: {k: ~}, big: 9007199254740992, id: '9007199254740993'}",
	)
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	deep := "x: " + strings.Repeat("{a: ", 31) + "1" + strings.Repeat("}", 31)
	ok := "x: " + strings.Repeat("{a: ", 29) + "1" + strings.Repeat("}", 29)
	src = append(src, y(
		"  - id: deep",
		"    plugin: py",
		"    task: raw",
		"    schedule: '@every 1s'",
		"    params: {"+deep+"}",
		"  - id: deep-enough",
		"    plugin: py",
		"    task: raw",
		"    schedule: '@every 1s'",
		"    params: {"+ok+"}",
		"  - id: big",
		"    plugin: py",
		"    task: raw",
		"    schedule: '@every 1s'",
		"    params: {blob: "+strings.Repeat("B", 1<<20)+"}",
	)...)
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("Load: %v, want a config error", err)
	}
	got := err.Error()
	for _, want := range []string{
		`pacer.yaml:5: observability.sanitize.patterns[1].regex: "a|" matches the empty string`,
		`pacer.yaml:12: jobs[0].params.since: YAML reads this as a timestamp, which params cannot carry; quote it to pass it as text: "2026-01-01T00:00:00Z"`,
		`pacer.yaml:14: jobs[0].params.days[0]: YAML reads this as a timestamp`,
		`pacer.yaml:15: jobs[0].params.bin: is not UTF-8 text`,
		`pacer.yaml:16: jobs[0].params.nested.when: YAML reads this as a timestamp`,
		`pacer.yaml:17: jobs[0].params.id: 9007199254740993 is too large to pass as a number exactly`,
		`pacer.yaml:18: jobs[0].params.neg: -18446744073709551 is too large to pass as a number exactly`,
		`pacer.yaml:28: jobs[2].params.x.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a.a: nested more than 30 levels deep`,
		`jobs[4].params: 1048587 bytes as JSON; at most 1048576`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("error %q lacks %q", got, want)
		}
	}
	for _, not := range []string{"params.quoted", "jobs[1]", "jobs[3]", "patterns[0]"} {
		if strings.Contains(got, not) {
			t.Errorf("error %q names %s, which is fine", got, not)
		}
	}
}

// Attack 19, P1: an integer past 64 bits is no int to yaml/v3: it reads
// 100000000000000000000 as a float and 0x10000000000000000 as a string, so
// the check for integers beyond ±2^53 passed them, and every run of a Go
// task with an int field failed ("cannot unmarshal number ... into int")
// while a Python task got another integer. YAML's infinities and NaN, which
// JSON cannot carry, passed for a task without a typed field; a NaN made
// every reload see its job as changed (NaN != NaN), stopping its retries.
// All are refused at their line now; what a double holds exactly is not.
func TestParamsBeyondWhatJSONCarriesAreRefusedAtTheirLine(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "pacer.yaml")
	src := y(
		"jobs:",
		"  - id: big",
		"    plugin: py",
		"    task: raw",
		"    schedule: '@every 1s'",
		"    params:",
		"      dec: 100000000000000000000",
		"      neg: -18446744073709551616",
		"      sep: 1_000_000_000_000_000_000_000",
		"      hex: 0x10000000000000000",
		"      oct: 0o2000000000000000000000",
		"      list: [1, 18446744073709551616]",
		"      deep: {n: +123456789012345678901234567890}",
		"      inf: .inf",
		"      ninf: -.Inf",
		"      nan: .nan",
		"  - id: fine",
		"    plugin: py",
		"    task: raw",
		"    schedule: '@every 1s'",
		"    params:",
		"      f: 1e20",
		"      tagged: !!float 100000000000000000000",
		"      quoted: '100000000000000000000'",
		"      text: \"0x10000000000000000\"",
		"      edge: -9007199254740992",
		"      word: 0x1G",
		"      inftext: '.inf'",
	)
	if err := os.WriteFile(path, src, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := Load(path)
	var cerr *Error
	if !errors.As(err, &cerr) {
		t.Fatalf("Load: %v, want a config error", err)
	}
	got := err.Error()
	const tooLarge = " is too large to pass as a number exactly (params carry numbers as doubles: beyond ±2^53 they are rounded); quote it to pass it as text"
	for _, want := range []string{
		`pacer.yaml:7: jobs[0].params.dec: 100000000000000000000` + tooLarge,
		`pacer.yaml:8: jobs[0].params.neg: -18446744073709551616` + tooLarge,
		`pacer.yaml:9: jobs[0].params.sep: 1_000_000_000_000_000_000_000` + tooLarge,
		`pacer.yaml:10: jobs[0].params.hex: 0x10000000000000000` + tooLarge,
		`pacer.yaml:11: jobs[0].params.oct: 0o2000000000000000000000` + tooLarge,
		`pacer.yaml:12: jobs[0].params.list[1]: 18446744073709551616` + tooLarge,
		`pacer.yaml:13: jobs[0].params.deep.n: +123456789012345678901234567890` + tooLarge,
		`pacer.yaml:14: jobs[0].params.inf: YAML reads this as infinity, which params (JSON's values) cannot carry; quote it to pass it as text`,
		`pacer.yaml:15: jobs[0].params.ninf: YAML reads this as infinity`,
		`pacer.yaml:16: jobs[0].params.nan: YAML reads this as NaN (not a number), which params (JSON's values) cannot carry; quote it to pass it as text`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("error %q lacks %q", got, want)
		}
	}
	if strings.Contains(got, "jobs[1]") {
		t.Errorf("error %q names jobs[1], which is fine", got)
	}
	if n := len(cerr.Problems); n != 10 {
		t.Errorf("%d problems, want 10: %q", n, got)
	}
}

func TestIntegerBeyondDouble(t *testing.T) {
	t.Parallel()
	for lit, want := range map[string]bool{
		"9007199254740992": false, "9007199254740993": true, "-9007199254740993": true,
		"0x20000000000000": false, "0x20000000000001": true, "0b1": false,
		"100000000000000000000": true, "0x10000000000000000": true, "1_0000_0000_0000_0000": true,
		"1e20": false, "99999999999999999999x": false, "0x": false, "+-1": false, "": false,
		strings.Repeat("9", 1<<20): true,
	} {
		if got := integerBeyondDouble(lit); got != want {
			t.Errorf("integerBeyondDouble(%.30q) = %v, want %v", lit, got, want)
		}
	}
}

// A value yaml/v3 cannot decode as its tag says is quoted in its message;
// under a key named like a secret it is redacted there (attack 32, S8:
// "env[DB_PASSWORD]: cannot decode !!str `hunter2` as a !!int", in
// `pacer validate` and in a rejected reload's log line). A file that is not
// UTF-8 is refused at the line that is not (C1: it said line 1).
func TestDecodeErrorsQuoteNoSecretAndNameTheirLine(t *testing.T) {
	t.Parallel()
	src := y(
		"jobs:",
		"  - id: a",
		"    plugin: shell",
		"    task: exec",
		"    schedule: '@every 5s'",
		"    params:",
		"      command: ['true']",
		"      env: {DB_PASSWORD: !!int \"hunter2TAG6\", API_TOKEN: !!timestamp \"s3cretTAG9\", PORT: !!int \"eighty\"}",
	)
	_, err := Parse("tagged.yaml", src)
	if err == nil {
		t.Fatal("a config with values that do not match their tags was accepted")
	}
	got := err.Error()
	for _, leak := range []string{"hunter2TAG6", "s3cretTAG9"} {
		if strings.Contains(got, leak) {
			t.Errorf("error %q quotes %s", got, leak)
		}
	}
	for _, want := range []string{"tagged.yaml:8: jobs[0].params.env[DB_PASSWORD]: cannot decode !!str `[redacted]` as a !!int", "`eighty`"} {
		if !strings.Contains(got, want) {
			t.Errorf("error %q lacks %q", got, want)
		}
	}
	bad := y(
		"jobs:",
		"  - id: a",
		"    plugin: shell",
		"    task: exec",
		"    schedule: '@every 5s'",
		"    params: {command: [\"\xff\xfe\"]}",
	)
	if _, err := Parse("w.yaml", bad); err == nil || !strings.HasPrefix(err.Error(), "w.yaml:6: ") {
		t.Errorf("a file not UTF-8 at line 6: %v, want the error at w.yaml:6", err)
	}
}
