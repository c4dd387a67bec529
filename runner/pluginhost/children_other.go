//go:build !linux

package pluginhost

import "errors"

// childPIDs is not available here: only Linux has child subreapers, so the
// host never looks for orphans.
func childPIDs(bool) ([]int, error) { return nil, errors.New("no /proc") }
