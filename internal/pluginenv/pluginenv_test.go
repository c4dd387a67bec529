package pluginenv_test

import (
	"slices"
	"testing"

	"github.com/pacerun/pacer/internal/pluginenv"
)

func TestProcess(t *testing.T) {
	env := []string{
		"TZ=UTC", "PATH=/bin", "LC_TIME=C", "LC_ALL=C", "HOME=/h", "DB_URL=postgres://x",
		"APP_A=1", "APP_B=2", "TOKEN=secret", "APP_TOKEN=s", "=odd", "NOEQUALS",
	}
	for _, tc := range []struct {
		name          string
		inherit, deny []string
		want          []string
	}{
		{"base only", nil, nil, []string{"HOME=/h", "LC_ALL=C", "LC_TIME=C", "PATH=/bin", "TZ=UTC"}},
		{"inherit a name and a prefix", []string{"DB_URL", "APP_*"}, nil,
			[]string{"APP_A=1", "APP_B=2", "APP_TOKEN=s", "DB_URL=postgres://x", "HOME=/h", "LC_ALL=C", "LC_TIME=C", "PATH=/bin", "TZ=UTC"}},
		{"deny wins over a pattern and the base", []string{"APP_*", "TOKEN"}, []string{"APP_TOKEN", "TOKEN", "PATH"},
			[]string{"APP_A=1", "APP_B=2", "HOME=/h", "LC_ALL=C", "LC_TIME=C", "TZ=UTC"}},
		{"a bare star matches nothing", []string{"*"}, nil, []string{"HOME=/h", "LC_ALL=C", "LC_TIME=C", "PATH=/bin", "TZ=UTC"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := pluginenv.Process(env, tc.inherit, tc.deny); !slices.Equal(got, tc.want) {
				t.Errorf("Process = %v, want %v", got, tc.want)
			}
		})
	}
}

// Base hands out a copy: a caller that appends to it or changes it changes
// no other caller's rule.
func TestBaseIsACopy(t *testing.T) {
	b := pluginenv.Base()
	b[0] = "SECRET"
	if slices.Contains(pluginenv.Base(), "SECRET") {
		t.Fatal("Base returned shared state")
	}
}
