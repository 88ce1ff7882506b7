package mesh

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"testing"
	"time"

	"warren/internal/netmap"
	"warren/internal/nettest"
)

// What a subnet router forwards (issue #16): only to its approved routes,
// whatever its peers' engines send it and whatever the policy says.

// dropCount reads warren_drops_total{reason=REASON} from `warren metrics`
// (0 when the reason is not there).
func (n *node) dropCount(t *testing.T, reason string) int {
	t.Helper()
	out := n.l.must(n.ns, "metrics", "--socket", n.sock)
	m := regexp.MustCompile(`(?m)^warren_drops_total\{reason="` + reason + `"\} (\d+)`).FindStringSubmatch(out)
	if m == nil {
		return 0
	}
	v, _ := strconv.Atoi(m[1])
	return v
}

// forgeRoutes makes n a rogue member: with the server down (so nothing
// corrects it), n's daemon restarts on a saved map edited to say that
// peer router offers routes the admin never approved, and n uses it as
// its exit node. n's own engine then sends whatever those routes cover
// to the router — what a modified daemon could do at any time.
func forgeRoutes(t *testing.T, l *lab, n *node, router string, routes ...string) {
	t.Helper()
	l.killServer()
	n.kill()
	path := filepath.Join(n.dir, "state", "netmap.json")
	nm, err := netmap.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for i := range nm.Peers {
		if nm.Peers[i].Name == router {
			found = true
			nm.Peers[i].Routes = nil
			for _, r := range routes {
				nm.Peers[i].Routes = append(nm.Peers[i].Routes, netip.MustParsePrefix(r))
			}
		}
	}
	if !found {
		t.Fatalf("no peer %s in %s's saved map", router, n.name)
	}
	if err := netmap.Save(path, nm); err != nil {
		t.Fatal(err)
	}
	n.startDaemon()
	n.set(t, "--exit-node", router) // the forged map says it is one
}

// TestRouteForwardsOnlyApproved: a router R approved only for
// 198.19.1.0/24 also has, on other interfaces, a metadata service at
// 169.254.169.254, another LAN 198.19.2.0/24 and an "internet" host
// 198.19.20.1 (R is not an approved exit node). A rogue member A whose
// engine sends R everything (its saved map forged to say R offers all of
// it) reaches none of them — without a policy, and with a policy whose
// rule has dst "*" — while the approved subnet keeps working; R counts
// the drops (warren_drops_total{reason="destination"}).
func TestRouteForwardsOnlyApproved(t *testing.T) {
	needNft(t)
	l := newLab(t, backends(t)[0].DSN(t))
	l.startServer()
	l.mustAdmin("users", "create", "alice")
	key := l.mustAdmin("authkeys", "create", "--user", "alice", "--reusable")
	r, a := l.startNode("router"), l.startNode("rogue")

	lan := nettest.NewNS(t, "mflan")
	nettest.Veth(t, r.ns, "lan0", []string{"198.19.1.1/24"}, lan, "eth0", []string{"198.19.1.2/24"})
	newTCPSink(t, lan, "198.19.1.2:8080")
	lan2 := nettest.NewNS(t, "mflan2")
	nettest.Veth(t, r.ns, "lan1", []string{"198.19.2.1/24"}, lan2, "eth0", []string{"198.19.2.2/24"})
	lan2Sink := newTCPSink(t, lan2, "198.19.2.2:8080")
	meta := nettest.NewNS(t, "mfmeta")
	nettest.Veth(t, r.ns, "meta0", []string{"169.254.0.1/16"}, meta, "eth0", []string{"169.254.169.254/16"})
	metaSink := newTCPSink(t, meta, "169.254.169.254:8080")
	inet := nettest.NewNS(t, "mfinet")
	nettest.Veth(t, r.ns, "inet0", []string{"198.19.21.1/24"}, inet, "eth0", []string{"198.19.21.2/24"})
	inet.Run(t, "ip", "addr", "add", "198.19.20.1/32", "dev", "lo")
	r.ns.Run(t, "ip", "route", "add", "198.19.20.0/24", "via", "198.19.21.2")
	inetSink := newTCPSink(t, inet, "198.19.20.1:8080")

	parallel(t, []*node{r, a}, func(n *node) error {
		extra := []string{"--accept-routes"}
		if n == r {
			extra = []string{"--advertise-routes", "198.19.1.0/24,198.19.2.0/24", "--advertise-exit-node"}
		}
		_, err := n.upWith(key, extra...)
		return err
	})
	waitPeers(t, []*node{r, a}, 1, 10*time.Second)
	l.mustAdmin("routes", "approve", "router", "198.19.1.0/24")
	waitFor(t, 10*time.Second, "rogue reaches the approved LAN", func() bool { return a.pingOnce("198.19.1.2", 300*time.Millisecond) == nil })
	r4, _ := r.ips()
	r.listen(t, 8081)

	denied := []struct{ what, addr string }{
		{"the metadata service", "169.254.169.254"},
		{"an unapproved subnet", "198.19.2.2"},
		{"the internet through a router that is no approved exit node", "198.19.20.1"},
	}
	check := func(phase string) {
		t.Helper()
		waitFor(t, 15*time.Second, phase+": rogue reaches the approved LAN through its forged routes", func() bool {
			return a.pingOnce("198.19.1.2", 300*time.Millisecond) == nil
		})
		if !a.dial("198.19.1.2", 8080, 2*time.Second) {
			t.Fatalf("%s: the approved subnet does not work over TCP", phase)
		}
		if !a.dial(r4, 8081, 2*time.Second) {
			t.Fatalf("%s: the router's own tunnel address does not work", phase)
		}
		before := r.dropCount(t, "destination")
		for _, d := range denied {
			if a.pingOnce(d.addr, 500*time.Millisecond) == nil {
				t.Errorf("%s: rogue pinged %s (%s) through the router", phase, d.what, d.addr)
			}
			if a.dial(d.addr, 8080, 500*time.Millisecond) {
				t.Errorf("%s: rogue connected to %s (%s:8080) through the router", phase, d.what, d.addr)
			}
		}
		for _, s := range []*tcpSink{lan2Sink, metaSink, inetSink} {
			if seen := s.seen(); len(seen) > 0 {
				t.Errorf("%s: a host beyond the approved routes saw connections from %v", phase, seen)
			}
		}
		if after := r.dropCount(t, "destination"); after < before+len(denied)*2 {
			t.Errorf("%s: router counted %d destination drops, want at least %d", phase, after-before, len(denied)*2)
		}
	}

	// No policy.
	forgeRoutes(t, l, a, "router", "0.0.0.0/0", "169.254.169.254/32", "198.19.1.0/24", "198.19.2.0/24", "::/0")
	check("no policy")

	// A policy whose rule has dst "*": it must not mean "any destination"
	// on the router.
	l.runServer()
	a.set(t, "--exit-node=")
	waitFor(t, 15*time.Second, "rogue back on the real map", func() bool {
		st, err := a.status()
		return err == nil && st.Connected
	})
	pol := filepath.Join(t.TempDir(), "policy.hujson")
	if err := os.WriteFile(pol, []byte(`{
	"hosts": {"meta": "169.254.169.254", "lan2": "198.19.2.0/24"},
	"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*", "meta:*", "lan2:*", "autogroup:internet:*"]}],
}`), 0o644); err != nil {
		t.Fatal(err)
	}
	l.mustAdmin("policy", "set", pol)
	waitFor(t, 10*time.Second, "the router has the policy", func() bool {
		nm, err := netmap.Load(filepath.Join(r.dir, "state", "netmap.json"))
		return err == nil && len(nm.PacketFilter) > 0 && string(nm.PacketFilter) != "null"
	})
	forgeRoutes(t, l, a, "router", "0.0.0.0/0", "169.254.169.254/32", "198.19.1.0/24", "198.19.2.0/24", "::/0")
	check(`policy with dst "*"`)
}
