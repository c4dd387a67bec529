package proctree

import "os/exec"

// SetScanHook runs f between a tree's scan of the processes below this one
// and its reading of which of them are unclaimed, until the test ends.
func SetScanHook(cleanup func(func()), f func()) {
	scanHook = f
	cleanup(func() { scanHook = nil })
}

// StartOwned starts c as Run starts its commands: under the reaper's lock
// and counted as the reaper's own until the test ends, so that the reaper
// neither kills it as an adopted orphan (this test process is a subreaper
// once a test has run a command) nor reaps it before c.Wait does.
func StartOwned(cleanup func(func()), c *exec.Cmd) error {
	reaper.mu.Lock()
	defer reaper.mu.Unlock()
	if err := c.Start(); err != nil {
		return err
	}
	pid := c.Process.Pid
	reaper.own[pid] = true
	cleanup(func() {
		reaper.mu.Lock()
		delete(reaper.own, pid)
		reaper.mu.Unlock()
	})
	return nil
}

// LiveCommands is how many commands' trees have not ended yet.
func LiveCommands() int {
	reaper.mu.Lock()
	defer reaper.mu.Unlock()
	return reaper.live
}
