package pluginhost_test

import (
	"context"
	"strings"
	"testing"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// A params problem of a job (pacer validate's output, a rejected reload's
// ERROR line, the error of a process refused at its start) does not quote
// a value under a key the sanitizer redacts, nested ones and the config's
// redact_keys too, and shows a value the sanitizer's patterns mask masked;
// other values are quoted as they are. (The key is written in brackets,
// params[db_password], out of the sanitizer's sight, and the value after
// "got" went out in clear: attack 26, P3.)
func TestParamsProblemsDoNotQuoteSecrets(t *testing.T) {
	t.Parallel()
	san, err := observability.NewSanitizer(observability.SanitizerOptions{RedactKeys: []string{"account"},
		Patterns: []observability.Pattern{{Name: "ticket", Regex: `TCK-\d+`}}})
	if err != nil {
		t.Fatal(err)
	}
	b := setup(t, pluginhost.Options{Sanitizer: san})
	params := map[string]any{"db_password": "Hunter2Secret", "token": "TokSecretValue", "secret": 987654321,
		"creds": map[string]any{"password": "NestedSecretPw"}, "account": "AcctSecret", "name": "plain TCK-4711"}
	err = b.host.CheckTasks(context.Background(), []pluginhost.TaskRef{
		{File: "pacer.yaml", Job: "jobs[0]", Line: line(9), Plugin: "testplugin", Task: "secrets", Params: params}})
	if err == nil {
		t.Fatal("params the schema refuses passed the check")
	}
	text := err.Error()
	for _, secret := range []string{"Hunter2Secret", "TokSecretValue", "987654321", "NestedSecretPw", "AcctSecret", "TCK-4711"} {
		if strings.Contains(text, secret) {
			t.Errorf("the error quotes %q:\n%s", secret, text)
		}
	}
	for _, want := range []string{
		`pacer.yaml:9: jobs[0].params[db_password]: must be one of "one", "two"; got [redacted]`,
		`pacer.yaml:9: jobs[0].params[token]: must match the pattern ^x$; got [redacted]`,
		`pacer.yaml:9: jobs[0].params[secret]: must be <= 5, got [redacted]`,
		`pacer.yaml:9: jobs[0].params.creds[password]: must match the pattern ^x$; got [redacted]`,
		`pacer.yaml:9: jobs[0].params.account: must match the pattern ^x$; got [redacted]`,
		`pacer.yaml:9: jobs[0].params.name: must match the pattern ^x$; got "plain [ticket]"`,
	} {
		if !strings.Contains(text, want) {
			t.Errorf("the error lacks %q:\n%s", want, text)
		}
	}
}
