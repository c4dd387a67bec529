// Command norunstream is a plugin for the plugin host's tests that declares
// the run_stream capability in Describe but does not serve RunStream (the
// call answers Unimplemented): the host must call it once per run. Its one
// task, "noop", answers with the process ID.
package main

import (
	"context"
	"fmt"
	"os"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"

	"github.com/pacerun/pacer/sdk/pluginv1"
)

type server struct {
	pluginv1.UnimplementedTaskPluginServer
}

func (server) Describe(context.Context, *pluginv1.DescribeRequest) (*pluginv1.DescribeResponse, error) {
	return &pluginv1.DescribeResponse{Name: "norunstream", Version: "test",
		Tasks:        []*pluginv1.TaskInfo{{Name: "noop"}},
		Capabilities: &pluginv1.Capabilities{RunStream: true}}, nil
}

func (server) Run(_ *pluginv1.RunRequest, stream grpc.ServerStreamingServer[pluginv1.RunEvent]) error {
	return stream.Send(&pluginv1.RunEvent{Event: &pluginv1.RunEvent_Result{Result: &pluginv1.RunResult{
		Output: fmt.Sprint(os.Getpid())}}})
}

func main() {
	plugin.Serve(&plugin.ServeConfig{
		HandshakeConfig:  pluginv1.Handshake,
		VersionedPlugins: pluginv1.VersionedPlugins(server{}),
		GRPCServer:       plugin.DefaultGRPCServer,
	})
}
