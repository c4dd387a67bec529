package sdk

import (
	"context"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/pacerun/pacer/internal/wireutf8"
	"github.com/pacerun/pacer/sdk/internal/server"
	"github.com/pacerun/pacer/sdk/pluginv1"
	"github.com/pacerun/pacer/sdk/proctree"
)

// Serve runs p as a Pacer plugin. Call it from main; it does not return.
//
// The runner starts the plugin binary and talks to it over gRPC. Nothing may be
// written to stdout before Serve is called (not even from init functions):
// that would corrupt the handshake. After Serve starts, stray writes to stdout
// are redirected to the runner's log. The plugin exits on its own when its
// runner exits or dies, and kills every process below it as it goes: a
// stop the runner asks for gives running tasks a few seconds to return
// first, the runner's death does not. A task that starts programs should
// do so through package proctree, which ends each command's whole process
// tree with it; a task whose processes cannot be confirmed dead returns an
// error wrapping proctree.ErrTreeAlive, and the runner then starts no retry.
func Serve(p Plugin) {
	if err := p.validate(); err != nil {
		fmt.Fprintf(os.Stderr, "pacer plugin %q: %v\n", p.Name, err)
		os.Exit(1)
	}
	server.Serve(dispatcher{p})
}

// The in-process harnesses (package sdktest, and the server's own tests)
// reach a plugin's service through this hook, not through an exported
// function: no plugin author handles the wire protocol's types.
func init() {
	server.FromPlugin = func(p any) (*server.Server, error) {
		pl, ok := p.(Plugin)
		if !ok {
			return nil, fmt.Errorf("%T is not an sdk.Plugin", p)
		}
		if err := pl.validate(); err != nil {
			return nil, err
		}
		return server.New(dispatcher{pl}), nil
	}
}

func (p Plugin) validate() error {
	if p.Name == "" {
		return errors.New("Plugin.Name is empty")
	}
	if len(p.Tasks) == 0 {
		return errors.New("Plugin.Tasks is empty: offer at least one task")
	}
	for name, t := range p.Tasks {
		if name == "" || t == nil {
			return fmt.Errorf("task %q: empty name or nil Task", name)
		}
	}
	return nil
}

// dispatcher connects the wire protocol to the plugin's Go tasks.
type dispatcher struct{ p Plugin }

var _ server.Dispatcher = dispatcher{}

func (d dispatcher) Describe() *pluginv1.DescribeResponse {
	resp := &pluginv1.DescribeResponse{Name: d.p.Name, Version: d.p.Version, SdkVersion: Version}
	for name, t := range d.p.Tasks {
		info := &pluginv1.TaskInfo{Name: name}
		if ds, ok := t.(Describer); ok {
			info.Description = ds.Describe().Description
			info.ParamsSchemaJson = ds.Describe().ParamsSchema
		}
		resp.Tasks = append(resp.Tasks, info)
	}
	sort.Slice(resp.Tasks, func(i, j int) bool { return resp.Tasks[i].Name < resp.Tasks[j].Name })
	return resp
}

func (d dispatcher) Run(ctx context.Context, req *pluginv1.RunRequest) (*pluginv1.RunResult, error) {
	task, ok := d.p.Tasks[req.GetTask()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "plugin %q has no task %q", d.p.Name, req.GetTask())
	}
	sreq := &Request{Task: req.GetTask(), Params: req.GetParams().AsMap()}
	var sresp Response
	err := task.Run(ctx, sreq, &sresp)
	if errors.Is(err, ErrInvalidParams) {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	res := &pluginv1.RunResult{Output: sresp.Output}
	if err != nil {
		res.Error = err.Error()
	}
	if errors.Is(err, proctree.ErrTreeAlive) {
		// The runner must not start a retry while these live.
		res.ProcessesLeft = err.Error()
	}
	if len(sresp.Data) > 0 {
		data, derr := structpb.NewStruct(wireutf8.Map(sresp.Data))
		if derr != nil {
			res.Error = strings.TrimPrefix(res.Error+"; ", "; ") +
				fmt.Sprintf("task %q returned Data that is not JSON-compatible: %v", req.GetTask(), derr)
		} else {
			res.Data = data
		}
	}
	return res, nil
}
