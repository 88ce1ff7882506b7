package daemon

import (
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/magicsock"
	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/noise"
	"github.com/warrenmesh/warren/internal/pubkey"
)

// bareDaemon is a daemon with fakes that is never Run: tests apply maps
// to it directly, on the caller's goroutine.
func bareDaemon(t *testing.T) (*Daemon, *fakeEngine, *fakeRouter) {
	t.Helper()
	dir := t.TempDir()
	d, err := New(Config{StateDir: filepath.Join(dir, "state"), Socket: filepath.Join(dir, "sock"), TUN: "wtest0"})
	if err != nil {
		t.Fatal(err)
	}
	if err := ensureStateDir(d.cfg.StateDir); err != nil {
		t.Fatal(err)
	}
	if d.key, err = noise.GeneratePrivateKey(); err != nil {
		t.Fatal(err)
	}
	eng, r := newFakeEngine(), &fakeRouter{}
	d.eng, d.router = eng, r
	t.Cleanup(func() {
		d.mu.Lock()
		d.clearMapLocked()
		d.mu.Unlock()
		d.stopDrop()
	})
	return d, eng, r
}

// testNode is a peer of a crafted map: node i has 100.64.0.i.
func testNode(i int, name string, exit, online bool) netmap.Node {
	k, _ := noise.GeneratePrivateKey()
	a := netip.PrefixFrom(netip.AddrFrom4([4]byte{100, 64, 0, byte(i)}), 32)
	n := netmap.Node{ID: uint64(i), Name: name, Key: pubkey.Node{PublicKey: k.PublicKey()}, Addresses: []netip.Prefix{a},
		AllowedIPs: []netip.Prefix{a}, Online: online, DiscoKey: pubkey.Disco{PublicKey: k.PublicKey()}}
	if exit {
		n.Routes = slices.Clone(exitRoutes)
	}
	return n
}

// Exit node selection, one map at a time: which peer's default routes
// the engine and table 52 get, and when internet traffic is blocked.
func TestExitSelection(t *testing.T) {
	past := time.Now().Add(-time.Hour)
	for _, tc := range []struct {
		name    string
		pref    string
		peers   func() []netmap.Node
		rtt     map[string]time.Duration
		dead    []string
		want    string // exit node in use; "" none
		blocked bool
		health  string // a substring of the health line; "" none
	}{
		{name: "none asked", pref: "", peers: func() []netmap.Node { return []netmap.Node{testNode(2, "e1", true, true)} }},
		{name: "named", pref: "e1", want: "e1",
			peers: func() []netmap.Node {
				return []netmap.Node{testNode(2, "e1", true, true), testNode(3, "e2", true, true)}
			}},
		{name: "named by address", pref: "100.64.0.3", want: "e2",
			peers: func() []netmap.Node {
				return []netmap.Node{testNode(2, "e1", true, true), testNode(3, "e2", true, true)}
			}},
		{name: "named offline is kept", pref: "e1", want: "e1", health: "e1 is offline",
			peers: func() []netmap.Node { return []netmap.Node{testNode(2, "e1", true, false)} }},
		{name: "named missing", pref: "gone", blocked: true, health: "not in the network map",
			peers: func() []netmap.Node { return []netmap.Node{testNode(2, "e1", true, true)} }},
		{name: "named not an exit node", pref: "p", blocked: true, health: "not approved as an exit node",
			peers: func() []netmap.Node { return []netmap.Node{testNode(2, "p", false, true)} }},
		{name: "named expired", pref: "e1", blocked: true, health: "expired",
			peers: func() []netmap.Node {
				n := testNode(2, "e1", true, true)
				n.Expiry = past
				return []netmap.Node{n}
			}},
		{name: "auto lowest RTT", pref: "auto", want: "e2", rtt: map[string]time.Duration{"e1": 40 * time.Millisecond, "e2": 4 * time.Millisecond},
			peers: func() []netmap.Node {
				return []netmap.Node{testNode(2, "e1", true, true), testNode(3, "e2", true, true)}
			}},
		{name: "auto measured before unknown", pref: "auto", want: "e2", rtt: map[string]time.Duration{"e2": 400 * time.Millisecond},
			peers: func() []netmap.Node {
				return []netmap.Node{testNode(2, "e1", true, true), testNode(3, "e2", true, true)}
			}},
		{name: "auto unknown: map order", pref: "auto", want: "e1",
			peers: func() []netmap.Node {
				return []netmap.Node{testNode(2, "e1", true, true), testNode(3, "e2", true, true)}
			}},
		{name: "auto skips offline", pref: "auto", want: "e2", rtt: map[string]time.Duration{"e1": time.Millisecond},
			peers: func() []netmap.Node {
				return []netmap.Node{testNode(2, "e1", true, false), testNode(3, "e2", true, true)}
			}},
		{name: "auto skips dead", pref: "auto", want: "e2", dead: []string{"e1"},
			peers: func() []netmap.Node {
				return []netmap.Node{testNode(2, "e1", true, true), testNode(3, "e2", true, true)}
			}},
		{name: "auto none online", pref: "auto", blocked: true, health: "no exit node available",
			peers: func() []netmap.Node {
				return []netmap.Node{testNode(2, "e1", true, false), testNode(3, "p", false, true)}
			}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, eng, r := bareDaemon(t)
			peers := tc.peers()
			nm := &netmap.NetworkMap{Self: testNode(1, "self", false, true), Peers: peers, Domain: "warren.test"}
			nm.Self.Key = pubkey.Node{PublicKey: d.key.PublicKey()}
			byName := map[string]*netmap.Node{}
			for i := range peers {
				byName[peers[i].Name] = &peers[i]
				eng.setPath(peers[i].Key, magicsock.Path{RTT: tc.rtt[peers[i].Name]})
			}
			d.mu.Lock()
			d.prefs.ExitNode = tc.pref
			for _, n := range tc.dead {
				d.routes.dead = map[pubkey.Node]time.Time{byName[n].Key: time.Now().Add(time.Hour)}
			}
			d.applyMapLocked(nm)
			d.mu.Unlock()

			rs := d.RouteStatus()
			if rs.CurrentExitNode != tc.want || (rs.ExitBlocked != "") != tc.blocked {
				t.Fatalf("exit node %q blocked %q; want %q blocked %v", rs.CurrentExitNode, rs.ExitBlocked, tc.want, tc.blocked)
			}
			h := strings.Join(d.Status().Health, "\n")
			if (tc.health == "") != (h == "") || !strings.Contains(h, tc.health) {
				t.Errorf("health %q, want %q", h, tc.health)
			}
			for i := range peers {
				p := &peers[i]
				got, ok := eng.allowed(p.Key.PublicKey)
				if !usable(p, nm.Self.Key, time.Now()) {
					if ok {
						t.Errorf("%s (expired) in the engine", p.Name)
					}
					continue
				}
				want := slices.Clone(p.AllowedIPs)
				if p.Name == tc.want {
					want = append(want, exitRoutes...)
				}
				if !equalPrefixes(got, sorted(want)) {
					t.Errorf("%s: allowed IPs %v, want %v", p.Name, got, sorted(want))
				}
			}
			r.get(func(r *fakeRouter) {
				var wantTunnel, wantUnreach []netip.Prefix
				switch {
				case tc.want != "":
					wantTunnel = sorted(exitRoutes)
				case tc.blocked:
					wantUnreach = sorted(exitRoutes)
					for i := range peers {
						if usable(&peers[i], nm.Self.Key, time.Now()) {
							wantTunnel = append(wantTunnel, peers[i].AllowedIPs...)
						}
					}
					wantTunnel = sorted(wantTunnel)
				}
				if !equalPrefixes(r.tunnel, wantTunnel) || !equalPrefixes(r.unreachable, wantUnreach) {
					t.Errorf("table 52: via tunnel %v unreachable %v; want %v and %v", r.tunnel, r.unreachable, wantTunnel, wantUnreach)
				}
			})
		})
	}
}
