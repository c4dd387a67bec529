package config

import (
	"testing"
)

// TestAbsurdValuesAreRefused: values far outside what a key is for are
// config errors at their line, with the bound in the message (attack 23:
// U8, history.max_age: 1ns emptied the history at once; U10, no upper
// bound on etcd's request and dial timeouts, a job's timeout or a job's
// max_concurrency). The bounds themselves are valid.
func TestAbsurdValuesAreRefused(t *testing.T) {
	t.Parallel()
	job := func(extra ...string) []string {
		return append(append([]string{"jobs:"}, jobLines("a")...), extra...)
	}
	for _, tc := range []struct {
		src  []string
		want []string
	}{
		{[]string{"history:", "  max_age: 1ns"}, []string{
			`pacer.yaml:2: history.max_age: 1ns is too short: at least 1m (records older than it are removed, so the history would ` +
				`empty at once); to keep fewer records, lower history.keep`}},
		{[]string{"history: {max_age: 59s}"}, []string{
			`pacer.yaml:1: history.max_age: 59s is too short: at least 1m (records older than it are removed, so the history would ` +
				`empty at once); to keep fewer records, lower history.keep`}},
		{[]string{"history: {max_age: 0s}"}, []string{
			`pacer.yaml:1: history.max_age: 0s: must be greater than 0`}},
		{[]string{"cluster:", "  etcd:", "    dial_timeout: 2h", "    request_timeout: 99999h"}, []string{
			`pacer.yaml:3: cluster.etcd.dial_timeout: 2h0m0s is too long: at most 1m (how long the etcd client waits to connect at start)`,
			`pacer.yaml:4: cluster.etcd.request_timeout: 99999h0m0s is too long: at most 1m (each etcd request waits this long, ` +
				`and the API keeps trying for twice it)`}},
		// Attack 24, V5: 1ns started a replica that never got a lease.
		{[]string{"cluster:", "  etcd:", "    dial_timeout: 1ns", "    request_timeout: 99ms"}, []string{
			`pacer.yaml:3: cluster.etcd.dial_timeout: 1ns is too short: at least 100ms (no connection to etcd is made in less)`,
			`pacer.yaml:4: cluster.etcd.request_timeout: 99ms is too short: at least 100ms (no etcd request completes in less, ` +
				`and the replica would never get its lease)`}},
		{job("    timeout: 2562047h"), []string{
			`pacer.yaml:6: jobs[0].timeout: 2562047h0m0s is too long: at most 168h (a week); split longer work into shorter runs`}},
		{job("    overlap: allow", "    max_concurrency: 100000000"), []string{
			`pacer.yaml:7: jobs[0].max_concurrency: must be between 1 and 10000, got 100000000`}},
		{job("    max_concurrency: 0"), []string{
			`pacer.yaml:6: jobs[0].max_concurrency: must be between 1 and 10000, got 0`}},
	} {
		checkProblems(t, tc.src, tc.want)
	}

	cfg, err := Parse("pacer.yaml", y(append([]string{
		"cluster: {etcd: {dial_timeout: 1m, request_timeout: 1m}}",
		"history: {max_age: 1m}",
	}, job("    timeout: 168h", "    overlap: allow", "    max_concurrency: 10000")...)...))
	if err != nil {
		t.Fatalf("the bounds themselves: %v", err)
	}
	if j := cfg.Jobs[0]; j.Timeout != maxJobTimeout || j.MaxConcurrency != maxJobConcurrency || cfg.History.MaxAge != minHistoryMaxAge {
		t.Errorf("timeout %s, max_concurrency %d, max_age %s", j.Timeout, j.MaxConcurrency, cfg.History.MaxAge)
	}
}
