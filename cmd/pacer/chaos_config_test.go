//go:build chaos

package main

import (
	"bytes"
	"fmt"
	"os"
	"testing"
	"time"
)

// Scenario 21: the config file of a running leader truncated or
// half-written, as an editor's or a deploy tool's interrupted save leaves
// it: emptied, cut before "jobs:", right after it, inside the job, in the
// middle of a line, and written in two steps (first a version without the
// job, then the whole file). Each broken file is refused with the last good
// config still running; the two-step write is applied whole, never half
// way. The job runs every second throughout: D = 0 and M = 0 (no slot of
// the job goes missing, which it would for as long as a broken file had
// removed it).
func TestChaosConfigTruncated(t *testing.T) {
	skipChaos(t)
	res, ps, path, eps := ledgerScenario(t, 21, 1, "0s")
	p := waitLeader(t, ps, 30*time.Second)
	good, err := os.ReadFile(p.configPath)
	if err != nil {
		t.Fatal(err)
	}
	waitRunsAfter(p, 2, time.Now(), 30*time.Second)
	cut := func(before string) []byte {
		i := bytes.Index(good, []byte(before))
		if i < 0 {
			t.Fatalf("%q not in the config", before)
		}
		return bytes.Clone(good[:i])
	}
	const rejected = "config reload rejected; the last good config keeps running"
	for _, f := range []struct {
		name    string
		content []byte
		want    string // in the rejection's error
	}{
		{"emptied", nil, "jobs: the file is empty"},
		{"cut before jobs:", cut("jobs:"), "jobs: the file lists no jobs"},
		{"cut right after jobs:", cut("  - id: tick"), `jobs: "jobs:" has no value`},
		{"cut inside the job", cut("    task: record"), `jobs[0].task: missing required key "task"`},
		{"cut in the middle of a line", append(cut("    task: record"), "    tas"...),
			fmt.Sprintf("r1.yaml:%d: invalid YAML: could not find expected ':'", bytes.Count(cut("    task: record"), []byte("\n"))+1)},
	} {
		mark := time.Now()
		must(os.WriteFile(p.configPath, f.content, 0o644))
		res.runs++
		lines := p.waitLogs("the rejection of a file "+f.name, 30*time.Second, func(ls []logLine) bool {
			_, ok := firstAfter(ls, mark, msgIs(rejected))
			return ok
		})
		rej, _ := firstAfter(lines, mark, msgIs(rejected))
		if got := rej.str("error"); !bytes.Contains([]byte(got), []byte(f.want)) {
			t.Errorf("file %s: rejected with %q, want it to say %q", f.name, got, f.want)
		}
		waitRunsAfter(p, 2, logTime(rej), 30*time.Second)
		must(os.WriteFile(p.configPath, good, 0o644)) // the last good content: nothing to apply
	}

	// Written in two steps: a version without the job, then (once the
	// runner has seen it) the whole file with a comment more. The first
	// version is never applied.
	mark := time.Now()
	without := append(cut("  - id: tick"), []byte("  - id: other\n    plugin: ledger\n    task: record\n    schedule: \"0 0 0 1 1 *\"\n    params: {path: /dev/null}\n")...)
	must(os.WriteFile(p.configPath, without, 0o644))
	res.runs++
	p.waitLogs("the first step to be noticed", 30*time.Second, func(ls []logLine) bool {
		_, ok := firstAfter(ls, mark, func(l logLine) bool { return bytes.HasPrefix([]byte(l.str("msg")), []byte("config file changed")) })
		return ok
	})
	must(os.WriteFile(p.configPath, append(bytes.Clone(good), "# second step\n"...), 0o644))
	lines := p.waitLogs("the reload", 30*time.Second, func(ls []logLine) bool {
		_, ok := firstAfter(ls, mark, msgIs("config reloaded"))
		return ok
	})
	done, _ := firstAfter(lines, mark, msgIs("config reloaded"))
	if fmt.Sprint(done["added"], done["changed"], done["removed"]) != "[] [] []" {
		t.Errorf("the two-step write applied a change to the jobs: %v", done)
	}
	if l, ok := firstAfter(lines, mark, msgIs("config reload removed jobs")); ok {
		t.Errorf("the first step was applied: %v", l)
	}
	waitRunsAfter(p, 3, logTime(done), 30*time.Second)

	res.finish(t, ps, path, eps)
	if res.M != 0 {
		t.Fatalf("M=%d: slots of the job went missing while the file was broken", res.M)
	}
}
