package config

import (
	"errors"
	"strings"
	"testing"
)

// A reload refuses a file that does not list its jobs, so that an editor's
// or a deploy tool's half-written save never stops every job; Parse (start
// up) still takes such a file as "no jobs".
func TestParseReloadNeedsTheJobsListed(t *testing.T) {
	t.Parallel()
	full := "http: {listen: 127.0.0.1:9464}\njobs:\n  - id: a\n    plugin: shell\n    task: run\n    schedule: '@every 1m'\n"
	refused := []struct{ name, src, want string }{
		{"empty", "", `pacer.yaml: jobs: the file is empty: a reload needs the jobs listed`},
		{"blank", "\n  \n", `pacer.yaml: jobs: the file is empty`},
		{"comments only", "# pacer\n", `pacer.yaml: jobs: the file lists no jobs`},
		{"cut before jobs", full[:strings.Index(full, "jobs:")], `pacer.yaml: jobs: the file lists no jobs`},
		{"cut right after jobs:", full[:strings.Index(full, "jobs:")+len("jobs:\n")], `pacer.yaml:2: jobs: "jobs:" has no value`},
		{"jobs: null", "jobs: ~\n", `pacer.yaml:1: jobs: "jobs:" has no value`},
		// Cut inside a job: the job lacks its keys, like any invalid file.
		{"cut inside a job", full[:strings.Index(full, "    task")], `pacer.yaml:3: jobs[0].task: missing required key "task"`},
		{"cut in the middle of a line", full[:strings.Index(full, "k: run")], `pacer.yaml:5: invalid YAML: could not find expected ':'`},
	}
	for _, tc := range refused {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			_, err := ParseReload("pacer.yaml", []byte(tc.src))
			var cerr *Error
			if !errors.As(err, &cerr) {
				t.Fatalf("ParseReload accepted it (err %v)", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error:\n%v\nwant it to contain %s", err, tc.want)
			}
			if n := len(cerr.Problems); n > 2 {
				t.Fatalf("%d problems, want the one that says what is wrong:\n%v", n, err)
			}
		})
	}
	for _, src := range []string{full, "jobs: []\n", "cluster: {name: x}\njobs: []\n"} {
		if _, err := ParseReload("pacer.yaml", []byte(src)); err != nil {
			t.Errorf("ParseReload(%q): %v", src, err)
		}
	}
	if _, err := Parse("pacer.yaml", nil); err != nil {
		t.Errorf("Parse of an empty file (start-up): %v", err)
	}
}

// A schedule no date matches is valid, with a warning at its line.
func TestWarningForScheduleThatNeverFires(t *testing.T) {
	t.Parallel()
	feb30 := jobLines("feb30")
	feb30[3] = "    schedule: '0 0 30 2 *'" // line 5
	cfg, err := Parse("pacer.yaml", cat([]string{"jobs:"}, feb30, jobLines("ok")))
	if err != nil {
		t.Fatal(err)
	}
	if len(cfg.Warnings) != 1 || cfg.Warnings[0].String() != `pacer.yaml:5: jobs[0].schedule: "0 0 30 2 *" can never fire: no date matches it; the job is listed with next: never` {
		t.Fatalf("warnings: %v", cfg.Warnings)
	}
}

// A plugins.cancel_grace not above the 2 s a cancelled command's tree gets
// between SIGTERM and SIGKILL, plus a second, is valid with a warning at
// its line: a command ignoring SIGTERM would get its plugin killed as hung
// and fail the plugin's other runs (attack 25, W1: accepted silently).
func TestWarningForCancelGraceBelowTheTreesGrace(t *testing.T) {
	t.Parallel()
	for grace, warned := range map[string]bool{"2s": true, "3s": true, "3100ms": false, "5s": false} {
		cfg, err := Parse("pacer.yaml", cat([]string{"plugins:", "  cancel_grace: " + grace, "jobs:"}, jobLines("ok")))
		if err != nil {
			t.Fatal(err)
		}
		got := len(cfg.Warnings) == 1 && strings.HasPrefix(cfg.Warnings[0].String(), "pacer.yaml:2: plugins.cancel_grace: "+grace+" leaves a cancelled command no room")
		if got != warned || len(cfg.Warnings) > 1 {
			t.Errorf("cancel_grace %s: warnings %v, want a warning: %v", grace, cfg.Warnings, warned)
		}
	}
}
