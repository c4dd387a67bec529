package fxmodule

import (
	"bytes"
	"context"
	"crypto/sha256"
	"log/slog"
	"os"
	"os/signal"
	"reflect"
	"syscall"
	"time"

	"github.com/pacerun/pacer/runner"
	"github.com/pacerun/pacer/runner/config"
	"github.com/pacerun/pacer/runner/pluginhost"
)

// reloadPoll is how often the config file is checked for changes.
const reloadPoll = 2 * time.Second

// reloader re-reads the config on SIGHUP and when the file changes. A valid
// new config replaces the jobs (by ID: running runs go on, no slot runs
// twice); an invalid one is rejected with its errors and the last good one
// keeps running.
type reloader struct {
	path    string
	current *config.Config
	runner  *runner.Runner
	host    *pluginhost.Host
	log     *slog.Logger
	sum     [sha256.Size]byte
}

func (rl *reloader) run(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	rl.sum, _ = fileSum(rl.path)
	t := time.NewTicker(reloadPoll)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			rl.log.Info("SIGHUP: reloading the config", "path", rl.path)
			rl.reload(ctx)
		case <-t.C:
			if sum, err := fileSum(rl.path); err == nil && !bytes.Equal(sum[:], rl.sum[:]) {
				rl.log.Info("config file changed: reloading", "path", rl.path)
				rl.reload(ctx)
			}
		}
	}
}

func (rl *reloader) reload(ctx context.Context) {
	rl.sum, _ = fileSum(rl.path)
	cfg, err := config.Load(rl.path)
	if err == nil {
		err = rl.host.CheckTasks(ctx, TaskRefs(rl.path, cfg))
	}
	if err != nil {
		rl.log.Error("config reload rejected; the last good config keeps running", "path", rl.path, "error", err.Error())
		return
	}
	old := *rl.current
	next := *cfg
	old.Jobs, next.Jobs = nil, nil
	if !reflect.DeepEqual(old, next) {
		rl.log.Warn("only jobs are reloaded; restart the runner to apply the other changes", "path", rl.path)
	}
	rl.runner.SetJobs(Jobs(cfg))
	rl.current = cfg
	rl.log.Info("config reloaded", "jobs", len(cfg.Jobs))
}

func fileSum(path string) ([sha256.Size]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return [sha256.Size]byte{}, err
	}
	return sha256.Sum256(b), nil
}
