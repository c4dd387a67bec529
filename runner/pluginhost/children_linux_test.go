package pluginhost

import (
	"os/exec"
	"slices"
	"testing"
)

// childPIDs sees this process's children, whichever thread started them.
func TestChildPIDs(t *testing.T) {
	var cmds []*exec.Cmd
	for range 3 {
		cmd := exec.Command("sleep", "60")
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		cmds = append(cmds, cmd)
	}
	defer func() {
		for _, c := range cmds {
			_ = c.Process.Kill()
			_ = c.Wait()
		}
	}()
	pids, err := childPIDs()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range cmds {
		if !slices.Contains(pids, c.Process.Pid) {
			t.Errorf("child %d not in %v", c.Process.Pid, pids)
		}
	}
}

func TestAppendPIDs(t *testing.T) {
	if got := appendPIDs(nil, []byte("12 345 6789 \n")); !slices.Equal(got, []int{12, 345, 6789}) {
		t.Fatalf("got %v", got)
	}
	if got := appendPIDs(nil, nil); len(got) != 0 {
		t.Fatalf("got %v", got)
	}
}
