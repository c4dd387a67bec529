package pluginhost

import "syscall"

// processAttrs asks the kernel to SIGTERM the plugin when the runner dies,
// even by SIGKILL. The SDK turns SIGTERM into a graceful stop.
func processAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}
