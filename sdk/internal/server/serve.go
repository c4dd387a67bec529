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

	"github.com/pacerun/pacer/sdk/pluginv1"
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

	srv := New(d)
	base, stop := context.WithCancel(context.Background())
	srv.base = base
	tp := installTracing(srv)

	shutdown := sync.OnceFunc(func() {
		stop()
		srv.WaitRuns(drainGrace)
		_ = tp.Shutdown(context.Background())
		os.Exit(0)
	})
	go watchParent(os.Getppid(), shutdown)
	go func() {
		sig := make(chan os.Signal, 1)
		signal.Notify(sig, syscall.SIGTERM)
		<-sig
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
// TLS settings) plus the protocol's message limits.
func NewGRPCServer(opts []grpc.ServerOption) *grpc.Server {
	opts = append(opts,
		grpc.MaxRecvMsgSize(pluginv1.MaxMessageBytes),
		grpc.MaxSendMsgSize(pluginv1.MaxMessageBytes),
	)
	return grpc.NewServer(opts...)
}

func watchParent(ppid int, shutdown func()) {
	t := time.NewTicker(parentPoll)
	defer t.Stop()
	for range t.C {
		if os.Getppid() != ppid {
			fmt.Fprintln(os.Stderr, "pacer plugin: runner process is gone; stopping")
			shutdown()
			return
		}
	}
}
