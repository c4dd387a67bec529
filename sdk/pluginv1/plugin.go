package pluginv1

import (
	"context"
	"errors"

	"github.com/hashicorp/go-plugin"
	"google.golang.org/grpc"
)

// GRPCPlugin is the task service as a go-plugin plugin, the one type both
// ends use: the plugin process serves Server through it, and the runner's
// plugin host and package sdktest dispense a TaskPluginClient from it.
type GRPCPlugin struct {
	plugin.NetRPCUnsupportedPlugin
	// Impl implements the service on the plugin side; nil on the side that
	// calls plugins.
	Impl TaskPluginServer
}

// GRPCServer implements plugin.GRPCPlugin: it registers Impl.
func (p *GRPCPlugin) GRPCServer(_ *plugin.GRPCBroker, s *grpc.Server) error {
	if p.Impl == nil {
		return errors.New("pluginv1.GRPCPlugin: no Impl: this side calls plugins and serves none")
	}
	RegisterTaskPluginServer(s, p.Impl)
	return nil
}

// GRPCClient implements plugin.GRPCPlugin: it returns a TaskPluginClient.
func (*GRPCPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, cc *grpc.ClientConn) (any, error) {
	return NewTaskPluginClient(cc), nil
}

// VersionedPlugins is the plugin set both ends negotiate, for go-plugin's
// ServeConfig.VersionedPlugins (with the plugin's implementation) and
// ClientConfig.VersionedPlugins (with nil).
func VersionedPlugins(impl TaskPluginServer) map[int]plugin.PluginSet {
	return map[int]plugin.PluginSet{ProtocolVersion: {PluginName: &GRPCPlugin{Impl: impl}}}
}

var _ plugin.GRPCPlugin = (*GRPCPlugin)(nil)
