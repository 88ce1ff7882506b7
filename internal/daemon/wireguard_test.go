package daemon

import (
	"context"
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
	"github.com/warrenmesh/warren/internal/store"
)

// WireGuard-only members: a member of another gateway is no engine peer
// here, its addresses go on that gateway's allowed IPs and the interface
// routes; a member of this node is an engine peer of its own, a plain peer
// of the path layer, and its addresses are forwarded; deleting it removes
// the peer.
func TestWireGuardMembers(t *testing.T) {
	cs := startServer(t)
	gw := joinPeer(t, cs, "gw")
	td := startDaemon(t, cs)
	td.up("node")
	td.waitPeer("gateway", gw.pub(), gw.hosts()...)
	add := func(name string, via noise.PublicKey) (*store.Node, noise.PublicKey) {
		t.Helper()
		k, err := noise.GeneratePrivateKey()
		if err != nil {
			t.Fatal(err)
		}
		n, err := cs.Store.AddWireGuardNode(context.Background(), store.WireGuardNode{UserID: cs.User.ID, Name: name,
			Key: pubkey.Node{PublicKey: k.PublicKey()}, Via: cs.Node(via).ID})
		if err != nil {
			t.Fatal(err)
		}
		cs.Server().Notify()
		return n, k.PublicKey()
	}
	hosts := func(n *store.Node) []netip.Prefix {
		return []netip.Prefix{netip.PrefixFrom(n.IPv4, 32), netip.PrefixFrom(n.IPv6, 128)}
	}

	// Behind the other gateway.
	phone, phoneKey := add("phone", gw.pub())
	td.waitPeer("phone's addresses on the gateway", gw.pub(), append(gw.hosts(), hosts(phone)...)...)
	td.waitNoPeer("phone is no engine peer here", phoneKey)
	td.waitRouter("phone routed into the tunnel", func(r *fakeRouter) bool {
		return slices.Contains(r.routes, hosts(phone)[0]) && slices.Contains(r.routes, hosts(phone)[1])
	})

	waitFor(t, "status names the phone's gateway", func() bool {
		for _, p := range td.d.Status().Peers {
			if p.Name == "phone" {
				return p.Via == "gw"
			}
		}
		return false
	})
	// Its handshake and traffic as its gateway reported them.
	hs, at := time.Now().Add(-time.Minute).UTC().Truncate(time.Second), time.Now().UTC().Truncate(time.Second)
	if err := cs.Store.ReportWireGuard(context.Background(), cs.Node(gw.pub()).ID, []store.WireGuardReport{{ID: phone.ID, Online: true,
		LastHandshake: hs, RxBytes: 5000, TxBytes: 7000, At: at}}); err != nil {
		t.Fatal(err)
	}
	cs.Server().Notify()
	waitFor(t, "status shows the phone's traffic as its gateway reported it", func() bool {
		for _, p := range td.d.Status().Peers {
			if p.Name == "phone" {
				return p.Online && p.LastHandshake.Equal(hs) && p.RxBytes == 5000 && p.TxBytes == 7000 && p.TrafficReportedAt.Equal(at)
			}
		}
		return false
	})

	// Behind this node.
	router, routerKey := add("router", td.key())
	td.waitPeer("router is an engine peer here", routerKey, hosts(router)...)
	waitFor(t, "router is a plain peer of the path layer", func() bool {
		td.eng.mu.Lock()
		defer td.eng.mu.Unlock()
		i := slices.IndexFunc(td.eng.msPeers, func(p magicsock.PeerInfo) bool { return p.Key.PublicKey == routerKey })
		j := slices.IndexFunc(td.eng.msPeers, func(p magicsock.PeerInfo) bool { return p.Key.PublicKey == gw.pub() })
		return i >= 0 && td.eng.msPeers[i].Plain && j >= 0 && !td.eng.msPeers[j].Plain
	})
	td.waitPeer("the gateway keeps only its own members", gw.pub(), append(gw.hosts(), hosts(phone)...)...)
	dsts := func() []netip.Prefix {
		td.d.mu.Lock()
		defer td.d.mu.Unlock()
		return td.d.filter.dsts.Routes
	}
	waitFor(t, "this gateway's filter lets the member's packets through", func() bool {
		r := dsts()
		return slices.Contains(r, hosts(router)[0]) && slices.Contains(r, gw.hosts()[0])
	})

	// Expired: the peer goes when the expiry passes.
	tv, tvKey := add("tv", td.key())
	td.waitPeer("tv is an engine peer here", tvKey, hosts(tv)...)
	cs.SetExpiry(tvKey, time.Now().Add(300*time.Millisecond))
	td.waitNoPeer("expired member removed", tvKey)

	// Deleted: the peer goes.
	cs.DeleteNode(routerKey)
	td.waitNoPeer("deleted member removed", routerKey)
	waitFor(t, "no forwarding for the deleted member", func() bool { return !slices.Contains(dsts(), hosts(router)[0]) })
}
