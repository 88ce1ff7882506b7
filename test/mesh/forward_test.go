package mesh

import (
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/netmap"
	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
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
	wait.For(t, 10*time.Second, "rogue reaches the approved LAN", func() bool { return a.pingOnce("198.19.1.2", 300*time.Millisecond) == nil })
	r4, _ := r.ips()
	r.listen(t, 8081)

	// Defence in depth: the router's nftables forward chain checks the
	// same destinations.
	fwd, err := r.ns.Output("nft", "list", "chain", "inet", "warren", "forward")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"ip daddr 198.19.1.0/24 accept", "ct state established,related accept", "ip saddr 198.19.1.0/24 accept", "drop"} {
		if !strings.Contains(fwd, want) {
			t.Fatalf("router's forward chain lacks %q:\n%s", want, fwd)
		}
	}

	// From the router's side into the tunnel: a host of the approved
	// subnet may start flows (its replies come back), a host of another
	// subnet may not.
	a4, _ := a.ips()
	lan.Run(t, "ip", "route", "add", a4+"/32", "via", "198.19.1.1")
	lan2.Run(t, "ip", "route", "add", a4+"/32", "via", "198.19.2.1")
	if _, err := lan.Output("ping", "-c1", "-W", "2", a4); err != nil {
		t.Fatalf("a host of the approved subnet cannot ping %s over the tunnel: %v", a.name, err)
	}
	if _, err := lan2.Output("ping", "-c1", "-W", "1", a4); err == nil {
		t.Fatalf("a host of an unapproved subnet pinged %s over the tunnel", a.name)
	}

	denied := []struct{ what, addr string }{
		{"the metadata service", "169.254.169.254"},
		{"an unapproved subnet", "198.19.2.2"},
		{"the internet through a router that is no approved exit node", "198.19.20.1"},
	}
	check := func(phase string) {
		t.Helper()
		wait.For(t, 15*time.Second, phase+": rogue reaches the approved LAN through its forged routes", func() bool {
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
	wait.For(t, 15*time.Second, "rogue back on the real map", func() bool {
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
	wait.For(t, 10*time.Second, "the router has the policy", func() bool {
		nm, err := netmap.Load(filepath.Join(r.dir, "state", "netmap.json"))
		return err == nil && len(nm.PacketFilter) > 0 && string(nm.PacketFilter) != "null"
	})
	forgeRoutes(t, l, a, "router", "0.0.0.0/0", "169.254.169.254/32", "198.19.1.0/24", "198.19.2.0/24", "::/0")
	check(`policy with dst "*"`)
}

// inetWatch counts, in the "internet" namespace, the packets that arrive
// from src (a client's own underlay address: what left it directly).
func inetWatch(t *testing.T, inet *nettest.NS, src string) func() int {
	inet.Run(t, "nft", "add table inet watch")
	inet.Run(t, "nft", "add chain inet watch in { type filter hook input priority 0 ; }")
	inet.Run(t, "nft", "add rule inet watch in ip saddr "+src+" counter")
	re := regexp.MustCompile(`counter packets (\d+)`)
	return func() int {
		out, err := inet.Output("nft", "list", "chain", "inet", "watch", "in")
		if err != nil {
			t.Fatal(err)
		}
		m := re.FindStringSubmatch(out)
		if m == nil {
			t.Fatalf("no counter in:\n%s", out)
		}
		n, _ := strconv.Atoi(m[1])
		return n
	}
}

// TestExitNodeFailsClosed: a client using a named exit node loses it —
// its approval withdrawn, the node deleted, the node expired — and its
// internet traffic and DNS are blocked instead of leaving directly (the
// "internet" host, reachable over the client's own underlay too, sees
// nothing from the client's address), `status` says why, the tunnel and
// the control connection keep working, --exit-node-allow-lan still
// reaches the LAN; picking another exit node or clearing it restores.
// `--exit-node auto` with no exit node left fails closed too.
func TestExitNodeFailsClosed(t *testing.T) {
	needDig(t)
	needNft(t)
	l := newLab(t, backends(t)[0].DSN(t))
	l.startServer()
	l.mustAdmin("users", "create", "alice")
	key := l.mustAdmin("authkeys", "create", "--user", "alice", "--reusable")

	// The internet host is reachable directly from every node's underlay.
	inet, inetUnder := l.attach("mxinet")
	inet.Run(t, "ip", "addr", "add", "198.19.20.1/32", "dev", "lo")
	l.router.Run(t, "ip", "route", "add", "198.19.20.0/24", "via", inetUnder)
	testResolver(t, inet, "198.19.20.1", 53, map[string]string{"internet.test.": "198.19.20.53"})
	sink := newTCPSink(t, inet, "198.19.20.1:8080")
	l.resolv = "nameserver 198.19.20.1\n"
	e1, e2, c := l.startNode("exit1"), l.startNode("exit2"), l.startNode("client")
	clan := nettest.NewNS(t, "mxclan")
	nettest.Veth(t, c.ns, "lan0", []string{"198.19.30.1/24"}, clan, "eth0", []string{"198.19.30.2/24"})
	direct := inetWatch(t, inet, c.under)

	parallel(t, []*node{e1, e2, c}, func(n *node) error {
		var extra []string
		if n != c {
			extra = []string{"--advertise-exit-node"}
		}
		_, err := n.upWith(key, extra...)
		return err
	})
	waitPeers(t, []*node{e1, e2, c}, 2, 10*time.Second)
	l.mustAdmin("routes", "approve", "exit1", "exit")
	l.mustAdmin("routes", "approve", "exit2", "exit")
	wait.For(t, 10*time.Second, "exit nodes approved on the client", func() bool {
		n := 0
		for _, p := range c.routes(t).Peers {
			if p.ExitNode {
				n++
			}
		}
		return n == 2
	})

	use := func(e *node) {
		t.Helper()
		c.set(t, "--exit-node", e.name)
		wait.For(t, 10*time.Second, "internet through "+e.name, func() bool { return c.pingOnce("198.19.20.1", 300*time.Millisecond) == nil })
		before := direct()
		if !c.dial("198.19.20.1", 8080, 2*time.Second) {
			t.Fatalf("no TCP to the internet host through %s", e.name)
		}
		if !wait.Poll(2*time.Second, func() bool { return slices.Contains(sink.seen(), netip.MustParseAddr(e.under)) }) {
			t.Fatalf("the internet host saw %v, not %s's address %s", sink.seen(), e.name, e.under)
		}
		if got := c.dig("@100.100.100.100", "internet.test", "+short"); got != "198.19.20.53" {
			t.Fatalf("DNS through %s: %q", e.name, got)
		}
		if n := direct(); n != before {
			t.Fatalf("%d packets left the client directly while it used %s", n-before, e.name)
		}
	}
	blocked := func(why string, other *node) {
		t.Helper()
		wait.For(t, 10*time.Second, "client drops its exit node", func() bool { return c.routes(t).CurrentExitNode == "" })
		for _, fam := range []string{"-4", "-6"} {
			if out, _ := c.ns.Output("ip", fam, "route", "show", "table", "52"); !strings.Contains(out, "unreachable default") {
				t.Fatalf("%s: no unreachable default route in table 52 (%s):\n%s", why, fam, out)
			}
		}
		before := direct()
		if c.pingOnce("198.19.20.1", 500*time.Millisecond) == nil {
			t.Fatalf("%s: internet host reachable", why)
		}
		if c.dial("198.19.20.1", 8080, 500*time.Millisecond) {
			t.Fatalf("%s: TCP to the internet host", why)
		}
		if got := c.dig("@100.100.100.100", "internet.test", "+short"); got == "198.19.20.53" {
			t.Fatalf("%s: DNS answered by the internet's resolver", why)
		}
		if n := direct(); n != before {
			t.Fatalf("%s: %d packets left the client directly", why, n-before)
		}
		wait.For(t, 10*time.Second, "client says why: "+why, func() bool {
			st, err := c.status()
			return err == nil && slices.ContainsFunc(st.Health, func(h string) bool { return regexp.MustCompile(why).MatchString(h) })
		})
		if out := l.must(c.ns, "status", "--socket", c.sock); !regexp.MustCompile(`# health: ` + why).MatchString(out) {
			t.Fatalf("status does not say why:\n%s", out)
		}
		// The node's own underlay traffic and the tunnel still work.
		if st, err := c.status(); err != nil || !st.Connected {
			t.Fatalf("%s: client lost the server: %v %+v", why, err, st)
		}
		if other != nil {
			o4, _ := other.ips()
			if err := c.pingOnce(o4, 2*time.Second); err != nil {
				t.Fatalf("%s: no ping to %s over the tunnel: %v", why, other.name, err)
			}
		}
	}

	use(e1)
	// The reverse direction: a host on the exit node's side (the internet
	// host, given a route to the client's tunnel address through exit1)
	// cannot start flows into the tunnel, although the client takes any
	// source address from its exit node.
	c4, _ := c.ips()
	l.router.Run(t, "ip", "route", "add", c4+"/32", "via", e1.under)
	if _, err := inet.Output("ping", "-c1", "-W", "1", c4); err == nil {
		t.Fatalf("a host beyond the exit node pinged the client's tunnel address %s", c4)
	}
	l.router.Run(t, "ip", "route", "del", c4+"/32")
	l.mustAdmin("routes", "unapprove", "exit1", "exit")
	blocked(`exit node exit1 unavailable: not approved.*; internet traffic blocked`, e2)
	c.set(t, "--exit-node-allow-lan")
	wait.For(t, 10*time.Second, "LAN with --exit-node-allow-lan", func() bool { return c.pingOnce("198.19.30.2", 300*time.Millisecond) == nil })
	blocked(`exit node exit1 unavailable: not approved.*; internet traffic blocked`, e2)
	c.set(t, "--exit-node-allow-lan=false")

	use(e2)
	l.mustAdmin("nodes", "delete", "exit2")
	blocked(`exit node exit2 unavailable: not in the network map.*; internet traffic blocked`, e1)

	l.mustAdmin("routes", "approve", "exit1", "exit")
	use(e1)
	l.mustAdmin("nodes", "expire", "exit1")
	blocked(`exit node exit1 unavailable: expired.*; internet traffic blocked`, nil)

	c.set(t, "--exit-node", "auto")
	blocked(`exit node auto: no exit node available; internet traffic blocked`, nil)

	c.set(t, "--exit-node=")
	wait.For(t, 10*time.Second, "internet directly without an exit node", func() bool { return c.pingOnce("198.19.20.1", 300*time.Millisecond) == nil })
	if direct() == 0 {
		t.Fatal("cleared exit node: the ping did not go out directly")
	}
	if got := c.dig("@100.100.100.100", "internet.test", "+short"); got != "198.19.20.53" {
		t.Fatalf("DNS after clearing the exit node: %q", got)
	}
	if strings.Contains(ipRules(t, c.ns), "lookup 52") {
		t.Fatalf("rules left after clearing the exit node:\n%s", ipRules(t, c.ns))
	}
}
