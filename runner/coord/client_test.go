package coord_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/pacerun/pacer/runner/coord"
)

func TestClientConfigReadsPasswords(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "pw")
	if err := os.WriteFile(file, []byte("s3cret\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := coord.ClientConfig(coord.ClientOptions{Username: "pacer", PasswordFile: file})
	if err != nil || cfg.Password != "s3cret" || cfg.Username != "pacer" {
		t.Fatalf("file: %q %v", cfg.Password, err)
	}
	if _, err := coord.ClientConfig(coord.ClientOptions{PasswordFile: filepath.Join(t.TempDir(), "absent")}); err == nil ||
		!strings.Contains(err.Error(), "cluster.etcd.password_file") {
		t.Fatalf("missing file: %v", err)
	}
	if _, err := coord.ClientConfig(coord.ClientOptions{PasswordEnv: "PACER_TEST_SURELY_UNSET"}); err == nil ||
		!strings.Contains(err.Error(), "PACER_TEST_SURELY_UNSET is not set") {
		t.Fatalf("missing env: %v", err)
	}
	if _, err := coord.ClientConfig(coord.ClientOptions{CAFile: file}); err == nil || !strings.Contains(err.Error(), "no PEM certificates") {
		t.Fatalf("bad CA: %v", err)
	}
}
