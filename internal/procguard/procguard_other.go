//go:build !linux

package procguard

// NonDumpable does nothing outside Linux: other systems keep a process's
// environment from other users' processes by their own rules.
func NonDumpable() error { return nil }

// Dumpable reports true outside Linux.
func Dumpable() (bool, error) { return true, nil }
