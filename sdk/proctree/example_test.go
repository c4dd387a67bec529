//go:build linux

package proctree_test

import (
	"bytes"
	"context"
	"fmt"
	"os"

	"github.com/pacerun/pacer/sdk"
	"github.com/pacerun/pacer/sdk/proctree"
)

// report is a task that runs a program. The program leaves a background
// process behind; proctree kills it when the program exits, so the attempt
// ends whole.
func report(ctx context.Context, _ *sdk.Request, resp *sdk.Response) error {
	var out bytes.Buffer
	cmd := proctree.Command(ctx, "/bin/sh", "-c", "echo report done; sleep 60 &")
	cmd.Env = append(os.Environ(), "PACER_RUN_ID="+sdk.Info(ctx).RunID)
	cmd.Stdout, cmd.Stderr = &out, &out
	res, err := cmd.Run()
	if err != nil {
		return err // it could not start, or its processes are not confirmed dead (proctree.ErrTreeAlive)
	}
	resp.Output = out.String()
	resp.Data = map[string]any{"killed_leftovers": len(res.Leftovers)}
	if res.ExitCode != 0 {
		return fmt.Errorf("report exited with status %d", res.ExitCode)
	}
	return nil
}

func Example() {
	var resp sdk.Response
	err := report(context.Background(), &sdk.Request{}, &resp)
	fmt.Print(resp.Output)
	fmt.Println("killed leftovers:", resp.Data["killed_leftovers"], "error:", err)
	// Output:
	// report done
	// killed leftovers: 1 error: <nil>
}
