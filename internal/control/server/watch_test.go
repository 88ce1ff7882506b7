package server_test

import (
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/server"
)

// A watcher is woken when a node goes online and again when it goes
// offline, and Nodes shows the new state each time, without any Notify:
// the node's own stream writes it and the worker applies it.
func TestWatchNodesSeesOnlineAndOffline(t *testing.T) {
	e := newEnv(t, server.Options{})
	e.start()
	ch, stop := e.srv.WatchNodes()
	defer stop()
	online := func(id uint64) (bool, bool) {
		for _, n := range e.srv.Nodes() {
			if n.ID == id {
				return n.Online, true
			}
		}
		return false, false
	}
	a := e.join("alpha", e.reuse)
	waitWoken(t, ch, "alpha online", func() bool { on, ok := online(a.self.ID); return ok && on })
	a.stop()
	waitWoken(t, ch, "alpha offline", func() bool { on, ok := online(a.self.ID); return ok && !on })
	stop()
	stop() // twice is harmless
}

// waitWoken waits for wake-ups on ch until cond holds.
func waitWoken(t *testing.T, ch <-chan struct{}, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(pushWait)
	for !cond() {
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("no wake-up showed %s", what)
		}
	}
}
