package config

import (
	"fmt"
	"regexp"
	"strings"
)

// SecretProblems checks the environment variables the config names for
// secrets (http.token_env, cluster.etcd.password_env) against getenv, as
// the runner reads them at start, and returns each missing or unusable one
// at its key's line: a problem of this host, said before anything starts,
// not a failure deep in start-up (attack 23, U3: a token no client could
// send started the runner).
func (c *Config) SecretProblems(getenv func(string) (string, bool)) []Problem {
	var out []Problem
	for _, r := range c.secrets {
		v, set := getenv(r.name)
		// A name in capitals, as variables are named, is said; another
		// may be the secret itself, pasted where its variable's name goes,
		// which the sanitizer does not know by its shape (attack 24, V2):
		// the key's line shows which.
		name := "environment variable " + r.name
		if !conventionalEnvName.MatchString(r.name) {
			name = "the environment variable this key names (its name not shown: it is not in capitals, and may be the secret itself)"
		}
		msg := ""
		switch r.path {
		case "http.token_env":
			if m := TokenProblem(v); m != "" {
				msg = name + " " + m + "; set it, or remove token_env to run the API without a token"
			}
		default: // a password may be empty, but must be set
			if !set {
				msg = name + " is not set"
			}
		}
		if msg != "" {
			out = append(out, Problem{File: r.file, Line: r.line, Path: r.path, Msg: msg})
		}
	}
	return out
}

// conventionalEnvName is a variable's name as variables are named: capitals,
// digits and underscores.
var conventionalEnvName = regexp.MustCompile(`^[A-Z_][A-Z0-9_]*$`)

// TokenProblem says what makes an API token unusable ("" if nothing): one
// empty or blank once its surrounding white space is trimmed (the token is
// the text without it: a file read into the variable keeps its newline),
// or one holding a character that an HTTP header cannot carry, which no
// client could send: every call would get 401.
func TokenProblem(token string) string {
	token = strings.TrimSpace(token)
	if token == "" {
		return "is empty, blank or not set"
	}
	for i, b := range []byte(token) {
		if b < 0x20 && b != '\t' || b == 0x7f {
			return fmt.Sprintf("holds a control character (byte %d of the token, 0x%02x), which an HTTP header cannot carry: no client could send it", i+1, b)
		}
	}
	return ""
}
