package pluginhost

import "syscall"

// processAttrs puts the plugin in a process group of its own, so a signal
// meant for the runner's group (Ctrl-C, a supervisor's group kill) does not
// stop plugins before the runner has drained its runs; the runner decides
// when they stop. Pdeathsig asks the kernel to SIGTERM the plugin when the
// runner dies, even by SIGKILL; the SDK turns SIGTERM into a graceful stop.
func processAttrs() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
}
