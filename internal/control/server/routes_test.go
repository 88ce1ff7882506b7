package server_test

import (
	"context"
	"net/netip"
	"slices"
	"testing"

	"github.com/warrenmesh/warren/internal/control/server"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// A node's advertised routes reach its peers only once approved (as the
// intersection with the approved ones) and follow later SetRoutes on the
// stream.
func TestRoutesReachPeers(t *testing.T) {
	e := newEnv(t, server.Options{})
	e.start()
	a := e.join("alpha", e.reuse)
	b := e.join("bravo", e.reuse)
	lan := netip.MustParsePrefix("198.19.1.0/24")
	if err := a.c.SetRoutes([]netip.Prefix{lan}); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if !wait.Poll(pushWait, func() bool {
		n, err := e.st.GetNode(ctx, int64(a.self.ID))
		return err == nil && slices.Equal(n.AdvertisedRoutes, []netip.Prefix{lan})
	}) {
		t.Fatal("advertised route not stored")
	}
	m := b.waitMap("alpha", pushWait, func(m *netmap.NetworkMap) bool { _, ok := m.Peer(a.self.ID); return ok })
	if p, _ := m.Peer(a.self.ID); len(p.Routes) != 0 {
		t.Fatalf("unapproved route in bravo's map: %+v", p)
	}
	// Pre-approve the exit routes too: only the advertised route is enabled.
	if _, err := e.st.ApproveRoutes(ctx, int64(a.self.ID), []netip.Prefix{lan, netip.MustParsePrefix("0.0.0.0/0")}, nil); err != nil {
		t.Fatal(err)
	}
	e.srv.Notify()
	b.waitMap("alpha's approved route", pushWait, func(m *netmap.NetworkMap) bool {
		p, ok := m.Peer(a.self.ID)
		return ok && slices.Equal(p.Routes, []netip.Prefix{lan})
	})
	a.waitMap("alpha's own route", pushWait, func(m *netmap.NetworkMap) bool { return slices.Equal(m.Self.Routes, []netip.Prefix{lan}) })
	// Advertising the exit routes enables the pre-approved one; withdrawing
	// everything empties the list.
	if err := a.c.SetRoutes([]netip.Prefix{netip.MustParsePrefix("0.0.0.0/0"), lan}); err != nil {
		t.Fatal(err)
	}
	b.waitMap("alpha as exit node", pushWait, func(m *netmap.NetworkMap) bool {
		p, ok := m.Peer(a.self.ID)
		return ok && p.IsExitNode() && len(p.Routes) == 2
	})
	if err := a.c.SetRoutes(nil); err != nil {
		t.Fatal(err)
	}
	b.waitMap("alpha without routes", pushWait, func(m *netmap.NetworkMap) bool {
		p, ok := m.Peer(a.self.ID)
		return ok && len(p.Routes) == 0
	})
}
