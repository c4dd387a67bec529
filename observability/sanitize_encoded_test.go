package observability

import (
	"strings"
	"testing"
)

// TestSanitizePercentEncoded: what the masks take is taken in
// percent-encoded words too (the tester's URL-encoded findings), written
// decoded with its mask; encoded words with nothing to mask stay encoded.
func TestSanitizePercentEncoded(t *testing.T) {
	t.Parallel()
	runCases(t, mustSanitizer(t, SanitizerOptions{}), []sanitizeCase{
		{"email", "to=ops%40example.com sent", "to=[email] sent"},
		{"phone", "tel=%2B14155552671", "tel=[phone]"},
		{"key value", "body password%3Dhunter9&x=1", "body password=[redacted]&x=1"},
		{"nested query", "GET /login?next=%2Fcb%3Faccess_token%3Dya29.a0AfH6SMB&lang=en", "GET /login?next=/cb?access_token=[redacted]&lang=en"},
		{"userinfo", "dsn https%3A%2F%2Fadmin%3Ap4ss%40db.example.com%2Fapp", "dsn https://[userinfo]@db.example.com/app"},
		{"lower-case hex", "a%40example.org", "[email]"},
		{"twice encoded", "mail ops%2540example.com", "mail [email]"},
		{"form body", `{"body":"user=bob&api_key%3Dk123"}`, `{"body":"user=bob&api_key=[redacted]"}`},
		{"bearer", "Authorization%3A%20Bearer%20abc123", "Authorization: Bearer [token]"},
		// Nothing to mask: left as it was.
		{"plain url", "GET /search?q=a%3Db%26c&page=2", "GET /search?q=a%3Db%26c&page=2"},
		{"progress", "50% done, 100%", "50% done, 100%"},
		{"encoded path", "GET /files/a%2Fb%3Ac.txt", "GET /files/a%2Fb%3Ac.txt"},
		{"control bytes stay encoded", "x%0A%40y", "x%0A%40y"},
		{"deeply encoded", "x%2525252540example.com", "[redacted]"},
	})
}

// Decoding is bounded: a word over maxDecodedWord bytes is not decoded.
func TestSanitizePercentEncodedBounded(t *testing.T) {
	t.Parallel()
	s := mustSanitizer(t, SanitizerOptions{})
	long := strings.Repeat("a", maxDecodedWord) + "%40example.com"
	if got := s.String(long); got != long {
		t.Fatalf("a word over %d bytes was decoded", maxDecodedWord)
	}
	short := strings.Repeat("a", 100) + "%40example.com"
	if got := s.String(short); got != "[email]" {
		t.Fatalf("String(%q) = %q", short, got)
	}
}
