package daemon

import (
	"context"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/pubkey"
)

func TestRoutesAndDNS(t *testing.T) {
	cs := startServer(t)
	td := startDaemon(t, cs)
	sub := netip.MustParsePrefix("10.9.0.0/24")
	r := joinPeer(t, cs, "router", sub)
	cs.ApproveRoutes(r.pub(), []netip.Prefix{sub}, nil)
	td.up("node")
	waitPeerRoutes(t, td, "router", []netip.Prefix{sub})

	set := func(p localapi.RoutePrefs) {
		t.Helper()
		if _, err := td.d.SetRoutePrefs(t.Context(), p); err != nil {
			t.Fatal(err)
		}
	}
	yes, no := true, false

	// --accept-routes on and off.
	set(localapi.RoutePrefs{AcceptRoutes: &yes})
	td.waitPeer("accepted", r.pub(), append(r.hosts(), sub)...)
	td.waitRouter("accepted in table 52", func(r *fakeRouter) bool { return equalPrefixes(r.tunnel, []netip.Prefix{sub}) })
	set(localapi.RoutePrefs{AcceptRoutes: &no})
	td.waitPeer("not accepted", r.pub(), r.hosts()...)
	td.waitRouter("table 52 empty", func(r *fakeRouter) bool { return len(r.tunnel) == 0 })

	// --advertise-routes: the server learns them; once approved the node
	// forwards for them; unapproved, it stops.
	own := netip.MustParsePrefix("10.7.0.0/24")
	if _, err := td.d.SetRoutePrefs(t.Context(), localapi.RoutePrefs{AdvertiseRoutes: &[]netip.Prefix{exitRoutes[0]}}); err == nil {
		t.Error("--advertise-routes 0.0.0.0/0 accepted")
	}
	set(localapi.RoutePrefs{AdvertiseRoutes: &[]netip.Prefix{own}})
	waitFor(t, "advertised route at the server", func() bool {
		return slices.Contains(cs.Node(td.key()).AdvertisedRoutes, own)
	})
	cs.ApproveRoutes(td.key(), []netip.Prefix{own}, nil)
	td.waitRouter("forwarding for the approved route", func(r *fakeRouter) bool { return equalPrefixes(r.forwarding, []netip.Prefix{own}) })
	cs.ApproveRoutes(td.key(), nil, []netip.Prefix{own})
	td.waitRouter("forwarding off", func(r *fakeRouter) bool { return len(r.forwarding) == 0 })

	// --accept-dns: the host resolver points at MagicDNS with the
	// tailnet's search domain, and back.
	st, err := td.d.Up(t.Context(), localapi.UpRequest{AcceptDNS: &yes})
	if err != nil {
		t.Fatal(err)
	}
	td.waitRouter("host resolver set", func(r *fakeRouter) bool {
		return slices.Contains(r.resolver, netip.MustParseAddr("100.100.100.100")) && slices.Contains(r.search, st.Domain)
	})
	if _, err := td.d.Up(t.Context(), localapi.UpRequest{AcceptDNS: &no}); err != nil {
		t.Fatal(err)
	}
	td.waitRouter("host resolver restored", func(r *fakeRouter) bool { return r.resolver == nil })
}

func TestLifecycle(t *testing.T) {
	cs := startServer(t)
	td := startDaemon(t, cs)
	p := joinPeer(t, cs, "peer")
	yes := true
	if _, err := td.d.Up(t.Context(), localapi.UpRequest{}); err == nil || !strings.Contains(err.Error(), "not registered") {
		t.Fatalf("up without a key on a new node: %v", err)
	}
	if err := td.d.Down(t.Context()); err == nil {
		t.Fatal("down on a node never registered: no error")
	}
	if _, err := td.d.Up(t.Context(), localapi.UpRequest{ServerURL: cs.URL(), AuthKey: cs.ReusableKey, Hostname: "node", AcceptDNS: &yes}); err != nil {
		t.Fatal(err)
	}
	td.waitState(localapi.StateRunning)
	td.waitPeer("up", p.pub(), p.hosts()...)
	td.waitRouter("resolver set", func(r *fakeRouter) bool { return r.resolver != nil })
	first := td.key()

	// Down: off the mesh (no peers, addresses, routes; resolver back),
	// still registered.
	if err := td.d.Down(t.Context()); err != nil {
		t.Fatal(err)
	}
	td.waitState(localapi.StateStopped)
	if ks := td.eng.peerKeys(); len(ks) != 0 {
		t.Errorf("down: engine still has peers %v", ks)
	}
	td.router.get(func(r *fakeRouter) {
		if len(r.addrs) != 0 || len(r.routes) != 0 || r.resolver != nil {
			t.Errorf("down: addresses %v routes %v resolver %v left", r.addrs, r.routes, r.resolver)
		}
	})

	// Up again: same node, same key.
	if _, err := td.d.Up(t.Context(), localapi.UpRequest{}); err != nil {
		t.Fatal(err)
	}
	td.waitState(localapi.StateRunning)
	td.waitPeer("up again", p.pub(), p.hosts()...)
	if td.key() != first {
		t.Fatal("up after down changed the key")
	}

	// Key rotation: the server and the peers get the new key; name and
	// addresses stay; the engine uses it.
	before := cs.Node(first)
	if _, err := td.d.Up(t.Context(), localapi.UpRequest{ForceReauth: true}); err != nil {
		t.Fatal(err)
	}
	second := td.key()
	if second == first {
		t.Fatal("force-reauth kept the key")
	}
	if td.eng.privateKey().PublicKey() != second {
		t.Error("engine not on the rotated key")
	}
	if after := cs.Node(second); after.ID != before.ID || after.Hostname != before.Hostname {
		t.Errorf("rotation made another node: %+v, was %+v", after, before)
	}
	waitFor(t, "peer sees the new key", func() bool {
		m := p.c.NetworkMap()
		return m != nil && slices.ContainsFunc(m.Peers, func(n netmap.Node) bool { return n.Key.PublicKey == second })
	})
	td.waitState(localapi.StateRunning)

	// Logout: the server forgets the node, the daemon its key.
	if err := td.d.Logout(t.Context()); err != nil {
		t.Fatal(err)
	}
	td.waitState(localapi.StateNeedsLogin)
	if _, err := cs.Store.GetNodeByKey(context.Background(), pubkey.Node{PublicKey: second}); err == nil {
		t.Error("logout: the server still has the node")
	}
	if td.key() == second || td.eng.privateKey().PublicKey() != td.key() {
		t.Error("logout: key not replaced in the daemon and the engine")
	}
	if h := td.d.Status().Health; len(h) != 0 {
		t.Errorf("logout with the server answering: health %q", h)
	}
	if ks := td.eng.peerKeys(); len(ks) != 0 {
		t.Errorf("logout: engine still has peers %v", ks)
	}

	// Join again as a new node, then the server expires it: refused,
	// back to needs-login with a reason.
	td.up("node2")
	td.waitPeer("rejoined", p.pub(), p.hosts()...)
	cs.SetExpiry(td.key(), time.Now().Add(-time.Minute))
	td.waitState(localapi.StateNeedsLogin)
	if h := td.d.Status().Health; len(h) != 1 || !strings.Contains(h[0], "refused") {
		t.Errorf("expired: health %q, want the refusal only", h)
	}
	td.waitNoPeer("expired: off the mesh", p.pub())
}

// A node that was up when its daemon stopped comes back up at the next
// start on its saved map, before (and without) the server, then follows
// the server again; the host configuration is undone at stop.
func TestRestartOnSavedMap(t *testing.T) {
	cs := startServer(t)
	p := joinPeer(t, cs, "peer")
	dir := t.TempDir()
	td := startDaemonIn(t, cs, dir)
	td.up("node")
	td.waitPeer("up", p.pub(), p.hosts()...)
	key := td.key()

	td.stop()
	td.router.get(func(r *fakeRouter) {
		if len(r.addrs) != 0 || len(r.tunnel) != 0 {
			t.Errorf("after stop: addresses %v table 52 %v left", r.addrs, r.tunnel)
		}
	})
	cs.Stop()

	td2 := startDaemonIn(t, cs, dir)
	td2.waitState(localapi.StateRunning)
	td2.waitPeer("on the saved map, server down", p.pub(), p.hosts()...)
	if td2.key() != key {
		t.Fatal("restart changed the node key")
	}
	if td2.d.Status().Connected {
		t.Error("connected with the server down")
	}
	td2.router.get(func(r *fakeRouter) {
		if r.cleanups != 1 {
			t.Errorf("leftovers of a crash removed %d times at start, want once", r.cleanups)
		}
	})

	cs.Start()
	q := joinPeer(t, cs, "newcomer")
	td2.waitPeer("server back: new peer", q.pub(), q.hosts()...)
	waitFor(t, "connected", func() bool { return td2.d.Status().Connected })
}

// A node taken down stays down across a restart.
func TestRestartStaysDown(t *testing.T) {
	cs := startServer(t)
	dir := t.TempDir()
	td := startDaemonIn(t, cs, dir)
	td.up("node")
	if err := td.d.Down(t.Context()); err != nil {
		t.Fatal(err)
	}
	td.stop()
	td2 := startDaemonIn(t, cs, dir)
	if s := td2.d.Status().BackendState; s != localapi.StateStopped {
		t.Fatalf("restarted after down: state %q, want %q", s, localapi.StateStopped)
	}
	if ks := td2.eng.peerKeys(); len(ks) != 0 {
		t.Errorf("restarted after down: engine has peers %v", ks)
	}
}
