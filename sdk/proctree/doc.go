// Package proctree runs a task's child processes so that every process an
// attempt started ends with the attempt: its children, their children, and
// the ones that called setsid or daemonised.
//
// A plugin whose tasks start programs uses Command instead of os/exec:
//
//	cmd := proctree.Command(ctx, "/usr/local/bin/report", "--since", "24h")
//	cmd.Env = append(os.Environ(), "PACER_RUN_ID="+sdk.Info(ctx).RunID)
//	cmd.Stdout, cmd.Stderr = &out, &out
//	res, err := cmd.Run()
//	// res.ExitCode: the command's own status; res.Leftovers: processes it
//	// left running, which were killed; err wraps ErrTreeAlive if some could
//	// not be confirmed dead.
//
// # How (Linux)
//
// The first Command makes the plugin process a child subreaper
// (PR_SET_CHILD_SUBREAPER): a process that loses its parent (a daemon's
// double fork, a setsid grandchild whose parent exited) is adopted by the
// plugin instead of init, so nothing an attempt started leaves the plugin's
// process tree. Each command runs in a process group of its own, with
// Pdeathsig SIGKILL (it dies with the plugin), and carries a marker in its
// environment, PACER_PROCESS_TREE=<id>, that its descendants inherit.
//
// A command's tree is every process below the plugin that is in the
// command's process group, descends from the command, or carries its marker.
// When the command exits, whatever is left of its tree is killed
// (SIGKILL). When ctx ends first, the tree gets SIGTERM, then SIGKILL after
// Grace, or SIGKILL at once if ctx's cause is marked by WithoutGrace. Run
// returns only when a scan of the plugin's process tree finds no process of
// the command's tree alive, or reports the ones it could not confirm dead
// (ErrTreeAlive) after KillTimeout. Signals go through pidfds,
// so a recycled process ID is never signalled by mistake. A command that
// left nothing needs no scan: once it has been reaped, whatever it left is
// in its process group or below a process the plugin adopted (a live
// descendant always has a live ancestor that is a child of its
// subreaper), so an empty group and no adopted child of the plugin
// confirm its tree is gone.
//
// As a subreaper the plugin becomes the parent of adopted processes and must
// reap them: once enabled, this package reaps every child process of the
// plugin that it did not start itself (when a child exits, on SIGCHLD).
// A plugin that uses proctree must therefore start all its child processes
// through it; os/exec's Wait would otherwise race with the reaper.
//
// Limits: a process that both clears its environment (env -i) and leaves
// the command's process group and ancestry is attributed to no tree; it is
// killed when no command of the plugin runs (the plugin is idle) and when
// the plugin exits. So is one that sets another command's marker by hand
// and leaves its own command's group: the other command's end finds it
// only if something makes that end scan (a process adopted by the plugin). A process that changes its user (setuid) cannot be
// signalled by an unprivileged plugin. Processes started through another
// service (systemd-run, at, a container runtime) are not the plugin's
// descendants at all.
//
// # Other systems
//
// Without subreapers and /proc, a command still runs in its own process
// group, and the group is killed when the command exits or ctx ends; a
// process that left the group (setsid) is out of reach, and Run cannot
// confirm the tree is gone: Result.Confirmed is false.
//
// # Supervisors
//
// The low-level functions (EnableSubreaper, Children, Descendants, and
// Process's methods) are what the Pacer runner uses to find and end what
// is left of a plugin that died: it is a subreaper too, so a dead plugin's
// orphans become its children.
package proctree
