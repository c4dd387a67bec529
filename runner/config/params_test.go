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
