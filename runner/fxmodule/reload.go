package fxmodule

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/pacerun/pacer/internal/regfile"
	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/config"
)

// Reloading on a file change.
const (
	// ReloadPoll is how often the config file is read to look for changes.
	ReloadPoll = 500 * time.Millisecond
	// ReloadSettle is how long a changed config file must stay unchanged
	// before it is applied, so that a file written in several steps (a
	// deploy tool writing in chunks, an editor saving in place) is read
	// whole. A file renamed into place is complete at once; it is applied
	// after the same wait. SIGHUP applies the file as it is, at once.
	ReloadSettle = 2 * time.Second
	// maxLoggedJobs bounds the job IDs one reload log line lists.
	maxLoggedJobs = 100
)

// reloader re-reads the config on SIGHUP and when the file changes. A valid
// new config replaces the jobs (by ID: running runs go on, no slot runs
// twice); an invalid one is rejected with its errors and the last good one
// keeps running. A file without its jobs listed (empty, or cut off before
// or at "jobs:") is invalid here: config.ParseReload.
type reloader struct {
	path    string
	current *config.Config
	// loaded is the content current was parsed from at start (nil: read
	// the file when watching starts). The watch compares the file with
	// it, so a file changed (renamed into place) between the start's read
	// and the watch's first look is applied (attack 20, Q1: it was taken
	// for the content already applied, and never applied).
	loaded []byte
	// started is the config the runner started with: its settings are the
	// ones in effect, whatever reloads changed since (only jobs reload).
	// Nil: current's.
	started *config.Config
	runner  *runner.Runner
	// check asks the plugins whether cfg's jobs name real tasks with
	// valid params.
	check func(ctx context.Context, cfg *config.Config) error
	log   *slog.Logger

	poll, settle time.Duration
	applied      [sha256.Size]byte // the content last applied or rejected
	appliedNL    bool              // the content last applied ended with a newline
	pending      [sha256.Size]byte // a changed content waiting to settle
	pendingSince time.Time         // zero: nothing pending
	unreadable   bool              // the last read failed (logged once)
}

func (rl *reloader) run(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	if rl.loaded != nil {
		rl.remember(rl.loaded)
	} else if data, err := config.ReadFile(rl.path); err == nil {
		rl.remember(data)
	}
	t := time.NewTicker(rl.poll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			rl.log.Info("SIGHUP: reloading the config", "path", rl.path)
			data, err := config.ReadFile(rl.path)
			if err != nil {
				rl.log.Error("config reload rejected; the last good config keeps running", "path", rl.path, "error", err.Error())
				continue
			}
			rl.pendingSince = time.Time{}
			rl.reload(ctx, data, false)
		case now := <-t.C:
			rl.look(ctx, now)
		}
	}
}

// look reads the file and applies it once its content has stayed the same,
// and differed from the last applied, for rl.settle.
func (rl *reloader) look(ctx context.Context, now time.Time) {
	data, err := config.ReadFile(rl.path)
	if err != nil {
		// Missing for a moment while a tool replaces it, or gone: wait.
		// Not a regular file (a FIFO, a device) or too large: rejected
		// like a bad config, and watched for the next change.
		if !rl.unreadable {
			if errors.Is(err, regfile.ErrRefused) {
				rl.log.Error("config reload rejected; the last good config keeps running", "path", rl.path, "error", err.Error())
			} else {
				rl.log.Warn("cannot read the config file; the last good config keeps running", "path", rl.path, "error", err.Error())
			}
		}
		rl.unreadable, rl.pendingSince = true, time.Time{}
		return
	}
	rl.unreadable = false
	sum := sha256.Sum256(data)
	switch {
	case sum == rl.applied:
		rl.pendingSince = time.Time{} // changed back, or never changed
	case rl.pendingSince.IsZero() || sum != rl.pending:
		if rl.pendingSince.IsZero() {
			rl.log.Info("config file changed: applying it once it has not changed for "+rl.settle.String(), "path", rl.path)
		}
		rl.pending, rl.pendingSince = sum, now
	case now.Sub(rl.pendingSince) >= rl.settle:
		rl.pendingSince = time.Time{}
		rl.reload(ctx, data, true)
	}
}

// remember notes data as the content applied.
func (rl *reloader) remember(data []byte) {
	rl.applied = sha256.Sum256(data)
	rl.appliedNL = bytes.HasSuffix(data, []byte("\n"))
}

// reload applies data, the content of the config file, or rejects it.
// Seen by watching the file (not on SIGHUP), a file that no longer ends
// with a newline, as the one applied did, is taken for a save cut off at
// the end (a full disk, a killed editor): a cut that leaves valid YAML, e.g.
// within a command's last argument, would otherwise apply a shortened job.
func (rl *reloader) reload(ctx context.Context, data []byte, watched bool) {
	rl.applied = sha256.Sum256(data)
	cfg, err := config.ParseReload(rl.path, data)
	if err == nil && watched && rl.appliedNL && !bytes.HasSuffix(data, []byte("\n")) {
		err = fmt.Errorf("%s: the file no longer ends with a newline, as the config applied did: it looks cut off by a save that did not finish; "+
			"finish the save (or write the file elsewhere and rename it into place), or send SIGHUP to apply it as it is", rl.path)
	}
	if err == nil {
		err = cfg.CheckPlugins() // as pacer run: the next start would refuse it
	}
	if err == nil {
		err = rl.check(ctx, cfg)
	}
	if err != nil {
		rl.log.Error("config reload rejected; the last good config keeps running", "path", rl.path, "error", err.Error())
		return
	}
	// Against the settings in effect (the start's), not the last file's:
	// a file whose edit was undone matches what runs again, and says so
	// by saying nothing (attack 16, G5).
	if rl.started == nil {
		rl.started = rl.current
	}
	if keys := changedSettings(rl.started.Settings(), cfg.Settings()); len(keys) > 0 {
		rl.log.Warn("only jobs are reloaded; restart the runner to apply the other changes", "path", rl.path, "not_applied", keys)
		if rl.started.Cluster.Shards != cfg.Cluster.Shards {
			// The count decides every job's shard: it is changed by a
			// restart of each replica (docs/operations.md), never by a
			// reload an operator may take for the switch.
			rl.log.Warn("cluster.shards is not reloaded: restart the runner to apply the new count", "path", rl.path,
				"shards", rl.started.Cluster.Shards, "shards_in_file", cfg.Cluster.Shards)
		}
	}
	added, changed, removed := diffJobs(rl.current.Jobs, cfg.Jobs)
	rl.runner.SetJobs(Jobs(cfg))
	rl.current = cfg
	rl.appliedNL = bytes.HasSuffix(data, []byte("\n"))
	for _, w := range cfg.Warnings {
		rl.log.Warn("config warning: "+w.Msg, "where", w.Where())
	}
	if len(removed) > 0 {
		msg := "config reload removed jobs"
		if len(cfg.Jobs) == 0 {
			msg = "config reload removed every job"
		}
		rl.log.Warn(msg, "removed", capIDs(removed), "removed_count", len(removed), "jobs", len(cfg.Jobs), "path", rl.path)
		rl.logMoreIDs(slog.LevelWarn, msg, "removed", removed)
	}
	rl.log.Info("config reloaded", "jobs", len(cfg.Jobs),
		"added", capIDs(added), "changed", capIDs(changed), "removed", capIDs(removed),
		"added_count", len(added), "changed_count", len(changed), "removed_count", len(removed))
	rl.logMoreIDs(slog.LevelInfo, "config reloaded", "added", added)
	rl.logMoreIDs(slog.LevelInfo, "config reloaded", "changed", changed)
}

// logMoreIDs logs the IDs past the first maxLoggedJobs, which the line msg
// lists, in further lines of at most maxLoggedJobs each, at the same level:
// every job a reload adds, changes or removes is named somewhere (a mass
// removal by a bad deploy is when the whole list is needed), and each line
// stays bounded. The removed jobs past the first are in the WARN lines.
func (rl *reloader) logMoreIDs(level slog.Level, msg, key string, ids []string) {
	for from := maxLoggedJobs; from < len(ids); from += maxLoggedJobs {
		part := ids[from:min(from+maxLoggedJobs, len(ids))]
		rl.log.Log(context.Background(), level, "config reload job IDs, continued", "continues", msg,
			key, part, "from", from+1, key+"_count", len(ids))
	}
}

// diffJobs returns, by ID and sorted, the jobs next adds to old, the jobs
// in both whose settings differ, and the jobs next removes.
func diffJobs(old, next []config.Job) (added, changed, removed []string) {
	before := make(map[string]config.Job, len(old))
	for _, j := range old {
		before[j.ID] = j
	}
	for _, j := range next {
		o, ok := before[j.ID]
		switch {
		case !ok:
			added = append(added, j.ID)
		case !sameJob(o, j):
			changed = append(changed, j.ID)
		}
		delete(before, j.ID)
	}
	for id := range before {
		removed = append(removed, id)
	}
	slices.Sort(added)
	slices.Sort(changed)
	slices.Sort(removed)
	return added, changed, removed
}

// sameJob compares two jobs by their settings, the fields read from the
// file's keys, not by where they are in the file or what was derived from
// them (yaml:"-" and unexported fields).
func sameJob(a, b config.Job) bool {
	va, vb := reflect.ValueOf(a), reflect.ValueOf(b)
	for _, f := range reflect.VisibleFields(va.Type()) {
		if !f.IsExported() || f.Tag.Get("yaml") == "-" {
			continue
		}
		if !reflect.DeepEqual(va.FieldByIndex(f.Index).Interface(), vb.FieldByIndex(f.Index).Interface()) {
			return false
		}
	}
	return true
}

// capIDs keeps a log line bounded: at most maxLoggedJobs IDs, then "… N
// more" (logMoreIDs lists them).
func capIDs(ids []string) []string {
	if ids == nil {
		return []string{}
	}
	if len(ids) <= maxLoggedJobs {
		return ids
	}
	return append(slices.Clip(ids[:maxLoggedJobs]), fmt.Sprintf("… %d more in the next lines (config reload job IDs, continued)", len(ids)-maxLoggedJobs))
}

// changedSettings names the settings (the keys as the file spells them,
// e.g. "cluster.shards", or a whole section) that differ between old and
// next: a section's own keys, one level down, else the section.
func changedSettings(old, next config.Config) []string {
	var keys []string
	ov, nv := reflect.ValueOf(old), reflect.ValueOf(next)
	for i := range ov.NumField() {
		f := ov.Type().Field(i)
		section, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if !f.IsExported() || section == "" || section == "-" || reflect.DeepEqual(ov.Field(i).Interface(), nv.Field(i).Interface()) {
			continue
		}
		before, after := len(keys), ov.Field(i)
		if after.Kind() == reflect.Struct {
			for j := range after.NumField() {
				sf := after.Type().Field(j)
				key, _, _ := strings.Cut(sf.Tag.Get("yaml"), ",")
				if sf.IsExported() && key != "" && key != "-" &&
					!reflect.DeepEqual(after.Field(j).Interface(), nv.Field(i).Field(j).Interface()) {
					keys = append(keys, section+"."+key)
				}
			}
		}
		if len(keys) == before {
			keys = append(keys, section)
		}
	}
	return keys
}
