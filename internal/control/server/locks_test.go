package server_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// stallingStore is the server's store with one write that sticks: once
// armed, the next SetOnline(online) blocks until release is closed; stuck
// is closed when it does.
type stallingStore struct {
	server.Store
	armed   atomic.Bool
	stuck   chan struct{}
	release chan struct{}
}

func (s *stallingStore) SetOnline(ctx context.Context, id int64, online bool, at time.Time) error {
	if online && s.armed.CompareAndSwap(true, false) {
		close(s.stuck)
		<-s.release
	}
	return s.Store.SetOnline(ctx, id, online, at)
}

// TestWorldNotLockedAcrossStoreWrites: the server holds no lock across a
// store write. While the write behind one node's stream (the node coming
// online) is stuck, what only needs the world goes on: Stats (what
// /metrics reads), another node joining and getting its full map, and the
// delta telling the nodes already there. Before #17 the stream wrote to
// the store under the world lock, and all of these waited for the write
// (this test failed there at "Stats").
func TestWorldNotLockedAcrossStoreWrites(t *testing.T) {
	checkLeaks(t)
	st := &stallingStore{stuck: make(chan struct{}), release: make(chan struct{})}
	e := newEnv(t, server.Options{PollInterval: time.Hour})
	e.WrapStore = func(s server.Store) server.Store { st.Store = s; return st }
	e.start()
	var released atomic.Bool
	release := func() {
		if released.CompareAndSwap(false, true) {
			close(st.release)
		}
	}
	t.Cleanup(release) // before the server stops (cleanups run last first)

	a := e.join("alpha", e.reuse)
	a.waitMap("its full map", pushWait, func(*netmap.NetworkMap) bool { return true })
	st.armed.Store(true)
	b := e.join("bravo", e.reuse) // registers; its stream's write of it online sticks
	select {
	case <-st.stuck:
	case <-time.After(pushWait):
		t.Fatal("bravo's stream never wrote it online")
	}

	stats := make(chan server.Stats, 1)
	go func() { stats <- e.srv.Stats() }()
	select {
	case s := <-stats:
		if s.NodesOnline < 1 {
			t.Fatalf("Stats: %d nodes online, want alpha at least", s.NodesOnline)
		}
	case <-time.After(pushWait):
		t.Fatal("Stats (which reads the world) blocked behind bravo's stuck store write")
	}
	c := e.join("charlie", e.reuse)
	c.waitMap("alpha online, in charlie's full map", pushWait, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, a.key.PublicKey())
		return p != nil && p.Online
	})
	a.waitMap("charlie online", pushWait, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, c.key.PublicKey())
		return p != nil && p.Online
	})
	if b.maps.Load() != 0 {
		t.Fatal("bravo got a map before its store write was done")
	}

	release()
	b.waitMap("alpha and charlie", pushWait, hasPeers(a, c))
	wait.For(t, pushWait, "bravo online in alpha's and charlie's maps", func() bool {
		for _, n := range []*node{a, c} {
			p := peerByKey(n.c.NetworkMap(), b.key.PublicKey())
			if p == nil || !p.Online {
				return false
			}
		}
		return true
	})
}
