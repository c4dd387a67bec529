// Package plugincheck checks that a plugin executable speaks Pacer's plugin
// protocol (docs/plugin-protocol.md), whatever language it is written in. It
// backs "pacer plugins check PATH".
//
// The checks talk to the plugin the way the runner does: through go-plugin's
// client with AutoMTLS, with the runner's own params checker, and with the
// environment the runner gives a plugin process (internal/pluginenv: the
// caller's PATH, HOME, LANG, LC_*, TZ, TMPDIR and USER, Options.InheritEnv
// standing for plugins.inherit_env, Options.Env). Each check
// passes, fails or is skipped (when an earlier failure or the plugin's tasks
// leave nothing to check), with a one-line reason saying what was expected
// and what happened:
//
//	cookie          started without PACER_PLUGIN_COOKIE, it exits without a handshake
//	handshake       the first line on stdout is 1|1|unix-or-tcp|ADDRESS|grpc|CERT
//	automtls        the line carries a certificate for "localhost"; the plugin serves
//	                TLS with it and refuses clients without the runner's certificate
//	describe        a name, tasks with distinct names, params schemas the runner accepts
//	                that use only the keywords it checks
//	health          grpc.health.v1 Check("plugin") answers SERVING
//	unknown-task    a Run of a task the plugin lacks ends with NotFound
//	invalid-params  per task: a Run with params its schema refuses ends with InvalidArgument
//	cancel          per task: a Run ends within the grace period of a Cancel
//	deadline        per task: a Run ends within the grace period of its timeout
//	identity        per task: two concurrent Runs; each one's spans belong to its own
//	                trace, under its call or its own spans; log records are well formed
//	run-stream      for a plugin that declares capabilities.run_stream: RunStream opens
//	                with an empty message; runs sent together each end once, their
//	                events tagged with their own IDs; an unknown task ends with
//	                NotFound; a cancel on the stream ends a run within the grace period
//	stdout          nothing reaches the real stdout after the handshake
//	shutdown        the controller's Shutdown makes the process exit within 2 s
//	sigterm         SIGTERM makes it exit within the grace period
//	parent-death    it exits within the grace period when its parent is killed
//
// The Run checks run each task, once with params its schema refuses and
// several times with params it accepts: Options.Params, or else the smallest
// params its schema accepts. Give params that make a task wait, and no harm,
// to see it cancelled mid-run.
package plugincheck
