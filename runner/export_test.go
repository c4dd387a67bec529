package runner_test

import (
	"io"
	"log/slog"
	"os"
)

// discardLogger is the tests' runner logger: silent, unless
// PACER_TEST_LOG is set (then every line, debug too, to stderr: to follow a
// race a test caught).
func discardLogger() *slog.Logger {
	if os.Getenv("PACER_TEST_LOG") != "" {
		return slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	return slog.New(slog.NewTextHandler(io.Discard, nil))
}
