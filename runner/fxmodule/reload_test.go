package fxmodule

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/config"
)

// reloadBundle is a reloader on a file in a temporary directory, with a
// real runner (jobs only: no coordinator needed to set them) and no plugins
// to ask.
type reloadBundle struct {
	rl   *reloader
	r    *runner.Runner
	path string
	log  *logBuffer
	t0   time.Time
}

func setupReload(t *testing.T, initial string) *reloadBundle {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pacer.yaml")
	writeFile(t, path, initial)
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	buf := &logBuffer{} // look logs before it returns, on the test's goroutine
	log := slog.New(slog.NewJSONHandler(buf, nil))
	m, err := observability.NewMetrics("test")
	if err != nil {
		t.Fatal(err)
	}
	r := runner.New(runner.Options{Node: "n1", Logger: log, Metrics: m})
	r.SetJobs(Jobs(cfg))
	rl := &reloader{path: path, current: cfg, runner: r, log: log, poll: ReloadPoll, settle: ReloadSettle,
		check: func(context.Context, *config.Config) error { return nil }}
	data, _ := os.ReadFile(path)
	rl.remember(data)
	return &reloadBundle{rl: rl, r: r, path: path, log: buf, t0: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)}
}

// look runs one poll of the file at t0+at.
func (b *reloadBundle) look(at time.Duration) { b.rl.look(context.Background(), b.t0.Add(at)) }

func (b *reloadBundle) jobIDs() []string {
	var ids []string
	for _, j := range b.r.Jobs() {
		ids = append(ids, j.ID)
	}
	return ids
}

func jobsYAML(ids ...string) string {
	var s strings.Builder
	s.WriteString("jobs:\n")
	for _, id := range ids {
		fmt.Fprintf(&s, "  - id: %s\n    plugin: shell\n    task: exec\n    schedule: '@every 1h'\n", id)
	}
	return s.String()
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
}

// A file written in two steps is applied only once it has stopped changing:
// the half that a read in between sees is never applied.
func TestReloadWaitsForTheFileToSettle(t *testing.T) {
	t.Parallel()
	b := setupReload(t, jobsYAML("a", "b", "c", "d"))
	full := jobsYAML("a", "b", "c", "d", "e")
	half := full[:strings.Index(full, "  - id: c")] // valid YAML: jobs a and b

	writeFile(t, b.path, half)
	b.look(0)
	b.look(ReloadSettle - time.Millisecond)
	if got := b.jobIDs(); len(got) != 4 {
		t.Fatalf("applied before the file settled: %v", got)
	}
	writeFile(t, b.path, full) // the second step: the wait starts again
	b.look(ReloadSettle)
	b.look(2*ReloadSettle - time.Millisecond)
	if got := b.jobIDs(); len(got) != 4 {
		t.Fatalf("applied before the second step settled: %v", got)
	}
	b.look(2 * ReloadSettle)
	if got := b.jobIDs(); !slices.Equal(got, []string{"a", "b", "c", "d", "e"}) {
		t.Fatalf("after settling: %v", got)
	}
	if n := len(b.log.lines("config reloaded")); n != 1 {
		t.Fatalf("%d reloads, want 1:\n%s", n, b.log)
	}
	// A change that is undone before it settles applies nothing.
	writeFile(t, b.path, half)
	b.look(3 * ReloadSettle)
	writeFile(t, b.path, full)
	b.look(4 * ReloadSettle)
	b.look(5 * ReloadSettle)
	if n := len(b.log.lines("config reloaded")); n != 1 {
		t.Fatalf("a change undone before it settled was applied:\n%s", b.log)
	}
}

// Emptied or cut before its jobs, the file is refused; the jobs stay.
func TestReloadRefusesAFileWithoutItsJobs(t *testing.T) {
	t.Parallel()
	for name, content := range map[string]string{
		"empty":                 "",
		"cut before jobs:":      "http: {listen: 127.0.0.1:9464}\n",
		"cut right after jobs:": "http: {listen: 127.0.0.1:9464}\njobs:\n",
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			b := setupReload(t, jobsYAML("a", "b"))
			writeFile(t, b.path, content)
			b.look(0)
			b.look(ReloadSettle)
			if got := b.jobIDs(); !slices.Equal(got, []string{"a", "b"}) {
				t.Fatalf("jobs after the reload: %v", got)
			}
			rej := b.log.lines("config reload rejected; the last good config keeps running")
			if len(rej) != 1 || !strings.Contains(rej[0]["error"].(string), `write "jobs: []" to remove every job`) {
				t.Fatalf("rejections: %v", rej)
			}
			// Refused once, not again at every poll.
			b.look(2 * ReloadSettle)
			b.look(3 * ReloadSettle)
			if n := len(b.log.lines("config reload rejected; the last good config keeps running")); n != 1 {
				t.Fatalf("%d rejections of one content, want 1", n)
			}
		})
	}
}

// A reload whose plugins.checksums pins a name no job uses and no binary
// has (a mistyped "shel") is rejected, as pacer run refuses that file: the
// next start would (attack 14, K5).
func TestReloadRefusesAChecksumForNoPlugin(t *testing.T) {
	t.Parallel()
	b := setupReload(t, jobsYAML("a"))
	plugins := fmt.Sprintf("plugins: {dir: %s, checksums: {shel: 'sha256:%s'}}\n", t.TempDir(), strings.Repeat("0", 64))
	writeFile(t, b.path, plugins+jobsYAML("a", "b"))
	b.look(0)
	b.look(ReloadSettle)
	if got := b.jobIDs(); !slices.Equal(got, []string{"a"}) {
		t.Fatalf("jobs after the reload: %v", got)
	}
	rej := b.log.lines("config reload rejected; the last good config keeps running")
	if len(rej) != 1 || !strings.Contains(rej[0]["error"].(string), `pacer.yaml:1: plugins.checksums.shel: no job uses plugin "shel" and it has no binary`) ||
		!strings.Contains(rej[0]["error"].(string), `(did you mean "shell"?)`) {
		t.Fatalf("rejections: %v\n%s", rej, b.log)
	}
}

// A save cut off at the end can leave valid YAML: a command's last argument
// shortened. The file no longer ends with a newline, as the applied one
// did: it is refused until the save is finished. A file that never ended
// with a newline (some editors write none) reloads as usual.
func TestReloadRefusesAFileCutOffAtTheEnd(t *testing.T) {
	t.Parallel()
	full := jobsYAML("a") + "    params:\n      command:\n        - /bin/echo\n        - would-remove\n        - /tmp/scratch/old-reports\n"
	b := setupReload(t, jobsYAML("a"))
	writeFile(t, b.path, full[:len(full)-len("atch/old-reports\n")]) // ends "- /tmp/scr"
	b.look(0)
	b.look(ReloadSettle)
	rej := b.log.lines("config reload rejected; the last good config keeps running")
	if len(rej) != 1 || !strings.Contains(rej[0]["error"].(string), "no longer ends with a newline") {
		t.Fatalf("a file cut off at the end: rejections %v\n%s", rej, b.log)
	}
	if j := b.r.Jobs(); len(j) != 1 || len(j[0].Params) != 0 {
		t.Fatalf("jobs after the cut file: %+v", j)
	}
	writeFile(t, b.path, full) // the save finished
	b.look(2 * ReloadSettle)
	b.look(3 * ReloadSettle)
	if n := len(b.log.lines("config reloaded")); n != 1 {
		t.Fatalf("the finished save: %d reloads\n%s", n, b.log)
	}

	b = setupReload(t, strings.TrimSuffix(jobsYAML("a"), "\n"))
	writeFile(t, b.path, strings.TrimSuffix(jobsYAML("a", "b"), "\n"))
	b.look(0)
	b.look(ReloadSettle)
	if got := b.jobIDs(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("a file that never ended with a newline: jobs %v\n%s", got, b.log)
	}
}

// Every reload says what it added, changed and removed; removing jobs is a
// WARN line naming them; "jobs: []" is accepted with a WARN line that says
// how many were removed.
func TestReloadLogsAddedChangedRemoved(t *testing.T) {
	t.Parallel()
	b := setupReload(t, jobsYAML("keep", "change", "drop1", "drop2"))
	// "keep" moves down the file; "change" gets another schedule.
	next := strings.Replace(jobsYAML("new", "change", "keep"), "jobs:\n", "jobs:\n# the jobs\n", 1)
	next = strings.Replace(next, "id: change\n    plugin: shell\n    task: exec\n    schedule: '@every 1h'", "id: change\n    plugin: shell\n    task: exec\n    schedule: '@every 2h'", 1)
	writeFile(t, b.path, next)
	b.look(0)
	b.look(ReloadSettle)
	done := b.log.lines("config reloaded")
	if len(done) != 1 || fmt.Sprint(done[0]["added"], done[0]["changed"], done[0]["removed"]) != "[new] [change] [drop1 drop2]" {
		t.Fatalf("config reloaded: %v", done)
	}
	warn := b.log.lines("config reload removed jobs")
	if len(warn) != 1 || warn[0]["level"] != "WARN" || fmt.Sprint(warn[0]["removed"]) != "[drop1 drop2]" || warn[0]["removed_count"] != 2.0 {
		t.Fatalf("removal warning: %v", warn)
	}

	writeFile(t, b.path, "jobs: []\n")
	b.look(2 * ReloadSettle)
	b.look(3 * ReloadSettle)
	if got := b.jobIDs(); len(got) != 0 {
		t.Fatalf("jobs: [] left %v", got)
	}
	all := b.log.lines("config reload removed every job")
	if len(all) != 1 || all[0]["level"] != "WARN" || all[0]["removed_count"] != 3.0 {
		t.Fatalf("jobs: [] warning: %v\n%s", all, b.log)
	}
}

// A reload that removes thousands of jobs logs a bounded line.
func TestReloadLogLineIsBounded(t *testing.T) {
	t.Parallel()
	var ids []string
	for i := range 5000 {
		ids = append(ids, fmt.Sprintf("job-%04d", i))
	}
	b := setupReload(t, jobsYAML(ids...))
	writeFile(t, b.path, "jobs: []\n")
	b.look(0)
	b.look(ReloadSettle)
	all := b.log.lines("config reload removed every job")
	if len(all) != 1 || all[0]["removed_count"] != 5000.0 || len(all[0]["removed"].([]any)) != maxLoggedJobs+1 {
		t.Fatalf("warning: %v", all)
	}
}

// A reload that adds or removes more jobs than a line lists names the rest
// in further lines of at most maxLoggedJobs IDs, the removed ones at WARN:
// every ID is in the log. (The first line's were all: the others were
// added and removed without a trace, attack 26, P8.)
func TestReloadNamesEveryJobInBoundedLines(t *testing.T) {
	t.Parallel()
	ids := func(prefix string, n int) []string {
		var out []string
		for i := range n {
			out = append(out, fmt.Sprintf("%s-%03d", prefix, i))
		}
		return out
	}
	old, next := ids("old", 250), ids("new", 150)
	b := setupReload(t, jobsYAML(old...))
	writeFile(t, b.path, jobsYAML(next...))
	b.look(0)
	b.look(ReloadSettle)
	named := func(lines []map[string]any, key, level string) []string {
		var out []string
		for _, l := range lines {
			if l["level"] != level {
				t.Errorf("%v: level %v, want %s", l, l["level"], level)
			}
			list, _ := l[key].([]any)
			if len(list) > maxLoggedJobs+1 {
				t.Errorf("a line lists %d IDs", len(list))
			}
			for _, id := range list {
				if s := id.(string); !strings.HasPrefix(s, "…") {
					out = append(out, s)
				}
			}
		}
		return out
	}
	cont := b.log.lines("config reload job IDs, continued")
	var removedCont, addedCont []map[string]any
	for _, l := range cont {
		switch {
		case l["removed"] != nil:
			removedCont = append(removedCont, l)
		case l["added"] != nil:
			addedCont = append(addedCont, l)
		}
	}
	removed := named(append(b.log.lines("config reload removed jobs"), removedCont...), "removed", "WARN")
	added := named(append(b.log.lines("config reloaded"), addedCont...), "added", "INFO")
	if !slices.Equal(removed, old) || !slices.Equal(added, next) {
		t.Fatalf("removed %d of %d, added %d of %d in the log:\n%s", len(removed), len(old), len(added), len(next), b.log)
	}
	if len(removedCont) != 2 || len(addedCont) != 1 {
		t.Fatalf("%d and %d continuation lines, want 2 and 1:\n%s", len(removedCont), len(addedCont), b.log)
	}
	first := b.log.lines("config reload removed jobs")[0]["removed"].([]any)
	if last := first[len(first)-1].(string); last != "… 150 more in the next lines (config reload job IDs, continued)" {
		t.Errorf("the first line ends %q", last)
	}
}

// logBuffer holds JSON log lines.
type logBuffer struct{ bytes.Buffer }

// lines returns the JSON log lines with msg.
func (b *logBuffer) lines(msg string) []map[string]any {
	var out []map[string]any
	for _, l := range strings.Split(b.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(l), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// A reload does not change cluster.shards (a restart does): it says so,
// naming the key, and the settings it did not apply.
func TestReloadNamesClusterShardsAsNotApplied(t *testing.T) {
	t.Parallel()
	b := setupReload(t, "cluster: {shards: 16}\n"+jobsYAML("a"))
	writeFile(t, b.path, "cluster: {shards: 8, lease_ttl: 4s}\n"+jobsYAML("a", "b"))
	b.look(0)
	b.look(ReloadSettle)
	if got := b.jobIDs(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("jobs %v, want the reloaded [a b]", got)
	}
	only := b.log.lines("only jobs are reloaded; restart the runner to apply the other changes")
	if len(only) != 1 || fmt.Sprint(only[0]["not_applied"]) != "[cluster.lease_ttl cluster.shards]" {
		t.Fatalf("only-jobs warning: %v", only)
	}
	shards := b.log.lines("cluster.shards is not reloaded: restart the runner to apply the new count")
	if len(shards) != 1 || shards[0]["level"] != "WARN" || shards[0]["shards"] != 16.0 || shards[0]["shards_in_file"] != 8.0 {
		t.Fatalf("cluster.shards warning: %v\n%s", shards, b.log)
	}
}

// Attack 16, G5: the settings a reload names as not applied are compared
// with those in effect (the start's), not with the last file's: an edit
// undone is no change, and the count in use stays the start's. Before, the
// undo was named as not applied, with "shards" the undone file's 8.
func TestReloadComparesSettingsWithThoseInEffect(t *testing.T) {
	t.Parallel()
	b := setupReload(t, "cluster: {shards: 16}\n"+jobsYAML("a"))
	writeFile(t, b.path, "cluster: {shards: 8}\n"+jobsYAML("a"))
	b.look(0)
	b.look(ReloadSettle)
	writeFile(t, b.path, "cluster: {shards: 16}\n"+jobsYAML("a", "b"))
	b.look(2 * ReloadSettle)
	b.look(3 * ReloadSettle)
	if got := b.jobIDs(); !slices.Equal(got, []string{"a", "b"}) {
		t.Fatalf("jobs %v, want the reloaded [a b]", got)
	}
	only := b.log.lines("only jobs are reloaded; restart the runner to apply the other changes")
	shards := b.log.lines("cluster.shards is not reloaded: restart the runner to apply the new count")
	if len(only) != 1 || len(shards) != 1 || shards[0]["shards"] != 16.0 || shards[0]["shards_in_file"] != 8.0 {
		t.Fatalf("want one warning each, for the edit (16 in use, 8 in the file) and none for its undo: %v %v\n%s", only, shards, b.log)
	}
}

// A FIFO renamed over the config file is rejected like a bad config,
// without blocking the reloader, and a good file renamed in after it is
// applied (attack 14, K8: the read blocked in the FIFO and every later
// save and SIGHUP was ignored, in silence).
func TestReloadRejectsAFIFOAndAppliesTheNextFile(t *testing.T) {
	t.Parallel()
	b := setupReload(t, jobsYAML("a"))
	fifo := filepath.Join(filepath.Dir(b.path), "fifo.tmp")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	if err := os.Rename(fifo, b.path); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		b.look(0)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		if f, err := os.OpenFile(b.path, os.O_WRONLY|syscall.O_NONBLOCK, 0); err == nil {
			f.Close() // end the blocked read
		}
		<-done
		t.Fatal("the reloader blocked reading a FIFO")
	}
	rejected := b.log.lines("config reload rejected; the last good config keeps running")
	if len(rejected) != 1 || !strings.Contains(rejected[0]["error"].(string), "is a FIFO (named pipe), not a regular file") {
		t.Fatalf("want one rejection naming the FIFO:\n%s", b.log)
	}
	b.look(ReloadPoll) // refused again: logged once
	if n := len(b.log.lines("config reload rejected; the last good config keeps running")); n != 1 {
		t.Fatalf("%d rejections for one FIFO, want 1:\n%s", n, b.log)
	}

	good := filepath.Join(filepath.Dir(b.path), "good.tmp")
	writeFile(t, good, jobsYAML("b"))
	if err := os.Rename(good, b.path); err != nil {
		t.Fatal(err)
	}
	b.look(2 * ReloadPoll)
	b.look(2*ReloadPoll + ReloadSettle)
	if got := b.jobIDs(); !slices.Equal(got, []string{"b"}) {
		t.Fatalf("after the good file: jobs %v, want [b]:\n%s", got, b.log)
	}
}

// Attack 20, Q1: a file renamed into place between the start's read and
// the watch's first look was taken for the content already applied, and
// never applied. The watch compares the file with what the runner started
// from.
func TestFileChangedWhileStartingIsApplied(t *testing.T) {
	t.Parallel()
	b := setupReload(t, jobsYAML("one"))
	b.rl.loaded, b.rl.poll, b.rl.settle = []byte(jobsYAML("one")), 10*time.Millisecond, 50*time.Millisecond
	tmp := b.path + ".tmp"
	writeFile(t, tmp, jobsYAML("one", "two"))
	if err := os.Rename(tmp, b.path); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); b.rl.run(ctx) }()
	defer func() { cancel(); <-done }()
	for deadline := time.Now().Add(10 * time.Second); !slices.Equal(b.jobIDs(), []string{"one", "two"}); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("jobs %v 10 s after the watch started; want the renamed file's:\n%s", b.jobIDs(), b.log)
		}
	}
}
