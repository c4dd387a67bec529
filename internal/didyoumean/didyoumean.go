// Package didyoumean picks the likely intended word when a user misspells a
// name: a config key, a param key, an enum value. The runner's config
// decoder and the SDK's params schema share it, so that both suggest the
// same way.
package didyoumean

import "strings"

// Closest returns the candidate the user most likely meant by word, or "" if
// none is close enough to be a plausible typo. Ties go to the candidate that
// comes first.
//
// In order of preference, a candidate is close when it
//   - equals word ignoring case and the separators '_', '-' and ' '
//     ("leaseTTL" for "lease_ttl", "inherit-env" for "inherit_env");
//   - is one a longer spelling of the other, both at least four letters
//     long once normalised ("warning" for "warn");
//   - is within a few edits of word, ignoring case: one for words of up to
//     three letters, two up to eight, three beyond. An edit inserts, deletes
//     or replaces a letter or swaps two adjacent ones ("retires" for
//     "retries"). A suggestion must keep something of the word: the
//     distance is below the length of both, so "c" does not suggest "a".
func Closest(word string, candidates []string) string {
	nw := normalize(word)
	if nw == "" {
		return ""
	}
	for _, c := range candidates {
		if normalize(c) == nw {
			return c
		}
	}
	for _, c := range candidates {
		nc := normalize(c)
		if min(len(nc), len(nw)) >= 4 && (strings.HasPrefix(nw, nc) || strings.HasPrefix(nc, nw)) {
			return c
		}
	}
	n := len([]rune(word))
	limit := 1
	switch {
	case n > 8:
		limit = 3
	case n > 3:
		limit = 2
	}
	lw := strings.ToLower(word)
	best, bestDist := "", limit+1
	for _, c := range candidates {
		d := Distance(lw, strings.ToLower(c))
		if d < bestDist && d < n && d < len([]rune(c)) {
			best, bestDist = c, d
		}
	}
	return best
}

func normalize(s string) string {
	return strings.NewReplacer("_", "", "-", "", " ", "").Replace(strings.ToLower(s))
}

// Distance is the optimal string alignment distance between a and b, in
// runes: insertions, deletions, substitutions and transpositions of
// adjacent runes each cost 1.
func Distance(a, b string) int {
	ra, rb := []rune(a), []rune(b)
	prev2 := make([]int, len(rb)+1)
	prev := make([]int, len(rb)+1)
	cur := make([]int, len(rb)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(ra); i++ {
		cur[0] = i
		for j := 1; j <= len(rb); j++ {
			cost := 1
			if ra[i-1] == rb[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
			if i > 1 && j > 1 && ra[i-1] == rb[j-2] && ra[i-2] == rb[j-1] {
				cur[j] = min(cur[j], prev2[j-2]+1)
			}
		}
		prev2, prev, cur = prev, cur, prev2
	}
	return prev[len(rb)]
}
