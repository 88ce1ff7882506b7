package daemon

import (
	"net/netip"
	"slices"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// Each map is applied as a diff: the engine is told only what changed
// (removals first), so sessions of unchanged peers keep running.
func TestMapDiff(t *testing.T) {
	sub := netip.MustParsePrefix("10.9.0.0/24")
	for _, tc := range []struct {
		name   string
		accept bool // --accept-routes
		change func(nm *netmap.NetworkMap)
		want   []string
	}{
		{name: "unchanged", change: func(*netmap.NetworkMap) {}},
		{name: "peer added", change: func(nm *netmap.NetworkMap) {
			nm.Peers = append(nm.Peers, testNode(4, "c", false, true))
		}, want: []string{"add c"}},
		{name: "peer removed", change: func(nm *netmap.NetworkMap) { nm.Peers = nm.Peers[1:] }, want: []string{"remove a"}},
		{name: "allowed IPs changed", change: func(nm *netmap.NetworkMap) {
			nm.Peers[1].AllowedIPs = append(nm.Peers[1].AllowedIPs, netip.MustParsePrefix("100.64.9.9/32"))
		}, want: []string{"allowed b"}},
		{name: "allowed IP moves", change: func(nm *netmap.NetworkMap) {
			nm.Peers[0].AllowedIPs, nm.Peers[1].AllowedIPs = nm.Peers[1].AllowedIPs, nm.Peers[0].AllowedIPs
		}, want: []string{"allowed a", "allowed b"}},
		{name: "endpoints only", change: func(nm *netmap.NetworkMap) {
			nm.Peers[0].Endpoints = []netip.AddrPort{netip.MustParseAddrPort("198.18.7.7:41641")}
		}},
		{name: "online state only", change: func(nm *netmap.NetworkMap) { nm.Peers[0].Online = false }},
		{name: "peer restarted (new disco key)", change: func(nm *netmap.NetworkMap) {
			k, _ := noise.GeneratePrivateKey()
			nm.Peers[0].DiscoKey = pubkey.Disco{PublicKey: k.PublicKey()}
		}, want: []string{"add a", "remove a"}},
		{name: "peer expired", change: func(nm *netmap.NetworkMap) { nm.Peers[1].Expiry = time.Now().Add(-time.Second) }, want: []string{"remove b"}},
		{name: "subnet route, not accepted", change: func(nm *netmap.NetworkMap) { nm.Peers[0].Routes = []netip.Prefix{sub} }},
		{name: "subnet route, accepted", accept: true, change: func(nm *netmap.NetworkMap) { nm.Peers[0].Routes = []netip.Prefix{sub} }, want: []string{"allowed a"}},
		{name: "self listed as a peer", change: func(nm *netmap.NetworkMap) { nm.Peers = append(nm.Peers, nm.Self) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, eng, r := bareDaemon(t)
			self := testNode(1, "self", false, true)
			self.Key = pubkey.Node{PublicKey: d.key.PublicKey()}
			nm := &netmap.NetworkMap{Self: self, Peers: []netmap.Node{testNode(2, "a", false, true), testNode(3, "b", false, true)},
				DNS: netmap.DNSConfig{Nameservers: []netip.Addr{netip.MustParseAddr("100.100.100.100")}}}
			names := map[noise.PublicKey]string{}
			for _, p := range nm.Peers {
				names[p.Key.PublicKey] = p.Name
			}
			d.mu.Lock()
			d.prefs.AcceptRoutes = tc.accept
			d.applyMapLocked(nm)
			d.mu.Unlock()
			if got := eng.takeOps(names); !slices.Equal(got, []string{"add a", "add b"}) {
				t.Fatalf("first map: engine ops %q", got)
			}

			next := cloneMap(nm)
			next.Version++
			tc.change(next)
			for _, p := range next.Peers {
				if _, ok := names[p.Key.PublicKey]; !ok {
					names[p.Key.PublicKey] = p.Name
				}
			}
			d.mu.Lock()
			d.applyMapLocked(next)
			d.mu.Unlock()
			if got := eng.takeOps(names); !slices.Equal(got, tc.want) {
				t.Errorf("engine ops %q, want %q", got, tc.want)
			}
			if eng.misordered {
				t.Error("a removal came after an addition in one Apply")
			}

			// The engine, the path layer and the interface match the map.
			var wantRoutes []netip.Prefix
			for i := range next.Peers {
				p := &next.Peers[i]
				got, ok := eng.allowed(p.Key.PublicKey)
				if !usable(p, self.Key, time.Now()) {
					if ok {
						t.Errorf("%s in the engine", p.Name)
					}
					continue
				}
				want := slices.Clone(p.AllowedIPs)
				if tc.accept {
					want = append(want, p.Routes...)
				}
				wantRoutes = append(wantRoutes, p.AllowedIPs...)
				if !equalPrefixes(got, sorted(want)) {
					t.Errorf("%s: allowed IPs %v, want %v", p.Name, got, sorted(want))
				}
				eng.mu.Lock()
				i := slices.IndexFunc(eng.msPeers, func(x magicsock.PeerInfo) bool { return x.Key == p.Key })
				if i < 0 || !slices.Equal(eng.msPeers[i].Endpoints, p.Endpoints) || eng.msPeers[i].DiscoKey != p.DiscoKey {
					t.Errorf("%s: path layer not given its endpoints and disco key", p.Name)
				}
				eng.mu.Unlock()
			}
			r.get(func(r *fakeRouter) {
				wantAddrs := sorted(append(slices.Clone(self.Addresses), netip.MustParsePrefix("100.100.100.100/32")))
				if !equalPrefixes(r.addrs, wantAddrs) || !equalPrefixes(r.routes, sorted(wantRoutes)) {
					t.Errorf("interface: addresses %v routes %v; want %v and %v", r.addrs, r.routes, wantAddrs, sorted(wantRoutes))
				}
			})
		})
	}
}

func cloneMap(nm *netmap.NetworkMap) *netmap.NetworkMap {
	c := *nm
	c.Peers = slices.Clone(nm.Peers)
	for i := range c.Peers {
		c.Peers[i].AllowedIPs = slices.Clone(c.Peers[i].AllowedIPs)
		c.Peers[i].Routes = slices.Clone(c.Peers[i].Routes)
	}
	return &c
}
