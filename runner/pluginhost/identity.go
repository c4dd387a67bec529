package pluginhost

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/pacerun/pacer/observability"
	"github.com/pacerun/pacer/sdk/pluginv1"
)

// Causes of a plugin failure: why a start failed or a process went away.
// Status and quarantine messages name them.
const (
	CauseNotFound  = "not_found" // no binary, or it is not an executable file
	CauseChecksum  = "checksum"  // the binary's hash differs from plugins.checksums
	CauseHandshake = "handshake" // the process started but failed go-plugin's handshake or Describe
	CauseIdentity  = "identity"  // it is not the plugin the jobs expect (name, tasks, params)
	CauseCrashed   = "crashed"   // the process exited on its own
	CauseHung      = "hung"      // killed: a task ignored cancellation
	CauseUnhealthy = "unhealthy" // killed: health probes failed
)

// causeText says what a cause means, for messages.
var causeText = map[string]string{
	CauseNotFound:  "its binary is missing or not executable",
	CauseChecksum:  "its binary does not match plugins.checksums",
	CauseHandshake: "it fails its start handshake",
	CauseIdentity:  "its binary is not the plugin the jobs expect",
	CauseCrashed:   "it crashed",
	CauseHung:      "a task ignored cancellation and the process was killed",
	CauseUnhealthy: "it stopped answering health probes and was killed",
}

// ErrPluginIdentity means a plugin binary does not offer what the jobs that
// use it expect: another plugin's name, a missing task, a params schema the
// jobs' params do not fit.
var ErrPluginIdentity = errors.New("plugin is not what the jobs expect")

// StartError is a failed plugin start, with its cause.
type StartError struct {
	Plugin string
	Cause  string // one of the Cause constants
	Err    error
}

func (e *StartError) Error() string { return e.Err.Error() }
func (e *StartError) Unwrap() error { return e.Err }

// startError wraps err with cause, unless it already has one.
func startError(plugin, cause string, err error) error {
	var se *StartError
	if errors.As(err, &se) {
		return err
	}
	return &StartError{Plugin: plugin, Cause: cause, Err: err}
}

// causeOf returns the cause of a start error, or CauseHandshake.
func causeOf(err error) string {
	var se *StartError
	if errors.As(err, &se) {
		return se.Cause
	}
	return CauseHandshake
}

// verifyChecksum compares the binary's SHA-256 with the pinned one and
// names both when they differ.
func (h *Host) verifyChecksum(name, path string) error {
	want, ok := h.opts.Checksums[name]
	if !ok {
		return nil
	}
	hexSum, _ := strings.CutPrefix(want, "sha256:")
	f, err := os.Open(path)
	if err != nil {
		return startError(name, CauseNotFound, fmt.Errorf("%w: %q: %v", ErrPluginNotFound, name, err))
	}
	defer f.Close()
	sum := sha256.New()
	if _, err := io.Copy(sum, f); err != nil {
		return startError(name, CauseNotFound, fmt.Errorf("%w: %q: reading %s: %v", ErrPluginNotFound, name, path, err))
	}
	if got := hex.EncodeToString(sum.Sum(nil)); !strings.EqualFold(got, hexSum) {
		return startError(name, CauseChecksum, fmt.Errorf("plugin %q: %s has checksum sha256:%s, but plugins.checksums.%s is sha256:%s; "+
			"install the binary that was pinned, or pin this one", name, path, got, name, strings.ToLower(hexSum)))
	}
	return nil
}

// verifyIdentity checks a started plugin's description against the jobs
// that use it: its name, and each job's task and params.
func verifyIdentity(name, path string, d *pluginv1.DescribeResponse, refs []TaskRef, san *observability.Sanitizer) error {
	var errs []error
	if err := checkName(name, path, d, refs); err != nil {
		errs = append(errs, err)
	} else {
		for _, r := range refs {
			errs = append(errs, checkRef(r, d, san)...)
		}
	}
	if len(errs) == 0 {
		return nil
	}
	return startError(name, CauseIdentity, fmt.Errorf("%w: plugin %q (%s): %w; put the right binary in place, then run: pacer plugins restart %s",
		ErrPluginIdentity, name, path, errors.Join(errs...), name))
}

// checkName checks that the binary is the plugin it was started as.
func checkName(name, path string, d *pluginv1.DescribeResponse, refs []TaskRef) error {
	if d.GetName() == name {
		return nil
	}
	var jobs []string
	for _, r := range refs {
		jobs = append(jobs, fmt.Sprintf("task %q (%s)", r.Task, r.at("")))
	}
	expected := ""
	if len(jobs) > 0 {
		expected = "; the jobs expect plugin " + fmt.Sprintf("%q", name) + " with " + strings.Join(jobs, ", ")
	}
	return fmt.Errorf("%s describes itself as plugin %q (version %s, tasks: %s), not %q%s",
		path, d.GetName(), orNone(d.GetVersion()), orNone(strings.Join(taskNames(d), ", ")), name, expected)
}

func taskNames(d *pluginv1.DescribeResponse) []string {
	var names []string
	for _, t := range d.GetTasks() {
		names = append(names, t.GetName())
	}
	slices.Sort(names)
	return names
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
