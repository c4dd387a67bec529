package config

import "testing"

// KeyLine points at the key itself, in block and flow YAML, so that problems
// found after loading (by a plugin's params schema) name the right line.
func TestJobKeyLine(t *testing.T) {
	t.Parallel()
	cfg, err := Parse("pacer.yaml", y(
		"x-defaults: &defaults", //  1
		"  inherited: 1",        //  2
		"jobs:",                 //  3
		"  - id: block",         //  4
		"    plugin: shell",     //  5
		"    task: exec",        //  6
		`    schedule: "@hourly"`,
		"    params:",         //  8
		"      command:",      //  9
		"        - echo",      // 10
		"        - hi",        // 11
		"      env:",          // 12
		"        MY VAR: x",   // 13
		"      <<: *defaults", // 14
		`  - {id: flow, plugin: shell, task: exec, schedule: "@hourly", params: {command: [echo, hi], env: {A: b}}}`, // 15
		"  - id: multiline-flow", // 16
		"    plugin: shell",      // 17
		"    task: exec",         // 18
		`    schedule: "@hourly"`,
		"    params: {",      // 20
		"      command: [",   // 21
		"        echo,",      // 22
		"        hi],",       // 23
		"      shell: true}", // 24
		"  - id: no-params",  // 25
		"    plugin: shell",  // 26
		"    task: exec",     // 27
		`    schedule: "@hourly"`,
	))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		job  int
		keys []any
		want int
	}{
		{0, nil, 4},
		{0, []any{"task"}, 6},
		{0, []any{"params"}, 8},
		{0, []any{"params", "command"}, 9},
		{0, []any{"params", "command", 1}, 11},
		{0, []any{"params", "command", 7}, 9}, // no such item: its sequence
		{0, []any{"params", "env", "MY VAR"}, 13},
		{0, []any{"params", "inherited"}, 2}, // merged: where it is written
		{0, []any{"params", "nope"}, 8},      // not in the file: the nearest key that is
		{0, []any{"params", "nope", "deeper", 3}, 8},
		{1, nil, 15},
		{1, []any{"params", "env", "A"}, 15},
		{2, []any{"params"}, 20},
		{2, []any{"params", "command"}, 21},
		{2, []any{"params", "command", 1}, 23},
		{2, []any{"params", "shell"}, 24},
		{2, []any{"task"}, 18},
		{3, []any{"params"}, 25}, // no params at all: the job
		{3, []any{"params", "command"}, 25},
	}
	for _, tt := range tests {
		if got := cfg.Jobs[tt.job].KeyLine(tt.keys...); got != tt.want {
			t.Errorf("jobs[%d].KeyLine(%v) = %d, want %d", tt.job, tt.keys, got, tt.want)
		}
	}
	var zero Job
	if got := zero.KeyLine("params"); got != 0 {
		t.Errorf("a Job not from a file: KeyLine = %d, want 0", got)
	}
}
