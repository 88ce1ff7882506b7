package server_test

import (
	"context"
	"slices"
	"testing"

	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/store"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// A node's relay port (reported on the stream) reaches its peers only
// once an admin approved it; with a policy, each node's filter spec says
// which relays it may use and the relay's whom it serves, and follows
// policy changes.
func TestPeerRelayInMaps(t *testing.T) {
	e := newEnv(t, server.Options{})
	ctx := context.Background()
	tagged, _, err := e.st.CreatePreAuthKey(ctx, e.user.ID, store.PreAuthKeyOptions{Reusable: true, Tags: []string{"tag:relay"}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.SetPolicy(ctx, `{
		"tagOwners": {"tag:relay": ["alice@"]},
		"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
		"peerRelays": [{"relay": ["tag:relay"], "users": ["alice@"]}],
	}`); err != nil {
		t.Fatal(err)
	}
	e.start()
	r := e.join("relay", tagged)
	a := e.join("laptop", e.reuse)
	if err := r.c.SetRelayPort(3480); err != nil {
		t.Fatal(err)
	}
	if !wait.Poll(pushWait, func() bool {
		n, err := e.st.GetNode(ctx, int64(r.self.ID))
		return err == nil && n.RelayPort == 3480
	}) {
		t.Fatal("relay port not stored")
	}
	m := a.waitMap("relay in laptop's map", pushWait, func(m *netmap.NetworkMap) bool { _, ok := m.Peer(r.self.ID); return ok })
	if p, _ := m.Peer(r.self.ID); p.RelayPort != 0 {
		t.Fatalf("unapproved relay in the laptop's map: %+v", p)
	}
	if _, err := e.st.ApproveRelay(ctx, int64(r.self.ID), true); err != nil {
		t.Fatal(err)
	}
	e.srv.Notify()
	m = a.waitMap("approved relay with its port and in the spec", pushWait, func(m *netmap.NetworkMap) bool {
		p, ok := m.Peer(r.self.ID)
		f := filterOf(t, m)
		return ok && p.RelayPort == 3480 && f != nil && slices.Equal(f.PeerRelays, []uint64{r.self.ID})
	})
	r.waitMap("the relay serves the laptop", pushWait, func(m *netmap.NetworkMap) bool {
		f := filterOf(t, m)
		return m.Self.RelayPort == 3480 && f != nil && slices.Equal(f.RelayClients, []uint64{a.self.ID})
	})
	// The policy no longer lets alice's nodes use it.
	if _, err := e.st.SetPolicy(ctx, `{
		"tagOwners": {"tag:relay": ["alice@"]},
		"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
	}`); err != nil {
		t.Fatal(err)
	}
	e.srv.Notify()
	a.waitMap("relay out of the laptop's spec", pushWait, func(m *netmap.NetworkMap) bool {
		f := filterOf(t, m)
		return f != nil && len(f.PeerRelays) == 0
	})
	r.waitMap("the relay serves no one", pushWait, func(m *netmap.NetworkMap) bool {
		f := filterOf(t, m)
		return f != nil && len(f.RelayClients) == 0
	})
	// Unapproved: the port leaves the maps.
	if _, err := e.st.ApproveRelay(ctx, int64(r.self.ID), false); err != nil {
		t.Fatal(err)
	}
	e.srv.Notify()
	a.waitMap("unapproved relay without its port", pushWait, func(m *netmap.NetworkMap) bool {
		p, ok := m.Peer(r.self.ID)
		return ok && p.RelayPort == 0
	})
}
