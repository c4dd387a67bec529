//go:build !linux

package pluginhost

import "syscall"

// processAttrs: without Pdeathsig, the SDK's parent polling stops the plugin.
func processAttrs() *syscall.SysProcAttr { return nil }
