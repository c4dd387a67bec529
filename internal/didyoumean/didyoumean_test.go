package didyoumean

import (
	"slices"
	"testing"

	"go.uber.org/goleak"
	"pgregory.net/rapid"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// The cases the config decoder and the params schema each had before they
// shared this package: both tables hold with one set of rules.
func TestClosest(t *testing.T) {
	t.Parallel()
	jobKeys := []string{"id", "plugin", "task", "schedule", "timezone", "timeout", "retries", "overlap", "misfire", "jitter", "params"}
	shellKeys := []string{"command", "dir", "env", "inherit_env", "max_output_bytes", "shell"}
	tests := []struct {
		word       string
		candidates []string
		want       string
	}{
		// config keys
		{"retires", jobKeys, "retries"},
		{"shedule", jobKeys, "schedule"},
		{"time_zone", jobKeys, "timezone"},
		{"Plugin", jobKeys, "plugin"},
		{"parms", jobKeys, "params"},
		{"ID", jobKeys, "id"},
		{"colour", jobKeys, ""},
		{"x", jobKeys, ""},
		{"leaseTTL", []string{"name", "data_dir", "lease_ttl", "etcd"}, "lease_ttl"},
		{"data-dir", []string{"name", "data_dir", "lease_ttl", "etcd"}, "data_dir"},
		{"job", []string{"node", "cluster", "http", "plugins", "observability", "history", "jobs"}, "jobs"},
		{"banana", []string{"listen", "token_env", "auth_all"}, ""},
		// enum values
		{"warning", []string{"debug", "info", "warn", "error"}, "warn"},
		{"xml", []string{"json", "text"}, ""},
		{"fsat", []string{"fast", "safe"}, "fast"},
		// param keys
		{"comand", shellKeys, "command"},
		{"commnad", shellKeys, "command"},
		{"COMMAND", shellKeys, "command"},
		{"dri", shellKeys, "dir"},
		{"en", shellKeys, "env"},
		{"inherit-env", shellKeys, "inherit_env"},
		{"max_outputbytes", shellKeys, "max_output_bytes"},
		{"max_bytes", shellKeys, ""},
		{"x", shellKeys, ""},
		{"", shellKeys, ""},
		{"_", shellKeys, ""},
		{"shellz", shellKeys, "shell"},
		{"c", shellKeys, ""},
		{"dirs", shellKeys, "dir"},
		{"nme", []string{"greeting", "name"}, "name"},
		{"frobnicate", shellKeys, ""},
		// ties go to the first candidate
		{"bat", []string{"cat", "bar"}, "cat"},
		{"bat", []string{"bar", "cat"}, "bar"},
		{"anything", nil, ""},
	}
	for _, tt := range tests {
		if got := Closest(tt.word, tt.candidates); got != tt.want {
			t.Errorf("Closest(%q, %q) = %q, want %q", tt.word, tt.candidates, got, tt.want)
		}
	}
}

func TestDistance(t *testing.T) {
	t.Parallel()
	tests := []struct {
		a, b string
		want int
	}{
		{"", "", 0}, {"a", "", 1}, {"", "abc", 3}, {"kitten", "sitting", 3},
		{"ab", "ba", 1}, {"comand", "command", 1}, {"héllo", "hello", 1}, {"retires", "retries", 1},
	}
	for _, tt := range tests {
		if got := Distance(tt.a, tt.b); got != tt.want {
			t.Errorf("Distance(%q, %q) = %d, want %d", tt.a, tt.b, got, tt.want)
		}
	}
}

func TestProperties(t *testing.T) {
	t.Parallel()
	word := rapid.StringMatching(`[a-zA-Z_-]{0,12}`)
	rapid.Check(t, func(t *rapid.T) {
		a, b := word.Draw(t, "a"), word.Draw(t, "b")
		if d := Distance(a, b); d != Distance(b, a) || d > max(len(a), len(b)) || (d == 0) != (a == b) {
			t.Fatalf("Distance(%q, %q) = %d, Distance(%q, %q) = %d", a, b, d, b, a, Distance(b, a))
		}
		cands := rapid.SliceOf(word).Draw(t, "candidates")
		got := Closest(a, cands)
		if got != "" && !slices.Contains(cands, got) {
			t.Fatalf("Closest(%q, %q) = %q, not a candidate", a, cands, got)
		}
		if slices.Contains(cands, a) && a != "" && normalize(a) != "" && normalize(got) != normalize(a) {
			t.Fatalf("Closest(%q, %q) = %q, but the word itself is a candidate", a, cands, got)
		}
	})
}
