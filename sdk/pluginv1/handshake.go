package pluginv1

import "github.com/hashicorp/go-plugin"

// ProtocolVersion is the version of this wire protocol. The host and the plugin
// negotiate it through go-plugin's VersionedPlugins.
const ProtocolVersion = 1

// PluginName is the key under which the task plugin is dispensed.
const PluginName = "task"

// Handshake is shared by host and plugin. The cookie is not a secret: it only
// stops a user from executing a plugin binary by hand by mistake.
var Handshake = plugin.HandshakeConfig{
	ProtocolVersion:  ProtocolVersion,
	MagicCookieKey:   "PACER_PLUGIN_COOKIE",
	MagicCookieValue: "5c1a3f0e-pacer-task-plugin",
}

// MaxMessageBytes bounds every gRPC message in either direction, so a plugin
// that returns a huge result fails that run cleanly instead of exhausting memory.
const MaxMessageBytes = 4 << 20

// StreamWindowBytes and ConnWindowBytes are the static HTTP/2 flow-control
// windows of both ends: large enough for a message of MaxMessageBytes in
// flight, and fixed, because gRPC's dynamic windows probe the connection
// with a ping for each burst of data, which, one call after another, is a
// ping for nearly every message.
const (
	StreamWindowBytes = MaxMessageBytes
	ConnWindowBytes   = 2 * MaxMessageBytes
)
