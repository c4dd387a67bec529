package pluginhost_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pacerun/pacer/runner/pluginhost"
)

// A plugin script whose #! interpreter is missing (or whose #! line ends
// with a carriage return) fails to start with an error naming the
// interpreter, not the plugin file, which exists. (It said "fork/exec
// …/nopy: no such file or directory": attack 26, P5.)
func TestMissingInterpreterIsNamed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, script, want string }{
		{"missing", "#!/usr/bin/nonexistent-python9 -u\nprint(1)\n",
			"its interpreter /usr/bin/nonexistent-python9 (from its #! line) does not exist"},
		{"CRLF", "#!/bin/sh\r\necho hi\r\n",
			`its #! line ends with a carriage return (Windows line endings), so its interpreter "/bin/sh\r" does not exist`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			bin := filepath.Join(t.TempDir(), "nopy")
			if err := os.WriteFile(bin, []byte(tc.script), 0o755); err != nil {
				t.Fatal(err)
			}
			b := setup(t, pluginhost.Options{Paths: map[string]string{"nopy": bin}, StartTimeout: 10 * time.Second})
			c := call("echo", nil)
			c.Plugin = "nopy"
			_, err := b.host.Run(t.Context(), c)
			if err == nil || !strings.Contains(err.Error(), bin+": "+tc.want) {
				t.Fatalf("err = %v\nwant it to say %q", err, tc.want)
			}
		})
	}
}
