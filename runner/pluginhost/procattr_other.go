//go:build !linux

package pluginhost

import "syscall"

// processAttrs: a process group of its own (see the Linux version); without
// Pdeathsig, the SDK's parent polling stops the plugin when the runner dies.
func processAttrs() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }
