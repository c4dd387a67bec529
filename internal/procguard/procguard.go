// Package procguard keeps other processes of the same user out of this
// process's memory and environment.
//
// The runner holds the API token and the etcd password in its environment
// and memory, and tasks run as the runner's user. On Linux a process of the
// same user may read another's /proc/PID/environ and /proc/PID/mem and
// attach a debugger to it, so any task could read those secrets.
// NonDumpable clears the process's "dumpable" flag (prctl PR_SET_DUMPABLE
// 0): the kernel then makes its /proc/PID files (environ, mem, maps, fd,
// cwd, root, exe ...) owned by root and refuses ptrace from processes
// without CAP_SYS_PTRACE, and writes no core dump. /proc/PID/stat, status
// and cmdline stay readable, so ps and top work; the process itself still
// reads its own /proc/self. Programs it starts get the flag back at exec,
// so tasks are not affected. Root (CAP_SYS_PTRACE) still can read
// everything.
package procguard
