package daemon

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/localapi"
)

// A map's peers become engine peers and its addresses and routes the
// interface's; a change touches only what changed.
func TestMapApplication(t *testing.T) {
	cs := startServer(t)
	a := joinPeer(t, cs, "alpha")
	td := startDaemon(t, cs)
	if s := td.d.Status().BackendState; s != localapi.StateNeedsLogin {
		t.Fatalf("fresh daemon: state %q, want %q", s, localapi.StateNeedsLogin)
	}
	st := td.up("node")
	if st.Self == nil {
		t.Fatal("up: no self in status")
	}

	// Peer present at join: in the engine, its addresses routed into the
	// tunnel; this node's addresses and the MagicDNS ones on the link.
	td.waitPeer("peer at join", a.pub(), a.hosts()...)
	if got := td.eng.privateKey().PublicKey(); got != td.key() {
		t.Errorf("engine key %s, want the node's %s", got, td.key())
	}
	nm := td.d.Status()
	if len(nm.Self.Addresses) == 0 {
		t.Fatal("no addresses for self")
	}
	var selfAddrs []netip.Prefix
	for _, ad := range nm.Self.Addresses {
		selfAddrs = append(selfAddrs, netip.PrefixFrom(ad, ad.BitLen()))
	}
	td.waitRouter("addresses", func(r *fakeRouter) bool {
		for _, p := range selfAddrs {
			if !slices.Contains(r.addrs, p) {
				return false
			}
		}
		return slices.Contains(r.addrs, netip.MustParsePrefix("100.100.100.100/32")) && equalPrefixes(r.routes, sorted(a.hosts()))
	})

	// A peer joins: added, the first one untouched.
	b := joinPeer(t, cs, "bravo")
	td.waitPeer("peer joined", b.pub(), b.hosts()...)
	td.waitRouter("routes for both peers", func(r *fakeRouter) bool {
		return equalPrefixes(r.routes, sorted(append(a.hosts(), b.hosts()...)))
	})
	td.waitPeer("first peer kept", a.pub(), a.hosts()...)

	// A peer's approved subnet route changes its allowed IPs only with
	// --accept-routes.
	sub := netip.MustParsePrefix("10.9.0.0/24")
	r := joinPeer(t, cs, "router", sub)
	td.waitPeer("router joined", r.pub(), r.hosts()...)
	cs.ApproveRoutes(r.pub(), []netip.Prefix{sub}, nil)
	waitPeerRoutes(t, td, "router", []netip.Prefix{sub})
	td.waitPeer("route not accepted", r.pub(), r.hosts()...)
	accept := true
	if _, err := td.d.SetRoutePrefs(t.Context(), localapi.RoutePrefs{AcceptRoutes: &accept}); err != nil {
		t.Fatal(err)
	}
	td.waitPeer("route accepted", r.pub(), append(r.hosts(), sub)...)
	td.waitRouter("subnet in table 52", func(r *fakeRouter) bool { return equalPrefixes(r.tunnel, []netip.Prefix{sub}) })

	// A peer deleted: removed from the engine and its routes from the link.
	cs.DeleteNode(b.pub())
	td.waitNoPeer("deleted peer removed", b.pub())
	td.waitRouter("deleted peer's routes removed", func(r *fakeRouter) bool {
		return !slices.ContainsFunc(b.hosts(), func(p netip.Prefix) bool { return slices.Contains(r.routes, p) })
	})
	td.waitPeer("other peer kept", a.pub(), a.hosts()...)

	// A peer whose key expires leaves the engine when the expiry passes,
	// without a new map.
	cs.SetExpiry(a.pub(), time.Now().Add(300*time.Millisecond))
	td.waitNoPeer("expired peer removed", a.pub())
}

// waitPeerRoutes waits until the daemon's map says peer name has
// routes.
func waitPeerRoutes(t *testing.T, td *testDaemon, name string, want []netip.Prefix) {
	t.Helper()
	waitFor(t, "routes of "+name+" in the map", func() bool {
		for _, p := range td.d.RouteStatus().Peers {
			if p.Name == name && equalPrefixes(sorted(p.Routes), sorted(want)) {
				return true
			}
		}
		return false
	})
}
