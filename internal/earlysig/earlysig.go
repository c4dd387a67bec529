// Package earlysig notices SIGHUP, SIGTERM and SIGINT from the start of a
// `pacer run` process. Until a signal is noticed its default action ends the
// process, and a runner sets its handlers only once it runs: a SIGHUP (a
// deploy tool's reload after writing the config) or a SIGTERM in its first
// tenth of a second killed it, with no log line (attack 20, Q6). This
// package imports nothing heavy, so Go initialises it before the packages
// whose initialisation takes that time (gRPC, etcd, OpenTelemetry), and
// its init notices the signals then.
//
// SIGHUP is dropped (the config watch compares the file with the one the
// runner started from, so a change it was sent for is applied anyway);
// SIGTERM and SIGINT wait in Stop for the runner to act on once started.
package earlysig

import (
	"os"
	"os/signal"
	"syscall"
)

// Stop receives a SIGTERM or SIGINT that came while `pacer run` started.
var Stop = make(chan os.Signal, 1)

func init() {
	if len(os.Args) > 1 && os.Args[1] == "run" {
		signal.Notify(make(chan os.Signal, 1), syscall.SIGHUP)
		signal.Notify(Stop, syscall.SIGTERM, syscall.SIGINT)
	}
}
