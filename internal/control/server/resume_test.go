package server_test

import (
	"context"
	"testing"

	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestStreamResumesWithADelta: a node that reconnects to a server (here
// the same one restarted; in HA another replica) sends the digest of the
// map it holds and gets a delta from it instead of a full map: what
// changed while it was away (a peer renamed, a peer deleted, a peer
// added) is in its map afterwards, and no full map was sent to it.
func TestStreamResumesWithADelta(t *testing.T) {
	e := newEnv(t, server.Options{})
	e.start()
	a := e.join("alpha", e.reuse)
	b := e.join("bravo", e.reuse)
	c := e.join("charlie", e.reuse)
	a.waitMap("bravo and charlie", pushWait, hasPeers(b, c))
	b.waitMap("alpha and charlie", pushWait, hasPeers(a, c)) // each holds a map to resume from
	c.waitMap("alpha and bravo", pushWait, hasPeers(a, b))
	before := a.c.NetworkMap()

	e.stop()
	ctx := context.Background()
	if err := e.st.RenameNode(ctx, int64(b.self.ID), "bravo2"); err != nil {
		t.Fatal(err)
	}
	c.stop()
	if err := e.st.DeleteNode(ctx, int64(c.self.ID)); err != nil {
		t.Fatal(err)
	}
	e.start()
	d := e.join("delta", e.reuse)
	m := a.waitMap("bravo renamed, charlie gone, delta added", pushWait, func(m *netmap.NetworkMap) bool {
		p := peerByKey(m, b.key.PublicKey())
		return p != nil && p.Name == "bravo2" && p.Online && peerByKey(m, d.key.PublicKey()) != nil && peerByKey(m, c.key.PublicKey()) == nil
	})
	if m.Version <= before.Version {
		t.Errorf("version %d after the resume, held %d: a resume continues the held map's versions", m.Version, before.Version)
	}
	b.waitMap("its own new name", pushWait, func(m *netmap.NetworkMap) bool { return m.Self.Name == "bravo2" })
	d.waitMap("alpha and bravo", pushWait, hasPeers(a, b))
	if !wait.Poll(pushWait, func() bool { return e.srv.Stats().Resumes >= 2 }) {
		st := e.srv.Stats()
		t.Fatalf("alpha's and bravo's streams not resumed: %d resumes, %d full maps", st.Resumes, st.FullMapsSent)
	}
	if st := e.srv.Stats(); st.FullMapsSent != 1 { // delta's, which held no map
		t.Errorf("%d full maps sent, want 1 (to the new node only); %d resumes", st.FullMapsSent, st.Resumes)
	}
}
