// Package pluginhost runs task plugins for the runner: it finds plugin
// binaries, verifies and starts them through go-plugin over gRPC (one process
// per plugin, shared by concurrent runs), calls their tasks, and streams their
// logs and progress back to the caller.
//
// Lifecycle of one plugin: the first call for it starts the process
// (Start timeout, optional SHA-256 pin, AutoMTLS, protocol negotiation) and
// asks it to Describe itself; later calls reuse the process; if the process
// has exited, the next call starts a fresh one. Close kills every plugin.
//
// The plugin process is tied to the runner: on Linux the kernel sends it
// SIGTERM when the runner dies, and the SDK also polls for a new parent.
package pluginhost

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/hashicorp/go-plugin"
	"go.opentelemetry.io/contrib/instrumentation/google.golang.org/grpc/otelgrpc"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/noop"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pacerun/pacer/sdk/pluginv1"
)

// Errors a call can fail with, besides the context's own errors.
var (
	ErrPluginNotFound = errors.New("plugin not found")
	ErrPluginCrashed  = errors.New("plugin crashed")
	ErrTaskNotFound   = errors.New("unknown task")
	ErrInvalidParams  = errors.New("invalid params")
	ErrProtocol       = errors.New("plugin protocol error")
)

// Options configure a Host.
type Options struct {
	// Dir holds plugin binaries, each named after its plugin.
	Dir string
	// Paths maps plugin names to explicit binary paths; they win over Dir.
	Paths map[string]string
	// Checksums maps plugin names to "sha256:<hex>"; a binary whose hash
	// differs is refused.
	Checksums map[string]string
	// StartTimeout bounds process start and handshake. Default 10s.
	StartTimeout time.Duration
	// Logger receives the host's and the plugins' own output. Default: discard.
	Logger *slog.Logger
	// TracerProvider instruments the gRPC calls. Default: no tracing.
	TracerProvider trace.TracerProvider
}

// Host starts and calls plugins. It is safe for concurrent use.
type Host struct {
	opts Options
	log  *slog.Logger

	mu      sync.Mutex
	plugins map[string]*instance
	closed  bool
}

type instance struct {
	client *plugin.Client
	rpc    pluginv1.TaskPluginClient
	desc   *pluginv1.DescribeResponse
}

// New returns a Host. It starts nothing until a plugin is first used.
func New(opts Options) *Host {
	if opts.StartTimeout <= 0 {
		opts.StartTimeout = 10 * time.Second
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.TracerProvider == nil {
		opts.TracerProvider = noop.NewTracerProvider()
	}
	return &Host{opts: opts, log: opts.Logger, plugins: map[string]*instance{}}
}

// Discover lists the plugin names available: every executable file in Dir
// plus every explicit path.
func (h *Host) Discover() ([]string, error) {
	seen := map[string]bool{}
	for name := range h.opts.Paths {
		seen[name] = true
	}
	entries, err := os.ReadDir(h.opts.Dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("read plugins dir: %w", err)
	}
	for _, e := range entries {
		if info, err := e.Info(); err == nil && info.Mode().IsRegular() && info.Mode()&0o111 != 0 {
			seen[e.Name()] = true
		}
	}
	names := make([]string, 0, len(seen))
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

// Path returns the binary path for a plugin name, checking it is executable.
func (h *Host) Path(name string) (string, error) {
	path, ok := h.opts.Paths[name]
	if !ok {
		if name == "" || strings.ContainsAny(name, `/\`) || name == "." || name == ".." {
			return "", fmt.Errorf("%w: invalid plugin name %q", ErrPluginNotFound, name)
		}
		path = filepath.Join(h.opts.Dir, name)
	}
	info, err := os.Stat(path)
	switch {
	case errors.Is(err, os.ErrNotExist):
		return "", fmt.Errorf("%w: %q has no binary at %s (build it, or set plugins.dir or plugins.paths)", ErrPluginNotFound, name, path)
	case err != nil:
		return "", fmt.Errorf("%w: %q: %v", ErrPluginNotFound, name, err)
	case !info.Mode().IsRegular() || info.Mode()&0o111 == 0:
		return "", fmt.Errorf("%w: %q: %s is not an executable file", ErrPluginNotFound, name, path)
	}
	return path, nil
}

// Describe starts the plugin if needed and returns its self-description.
func (h *Host) Describe(ctx context.Context, name string) (*pluginv1.DescribeResponse, error) {
	inst, err := h.instance(ctx, name)
	if err != nil {
		return nil, err
	}
	return inst.desc, nil
}

func (h *Host) instance(ctx context.Context, name string) (*instance, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, errors.New("plugin host is closed")
	}
	if inst, ok := h.plugins[name]; ok {
		if !inst.client.Exited() {
			return inst, nil
		}
		h.log.Warn("plugin process exited; starting a new one", "plugin", name)
		inst.client.Kill()
		delete(h.plugins, name)
	}
	inst, err := h.start(ctx, name)
	if err != nil {
		return nil, err
	}
	h.plugins[name] = inst
	return inst, nil
}

func (h *Host) start(ctx context.Context, name string) (*instance, error) {
	path, err := h.Path(name)
	if err != nil {
		return nil, err
	}
	secure, err := h.secureConfig(name)
	if err != nil {
		return nil, err
	}
	log := h.log.With("plugin", name)
	cmd := exec.Command(path)
	cmd.SysProcAttr = processAttrs()
	started := time.Now()
	client := plugin.NewClient(&plugin.ClientConfig{
		HandshakeConfig:  pluginv1.Handshake,
		VersionedPlugins: map[int]plugin.PluginSet{pluginv1.ProtocolVersion: {pluginv1.PluginName: &grpcPlugin{}}},
		Cmd:              cmd,
		SecureConfig:     secure,
		AllowedProtocols: []plugin.Protocol{plugin.ProtocolGRPC},
		StartTimeout:     h.opts.StartTimeout,
		AutoMTLS:         true,
		Logger:           newHCLogger(log),
		SyncStdout:       newLineLogger(log, slog.LevelInfo, "stdout"),
		SyncStderr:       newLineLogger(log, slog.LevelWarn, "stderr"),
		GRPCDialOptions: []grpc.DialOption{
			grpc.WithStatsHandler(otelgrpc.NewClientHandler(
				otelgrpc.WithTracerProvider(h.opts.TracerProvider),
				otelgrpc.WithPropagators(propagation.TraceContext{}),
			)),
			grpc.WithDefaultCallOptions(
				grpc.MaxCallRecvMsgSize(pluginv1.MaxMessageBytes),
				grpc.MaxCallSendMsgSize(pluginv1.MaxMessageBytes),
			),
		},
	})
	rpcClient, err := client.Client()
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("start plugin %q (%s): %w", name, path, err)
	}
	raw, err := rpcClient.Dispense(pluginv1.PluginName)
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("start plugin %q: %w", name, err)
	}
	rpc := raw.(pluginv1.TaskPluginClient)
	dctx, cancel := context.WithTimeout(ctx, h.opts.StartTimeout)
	defer cancel()
	desc, err := rpc.Describe(dctx, &pluginv1.DescribeRequest{})
	if err != nil {
		client.Kill()
		return nil, fmt.Errorf("start plugin %q: describe: %w", name, err)
	}
	log.Info("plugin started", "version", desc.GetVersion(), "pid", client.ReattachConfig().Pid,
		"protocol", client.NegotiatedVersion(), "start_ms", time.Since(started).Milliseconds())
	return &instance{client: client, rpc: rpc, desc: desc}, nil
}

func (h *Host) secureConfig(name string) (*plugin.SecureConfig, error) {
	want, ok := h.opts.Checksums[name]
	if !ok {
		return nil, nil
	}
	hexSum, found := strings.CutPrefix(want, "sha256:")
	sum, err := hex.DecodeString(hexSum)
	if !found || err != nil || len(sum) != sha256.Size {
		return nil, fmt.Errorf("plugin %q: checksum %q must be sha256:<64 hex digits>", name, want)
	}
	return &plugin.SecureConfig{Checksum: sum, Hash: sha256.New()}, nil
}

// Call is one task invocation.
type Call struct {
	Plugin  string
	Task    string
	Params  map[string]any
	Context *pluginv1.RunContext
	// OnLog and OnProgress receive the plugin's events as they arrive, on the
	// calling goroutine. Either may be nil.
	OnLog      func(*pluginv1.LogRecord)
	OnProgress func(*pluginv1.Progress)
}

// Result is a task's answer. TaskError is non-empty when the task itself
// reported failure.
type Result struct {
	Output    string
	Data      map[string]any
	TaskError string
}

// Run calls a task and waits for its result. It returns ctx's error if ctx
// ends first (the plugin sees the cancellation), ErrPluginCrashed if the
// plugin process died, and the other sentinel errors above for the cases they
// name.
func (h *Host) Run(ctx context.Context, c Call) (*Result, error) {
	inst, err := h.instance(ctx, c.Plugin)
	if err != nil {
		return nil, err
	}
	params, err := structpb.NewStruct(c.Params)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidParams, err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := inst.rpc.Run(ctx, &pluginv1.RunRequest{Task: c.Task, Params: params, Context: c.Context})
	if err != nil {
		return nil, h.callError(ctx, inst, c, err)
	}
	for {
		ev, err := stream.Recv()
		if err == io.EOF {
			return nil, fmt.Errorf("%w: plugin %q ended the run without a result", ErrProtocol, c.Plugin)
		}
		if err != nil {
			return nil, h.callError(ctx, inst, c, err)
		}
		switch e := ev.GetEvent().(type) {
		case *pluginv1.RunEvent_Log:
			if c.OnLog != nil {
				c.OnLog(e.Log)
			}
		case *pluginv1.RunEvent_Progress:
			if c.OnProgress != nil {
				c.OnProgress(e.Progress)
			}
		case *pluginv1.RunEvent_Result:
			r := e.Result
			// The result is the last event: read the end of the stream so
			// the RPC completes cleanly (and its span ends with it).
			if _, err := stream.Recv(); err != io.EOF {
				return nil, fmt.Errorf("%w: plugin %q sent events after the result", ErrProtocol, c.Plugin)
			}
			return &Result{Output: r.GetOutput(), Data: r.GetData().AsMap(), TaskError: r.GetError()}, nil
		default:
			return nil, fmt.Errorf("%w: plugin %q sent an unknown event", ErrProtocol, c.Plugin)
		}
	}
}

// callError turns a gRPC failure into one of the package's errors.
func (h *Host) callError(ctx context.Context, inst *instance, c Call, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return context.Cause(ctx)
	}
	st := status.Convert(err)
	switch st.Code() {
	case codes.NotFound:
		return fmt.Errorf("%w: %s", ErrTaskNotFound, st.Message())
	case codes.InvalidArgument:
		return fmt.Errorf("%w: %s", ErrInvalidParams, st.Message())
	case codes.Unavailable, codes.Canceled:
		if inst.client.Exited() || waitExited(inst.client, 500*time.Millisecond) {
			return fmt.Errorf("%w: plugin %q exited during task %q", ErrPluginCrashed, c.Plugin, c.Task)
		}
	}
	return fmt.Errorf("plugin %q task %q: %s: %s", c.Plugin, c.Task, st.Code(), st.Message())
}

// waitExited gives a dying plugin process a moment to be reaped, so that a
// connection reset caused by a crash is reported as the crash.
func waitExited(c *plugin.Client, d time.Duration) bool {
	deadline := time.Now().Add(d)
	for time.Now().Before(deadline) {
		if c.Exited() {
			return true
		}
		time.Sleep(10 * time.Millisecond)
	}
	return false
}

// Close stops every plugin process and waits for them to exit.
func (h *Host) Close() error {
	h.mu.Lock()
	h.closed = true
	plugins := h.plugins
	h.plugins = map[string]*instance{}
	h.mu.Unlock()
	var wg sync.WaitGroup
	for name, inst := range plugins {
		wg.Go(func() {
			inst.client.Kill()
			h.log.Info("plugin stopped", "plugin", name)
		})
	}
	wg.Wait()
	return nil
}

// grpcPlugin is the host side of go-plugin's GRPCPlugin.
type grpcPlugin struct {
	plugin.NetRPCUnsupportedPlugin
}

func (grpcPlugin) GRPCServer(*plugin.GRPCBroker, *grpc.Server) error {
	return errors.New("the runner does not serve plugins")
}

func (grpcPlugin) GRPCClient(_ context.Context, _ *plugin.GRPCBroker, cc *grpc.ClientConn) (any, error) {
	return pluginv1.NewTaskPluginClient(cc), nil
}
