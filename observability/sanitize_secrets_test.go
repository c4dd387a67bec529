package observability

import (
	"bufio"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Fake credentials of the right shapes, built from parts so that no file of
// the repository holds one whole (secret scanners would flag them).
var (
	fakeAWS       = "AK" + "IAIOSFODNN7EXAMPLE"
	fakeAWSTemp   = "AS" + "IAY34FZKBOKMUTVV7A"
	fakeGoogle    = "AI" + "zaSyD-9tSrke72PouQMnMX-a7eZSW0jkFMBWY"
	fakeGitHub    = "gh" + "p_wWPw5k4aXcaT4fNP0UcnZwJUVFk6LO0pINUx"
	fakeGitHubApp = "gh" + "s_16C7e42F292c6912E7710c838347Ae178B4a"
	fakeGitHubPAT = "github" + "_pat_11ABCDEFG0" + strings.Repeat("aB3_", 17) + "xYz9"
	fakeGitLab    = "gl" + "pat-xd8Bn3tRk2vQ9wLmZp4F"
	fakeGitLabRt  = "gl" + "pat-Zx9Kq2Lm4Np6Rs8Tv0Wy1Ab3Cd5Ef.01" + "abcdefg"
	fakeSlackBot  = "xo" + "xb-263594206564-FGqddMF8t08v8N7Oq4i57vs1"
	fakeSlackUser = "xo" + "xp-41684372915-1320496754-45609968301-e708ba56e1517a99f6b5fb07349476ef"
	fakeStripe    = "sk" + "_live_4eC39HqLyjWDarjtT1zdp7dc"
	fakeStripeRK  = "rk" + "_live_51H8abcDEFghiJKLmnoPQRstu"
	fakeNPM       = "np" + "m_a3Bc5De7Fg9Hi1Jk3Lm5No7Pq9Rs1Tu3Vw5X"
	// The shape a tester reported unmasked: 79 characters after the prefix,
	// three short of a whole one.
	fakeGitHubPATShort = "github" + "_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456"
	fakeSlackHook      = "https://hooks" + ".slack.com/services/T0ABCD1EF/B0GHIJ2KL/aBcDeFgHiJkLmNoPqRsTuVwX"
)

func TestSanitizeBareTokens(t *testing.T) {
	t.Parallel()
	if n := len(fakeGitHubPAT) - len("github_pat_"); n != 82 {
		t.Fatalf("fake fine-grained PAT body is %d characters, want 82", n)
	}
	runCases(t, mustSanitizer(t, SanitizerOptions{}), []sanitizeCase{
		{"aws", "using " + fakeAWS + " now", "using [aws_key] now"},
		{"aws sts", fakeAWSTemp, "[aws_key]"},
		{"aws env", "AWS_ACCESS_KEY_ID=" + fakeAWS, "AWS_ACCESS_KEY_ID=[aws_key]"},
		{"google", `{"key":"` + fakeGoogle + `"}`, `{"key":"[google_api_key]"}`},
		{"github classic", "cloning with " + fakeGitHub, "cloning with [github_token]"},
		{"github app", fakeGitHubApp + ",", "[github_token],"},
		{"github fine-grained", "GH=" + fakeGitHubPAT, "GH=[github_token]"},
		{"github fine-grained, short", "pat " + fakeGitHubPATShort + " ok", "pat [github_token] ok"},
		{"slack webhook", "POST " + fakeSlackHook + ": 200", "POST [slack_webhook]: 200"},
		{"slack webhook without scheme", `{"url":"` + strings.TrimPrefix(fakeSlackHook, "https://") + `"}`, `{"url":"[slack_webhook]"}`},
		{"slack workflow", "hooks" + ".slack.com/workflows/T0ABCD1EF/A0AB12CD3/123456789/aBcDeFgHiJkLmNo.", "[slack_webhook]."},
		{"gitlab", "export TOKEN=" + fakeGitLab, "export TOKEN=[gitlab_token]"},
		{"gitlab routable", fakeGitLabRt + " ok", "[gitlab_token] ok"},
		{"slack bot", "slack: " + fakeSlackBot, "slack: [slack_token]"},
		{"slack user", "(" + fakeSlackUser + ")", "([slack_token])"},
		{"stripe secret", "stripe " + fakeStripe, "stripe [stripe_key]"},
		{"stripe restricted", fakeStripeRK, "[stripe_key]"},
		{"npm", "//registry.npmjs.org/:_authToken=" + fakeNPM, "//registry.npmjs.org/:_authToken=[npm_token]"},
		// Typed before the key/values and Bearer.
		{"under a sensitive key", "token=" + fakeGitHub, "token=[github_token]"},
		{"bearer", "Authorization: Bearer " + fakeGitLab, "Authorization: Bearer [gitlab_token]"},
		{"url query", "https://x.example/cb?key=" + fakeGoogle + "&y=1", "https://x.example/cb?key=[google_api_key]&y=1"},
		{"two", fakeAWS + " " + fakeNPM, "[aws_key] [npm_token]"},
		// Near misses stay.
		{"aws too long", fakeAWS + "X", fakeAWS + "X"},
		{"aws lowercase tail", fakeAWS + "x", fakeAWS + "x"},
		{"aws glued left", "x" + fakeAWS, "x" + fakeAWS},
		{"aws inside a word", "TODAYINASIAASACKOFRICEFELLOVER", "TODAYINASIAASACKOFRICEFELLOVER"},
		{"google short", fakeGoogle[:30], fakeGoogle[:30]},
		{"github short", "ghp_abc123", "ghp_abc123"},
		{"slack name", "xoxb-my-bot-token-name", "xoxb-my-bot-token-name"},
		{"slack short", "xoxb-12345", "xoxb-12345"},
		{"stripe publishable", "pk_live_4eC39HqLyjWDarjtT1zdp7dc", "pk_live_4eC39HqLyjWDarjtT1zdp7dc"},
		{"stripe word", "task=sk_live_migrations_v2", "task=sk_live_migrations_v2"},
		{"npm config", "npm_config_cache=/tmp/npm", "npm_config_cache=/tmp/npm"},
		{"gitlab word", "glpat-short", "glpat-short"},
		{"identifiers", "github_pat_count=3 AKIA_PREFIX AIza", "github_pat_count=3 AKIA_PREFIX AIza"},
		{"github_pat_ identifier", "github_pat_rotation_reminder_job_config", "github_pat_rotation_reminder_job_config"},
		{"slack docs url", "see https://hooks.slack.com/services/ for setup", "see https://hooks.slack.com/services/ for setup"},
		{"slack other path", "https://hooks.slack.com/help/aBcDeFgHiJkLmNoPqRsTuVwX", "https://hooks.slack.com/help/aBcDeFgHiJkLmNoPqRsTuVwX"},
	})
}

func TestSanitizeIBAN(t *testing.T) {
	t.Parallel()
	runCases(t, mustSanitizer(t, SanitizerOptions{}), []sanitizeCase{
		{"grouped", "pay to DE89 3704 0044 0532 0130 00 today", "pay to [iban] today"},
		{"compact", "iban=DE89370400440532013000", "iban=[iban]"},
		{"letters in bban", "GB82 WEST 1234 5698 7654 32", "[iban]"},
		{"shortest", "NO9386011117947", "[iban]"},
		{"longest", "LC55 HEMM 0001 0001 0012 0012 0002 3015", "[iban]"},
		{"length multiple of four, then a word", "BE68 5390 0754 7034 paid", "[iban] paid"},
		{"json", `{"iban":"FR1420041010050500013M02606"}`, `{"iban":"[iban]"}`},
		{"sentence", "account NL91ABNA0417164300.", "account [iban]."},
		{"bad check digits", "DE88 3704 0044 0532 0130 00", "DE88 3704 0044 0532 0130 00"},
		{"bad check compact", "DE88370400440532013000", "DE88370400440532013000"},
		{"not a country", "ZZ89370400440532013000", "ZZ89370400440532013000"},
		{"glued", "xDE89370400440532013000", "xDE89370400440532013000"},
		// Any case, and the country's length.
		{"lowercase", "iban de89370400440532013000 ok", "iban [iban] ok"},
		{"lowercase grouped", "gb82 west 1234 5698 7654 32", "[iban]"},
		{"mixed case", "De89370400440532013000", "[iban]"},
		{"lowercase bad check", "de88370400440532013000", "de88370400440532013000"},
		{"valid check, wrong length", "de543704004405320130001 DE543704004405320130001", "de543704004405320130001 DE543704004405320130001"},
		{"lowercase not a country", "zz89370400440532013000", "zz89370400440532013000"},
		// Found by the fuzzer: groups before an IBAN that pass the check by
		// chance took half of it.
		{"groups before an iban", "AZ00 0D00 0000 DE89 3704 0044 0532 0130 00 0", "AZ00 0D00 0000 [iban] 0"},
		{"too short", "DE89 3704", "DE89 3704"},
		{"hex id", "AB12CD34EF56AB78CD90", "AB12CD34EF56AB78CD90"},
	})
}

func TestSanitizePhones(t *testing.T) {
	t.Parallel()
	runCases(t, mustSanitizer(t, SanitizerOptions{}), []sanitizeCase{
		{"spaces", "call +49 30 12345678 now", "call [phone] now"},
		{"compact", "+14155552671", "[phone]"},
		{"nanp", "+1 (415) 555-2671", "[phone]"},
		{"trunk zero", "+44 (0)20 7946 0958", "[phone]"},
		{"dashes", "tel:+33-1-23-45-67-89.", "tel:[phone]."},
		{"json", `{"phone":"+81 3 1234 5678"}`, `{"phone":"[phone]"}`},
		{"longest prefix", "+49 30 12345678 2024-06-10", "[phone] 2024-06-10"},
		{"list", "+49 30 12345678, +44 20 7946 0958", "[phone], [phone]"},
		// Not phone numbers.
		{"time zone", "2024-06-10T12:30:45+02:00", "2024-06-10T12:30:45+02:00"},
		{"offset", "tz +0530 and +05:30", "tz +0530 and +05:30"},
		{"score", "+1 vote, +15 points", "+1 vote, +15 points"},
		{"sum", "12+34567890", "12+34567890"},
		{"glued", "x+4930123456", "x+4930123456"},
		{"leading zero", "+0049 30 12345678", "+0049 30 12345678"},
		{"too many digits", "+1234567890123456", "+1234567890123456"},
		{"into a word", "+4930123456abc", "+4930123456abc"},
		{"dotted number", "+49301234.5678", "+49301234.5678"},
		{"double plus", "++4930123456", "++4930123456"},
	})
}

// TestSanitizeCorpus runs the sanitizer over testdata/sanitize: every line of
// clean.txt must come out unchanged, and every "input<TAB>want" line of
// secrets.txt must give want (and want must be stable).
func TestSanitizeCorpus(t *testing.T) {
	t.Parallel()
	s := mustSanitizer(t, SanitizerOptions{})
	for _, l := range corpusLines(t, "clean.txt") {
		if got := s.String(l.text); got != l.text {
			t.Errorf("clean.txt:%d changed:\n got %q\nwant %q", l.n, got, l.text)
		}
	}
	for _, l := range corpusLines(t, "secrets.txt") {
		in, want, ok := strings.Cut(l.text, "\t")
		if !ok {
			t.Fatalf("secrets.txt:%d: want input<TAB>expected", l.n)
		}
		if got := s.String(in); got != want {
			t.Errorf("secrets.txt:%d:\n  in %q\n got %q\nwant %q", l.n, in, got, want)
		}
		if again := s.String(want); again != want {
			t.Errorf("secrets.txt:%d: expected output is not stable: %q -> %q", l.n, want, again)
		}
	}
}

// corpusEscapes expands a corpus line: "\n" and "\t" stand for a newline
// and a tab within a case (a literal tab separates fields), {{name}} for a
// fake credential above.
var corpusEscapes = strings.NewReplacer(`\n`, "\n", `\t`, "\t",
	"{{aws}}", fakeAWS, "{{google}}", fakeGoogle, "{{github}}", fakeGitHub, "{{github_pat}}", fakeGitHubPAT,
	"{{gitlab}}", fakeGitLab, "{{slack}}", fakeSlackBot, "{{stripe}}", fakeStripe, "{{npm}}", fakeNPM)

type corpusLine struct {
	n    int
	text string
}

// corpusLines reads a corpus file: one case per line, expanded by
// corpusEscapes; blank lines and lines starting with "#" are skipped.
func corpusLines(t testing.TB, name string) []corpusLine {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "sanitize", name))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []corpusLine
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		l := sc.Text()
		if strings.TrimSpace(l) == "" || strings.HasPrefix(l, "#") {
			continue
		}
		out = append(out, corpusLine{n, corpusEscapes.Replace(l)})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatalf("%s is empty", name)
	}
	return out
}

// BenchmarkSanitizerCleanLines measures String on clean 200-byte log lines
// (the corpus's clean lines, cut or padded to 200 bytes), with and without
// the bare-secret masks, in one run: "before" is the sanitizer as it was
// before them, "after" the current one. Besides wall time per line it
// reports the process's CPU time per line and lines per CPU-second, which a
// machine shared with other work disturbs far less (run with -cpu 1).
func BenchmarkSanitizerCleanLines(b *testing.B) {
	var lines []string
	for _, l := range corpusLines(b, "clean.txt") {
		if strings.Contains(l.text, "\n") {
			continue
		}
		x := l.text
		for len(x) < 200 {
			x += " " + l.text
		}
		lines = append(lines, x[:200])
	}
	for _, v := range []struct {
		name   string
		before bool
	}{{"before", true}, {"after", false}} {
		s := mustSanitizer(b, SanitizerOptions{})
		s.withoutBareSecrets = v.before
		b.Run(v.name, func(b *testing.B) {
			b.SetBytes(200)
			b.ReportAllocs()
			cpu := cpuTime()
			i := 0
			for b.Loop() {
				if out := s.String(lines[i%len(lines)]); len(out) != 200 {
					b.Fatalf("clean line changed: %q", out)
				}
				i++
			}
			reportPerCPU(b, cpu)
		})
	}
}

// BenchmarkSanitizerDirtyLines is the same with a line holding one secret of
// each new kind.
func BenchmarkSanitizerDirtyLines(b *testing.B) {
	line := "deploy key=" + fakeAWS + " by " + fakeGitHub + " paid DE89 3704 0044 0532 0130 00 call +49 30 12345678 " + fakeSlackBot
	for _, v := range []struct {
		name   string
		before bool
	}{{"before", true}, {"after", false}} {
		s := mustSanitizer(b, SanitizerOptions{})
		s.withoutBareSecrets = v.before
		b.Run(v.name, func(b *testing.B) {
			b.SetBytes(int64(len(line)))
			b.ReportAllocs()
			cpu := cpuTime()
			for b.Loop() {
				_ = s.String(line)
			}
			reportPerCPU(b, cpu)
		})
	}
}

// cpuTime is the process's user and system CPU time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// reportPerCPU reports CPU nanoseconds per operation and operations per
// CPU-second since start.
func reportPerCPU(b *testing.B, start time.Duration) {
	used := cpuTime() - start
	if used <= 0 || b.N == 0 {
		return
	}
	b.ReportMetric(float64(used.Nanoseconds())/float64(b.N), "cpu-ns/op")
	b.ReportMetric(float64(b.N)/used.Seconds(), "lines/cpu-s")
}
