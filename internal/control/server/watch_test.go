package server_test

import (
	"context"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/client"
	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/testutil/wait"
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

// A node's OS and version, reported on its map stream, are stored for
// admins; an unprintable one is refused without ending the stream.
func TestHostinfoStored(t *testing.T) {
	e := newEnv(t, server.Options{})
	e.start()
	ctx := context.Background()
	for _, c := range []struct{ os, version, wantOS string }{{"linux", "1.2.3", "linux"}, {"linux\x1b[2J", "1.2.3", ""}} {
		n := e.joinNode(&node{t: t, key: genKey(t)}, "host", e.reuse, "")
		n.stop()
		cl, err := client.New(client.Config{ServerURL: e.url(), ServerKey: pubkey.Server{PublicKey: e.key.PublicKey()}, NodeKey: n.key,
			OS: c.os, Version: c.version, MinBackoff: 10 * time.Millisecond, MaxBackoff: 100 * time.Millisecond})
		if err != nil {
			t.Fatal(err)
		}
		n.c = cl
		before := n.maps.Load()
		n.run()
		// The full map is sent after the hostinfo is written: a stream
		// that got it survived the report.
		wait.For(t, pushWait, "a map on the new stream", func() bool { return n.maps.Load() > before })
		hi, err := e.st.ListHostinfo(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if h := hi[int64(n.self.ID)]; h.OS != c.wantOS || (c.wantOS != "" && h.Version != c.version) {
			t.Fatalf("reported %q %q: stored %+v", c.os, c.version, h)
		}
		n.stop()
	}
}
