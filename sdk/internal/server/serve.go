package server

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/pacerun/pacer/internal/procguard"
	"github.com/pacerun/pacer/sdk/pluginv1"
	"github.com/pacerun/pacer/sdk/proctree"
)

// drainGrace is how long in-flight tasks get to return after their contexts
// are cancelled because the runner went away.
const drainGrace = 3 * time.Second

// parentPoll is how often the plugin checks that its runner is still alive.
// The runner also asks the kernel to signal the plugin when it dies (Linux
// Pdeathsig); polling covers the platforms and cases where that is missed.
const parentPoll = 250 * time.Millisecond

// Serve serves d over go-plugin until the runner stops the plugin or dies,
// then exits the process. It never returns.
func Serve(d Dispatcher) {
	guardStdout()
	// Tasks run as this process's user: keep them out of its memory (the
	// runs' inherit_env values, its TLS key). Not fatal: a plugin that
	// cannot does what it did before.
	_ = procguard.NonDumpable()

	srv := New(d)
	base, stop := context.WithCancel(context.Background())
	srv.base = base
	tp := installTracing(srv)

	// A stop asked for by the runner lets runs end in their own way first;
	// the runner's death kills every process below the plugin at once:
	// those runs are lost, and a new leader may run their slots again.
	// Either way nothing the plugin started outlives it.
	shutdown := sync.OnceFunc(func() {
		stop()
		srv.WaitRuns(drainGrace)
		endDescendants()
		_ = tp.Shutdown(context.Background())
		os.Exit(0)
	})
	ppid := os.Getppid()
	parentGone := func() {
		fmt.Fprintln(os.Stderr, "pacer plugin: runner process is gone; killing every process of its runs and stopping")
		endDescendants()
		shutdown()
	}
	go watchParent(ppid, parentGone)
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
		// Pdeathsig delivers SIGTERM after the plugin was re-parented.
		if os.Getppid() != ppid {
			parentGone()
		}
		shutdown()
	}()

	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  pluginv1.Handshake,
		VersionedPlugins: pluginv1.VersionedPlugins(srv),
		GRPCServer:       NewGRPCServer,
	})
	// go-plugin returns once the runner has asked the plugin to stop.
	shutdown()
}

// NewGRPCServer returns the gRPC server a plugin serves on: opts (go-plugin's
// TLS settings) plus the protocol's message limits and flow-control
// windows.
func NewGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	opts = append(opts,
		grpc.MaxRecvMsgSize(pluginv1.MaxMessageBytes),
		grpc.MaxSendMsgSize(pluginv1.MaxMessageBytes),
		grpc.StaticStreamWindowSize(pluginv1.StreamWindowBytes),
		grpc.StaticConnWindowSize(pluginv1.ConnWindowBytes),
	)
	return grpc.NewServer(opts...)
}

func watchParent(ppid int, gone func()) {
	t := time.NewTicker(parentPoll)
	defer t.Stop()
	for range t.C {
		if os.Getppid() != ppid {
			gone()
			return
		}
	}
}

// descendantsGrace bounds how long a stopping plugin waits for the
// processes it killed to die.
const descendantsGrace = 2 * time.Second

// endDescendants kills every process below the plugin (with a subreaper,
// that is everything its tasks started, daemons included) and waits until
// they are dead, for up to descendantsGrace.
func endDescendants() {
	deadline := time.Now().Add(descendantsGrace)
	for {
		ds, err := proctree.Descendants(os.Getpid())
		if err != nil {
			return // not on this system
		}
		var alive []proctree.Process
		for _, p := range ds {
			if !p.Zombie() {
				alive = append(alive, p)
				_ = p.Signal(syscall.SIGKILL)
			}
		}
		if len(alive) == 0 {
			return
		}
		for _, p := range alive {
			for p.Alive() && time.Now().Before(deadline) {
				time.Sleep(5 * time.Millisecond)
			}
		}
		if time.Now().After(deadline) {
			fmt.Fprintf(os.Stderr, "pacer plugin: %d processes of its runs still alive %s after SIGKILL\n", len(alive), descendantsGrace)
			return
		}
	}
}
