// Package pluginv1 is Pacer's plugin wire protocol: the protobuf messages, the
// generated gRPC code and the go-plugin handshake shared by the runner's plugin
// host and the SDK.
//
// It is not for plugin authors. Write plugins against package sdk, which hides
// everything here behind plain Go types; this package may change in any release
// that does not bump ProtocolVersion.
package pluginv1

//go:generate protoc -I proto --go_out=. --go_opt=module=github.com/pacerun/pacer/sdk/pluginv1 --go-grpc_out=. --go-grpc_opt=module=github.com/pacerun/pacer/sdk/pluginv1 pacer/plugin/v1/plugin.proto
