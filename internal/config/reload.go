package config

import (
	"context"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
)

// OnSIGHUP calls fn for every SIGHUP until ctx ends (systemctl reload
// sends one). fn runs on one goroutine, one call at a time. It returns
// once the signal is being caught, so that a SIGHUP sent after it does
// not kill the process.
func OnSIGHUP(ctx context.Context, fn func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGHUP)
	go func() {
		defer signal.Stop(ch)
		for {
			select {
			case <-ctx.Done():
				return
			case <-ch:
				fn()
			}
		}
	}()
}

// Reload reads the layers again (the file may have changed; the
// environment and flags have not) for a SIGHUP. It logs one line: the
// error (prev stays in force), or the keys applied and those that need a
// restart. It returns the config to run with: the new values of the
// reloadable keys, prev's of all others.
func (f *Flags) Reload(prev *Config, log *slog.Logger) *Config {
	next, err := f.Load(nil)
	if err != nil {
		log.Error("config: reload failed, keeping the running configuration", "err", err)
		return prev
	}
	reload, restart := next.Changed(prev)
	out := &Config{schema: prev.schema, File: next.File, vals: map[string]any{}, from: map[string]string{}}
	for _, s := range prev.schema.specs {
		src := prev
		if s.reloadable {
			src = next
		}
		out.vals[s.name], out.from[s.name] = src.vals[s.name], src.from[s.name]
	}
	switch {
	case len(restart) > 0:
		log.Warn("config: reloaded; some changes need a restart", "file", next.File, "applied", reload, "restart_needed", restart)
	default:
		log.Info("config: reloaded", "file", next.File, "applied", reload)
	}
	return out
}
