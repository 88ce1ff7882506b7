package mesh

import (
	"context"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// upWith joins the node with key and extra `warren up` flags.
func (n *node) upWith(key string, extra ...string) (string, error) {
	return warren(n.ns, append([]string{"up", "--socket", n.sock, "--server", n.l.srv.url, "--auth-key", key, "--hostname", n.name, "--timeout", "20s"}, extra...)...)
}

// set changes flags of a node that is up (`warren up FLAGS`).
func (n *node) set(t *testing.T, flags ...string) {
	t.Helper()
	if out, err := warren(n.ns, append([]string{"up", "--socket", n.sock, "--timeout", "20s"}, flags...)...); err != nil {
		t.Fatalf("%s: warren up %v: %v\n%s", n.name, flags, err, out)
	}
}

func (n *node) routes(t *testing.T) *localapi.RouteStatus {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rs, err := localapi.NewClient(n.sock).Routes(ctx)
	if err != nil {
		t.Fatalf("%s: routes: %v", n.name, err)
	}
	return rs
}

// tcpSink accepts TCP connections on addr in ns and records the remote
// addresses it sees.
type tcpSink struct {
	mu    sync.Mutex
	peers []netip.Addr
}

func (s *tcpSink) seen() []netip.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.peers)
}

func newTCPSink(t *testing.T, ns *nettest.NS, addr string) *tcpSink {
	var ln net.Listener
	if err := ns.Do(func() (err error) { ln, err = net.Listen("tcp", addr); return err }); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	s := &tcpSink{}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			ap := netip.MustParseAddrPort(c.RemoteAddr().String())
			s.mu.Lock()
			s.peers = append(s.peers, ap.Addr().Unmap())
			s.mu.Unlock()
			c.Close()
		}
	}()
	return s
}

func ipRules(t *testing.T, ns *nettest.NS) string {
	out, err := ns.Output("ip", "rule", "show")
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func sysctl(t *testing.T, ns *nettest.NS, key string) string {
	out, err := ns.Output("sysctl", "-n", key)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(out)
}

func nftHasWarren(ns *nettest.NS) bool {
	_, err := ns.Output("nft", "list", "table", "inet", "warren")
	return err == nil
}

// TestRoutesSubnet is issue #8's subnet router: a router R in front of a
// "LAN" namespace advertises 198.19.1.0/24. Before an admin approves it no
// client reaches the LAN host; after `warren admin routes approve` a
// client with --accept-routes does (ping and TCP), one without does not,
// and the LAN host sees R's LAN address (masquerading; it has no route to
// the tunnel). Withdrawing the approval turns R's forwarding off again.
func TestRoutesSubnet(t *testing.T) {
	for _, b := range backends(t) {
		t.Run(b.Name, func(t *testing.T) { testRoutesSubnet(t, b.DSN(t)) })
	}
}

func testRoutesSubnet(t *testing.T, db string) {
	l := newLab(t, db)
	l.startServer()
	l.mustAdmin("users", "create", "alice")
	key := l.mustAdmin("authkeys", "create", "--user", "alice", "--reusable")
	r, c, d := l.startNode("router"), l.startNode("client"), l.startNode("plain")

	lan := nettest.NewNS(t, "mrlan")
	nettest.Veth(t, r.ns, "lan0", []string{"198.19.1.1/24"}, lan, "eth0", []string{"198.19.1.2/24"})
	sink := newTCPSink(t, lan, "198.19.1.2:8080")
	fwdBefore := sysctl(t, r.ns, "net.ipv4.ip_forward")

	if out, err := c.upWith(key, "--advertise-routes", "198.19.1.1/24"); err == nil || !strings.Contains(out, "did you mean 198.19.1.0/24") {
		t.Fatalf("bad --advertise-routes: %v\n%s", err, out)
	}
	parallel(t, []*node{r, c, d}, func(n *node) error {
		var extra []string
		switch n {
		case r:
			extra = []string{"--advertise-routes", "198.19.1.0/24"}
		case c:
			extra = []string{"--accept-routes"}
		}
		_, err := n.upWith(key, extra...)
		return err
	})
	waitPeers(t, []*node{r, c, d}, 2, 10*time.Second)

	// Advertised, not approved: nobody reaches the LAN, R does not forward.
	wait.For(t, 5*time.Second, "route advertised", func() bool {
		out, _ := l.admin("routes", "list")
		return strings.Contains(out, "198.19.1.0/24")
	})
	list := l.mustAdmin("routes", "list")
	if !strings.Contains(list, "NODE") || !regexpLine(list, `router\s+198\.19\.1\.0/24\s+-\s+-`) {
		t.Fatalf("routes list before approval:\n%s", list)
	}
	if c.pingOnce("198.19.1.2", 500*time.Millisecond) == nil || c.dial("198.19.1.2", 8080, 500*time.Millisecond) {
		t.Fatal("client reached the LAN before approval")
	}
	if nftHasWarren(r.ns) {
		t.Fatal("router set up masquerading before approval")
	}
	if out, err := l.admin("routes", "approve", "router", "198.19.1.0/33"); err == nil || !strings.Contains(out, `route "198.19.1.0/33" is not a CIDR prefix`) {
		t.Fatalf("approve a bad prefix: %v\n%s", err, out)
	}
	if out, err := l.admin("routes", "approve", "nosuch", "198.19.1.0/24"); err == nil || !strings.Contains(out, `node "nosuch" not found`) {
		t.Fatalf("approve for an unknown node: %v\n%s", err, out)
	}

	l.mustAdmin("routes", "approve", "router", "198.19.1.0/24")
	approved := time.Now()
	wait.For(t, 5*time.Second, "client pings the LAN host", func() bool { return c.pingOnce("198.19.1.2", 300*time.Millisecond) == nil })
	t.Logf("LAN host reachable %v after the approval", time.Since(approved).Round(time.Millisecond))
	if !c.dial("198.19.1.2", 8080, 2*time.Second) {
		t.Fatal("client cannot connect to the LAN host over TCP")
	}
	if !wait.Poll(2*time.Second, func() bool { return len(sink.seen()) > 0 }) || sink.seen()[0] != netip.MustParseAddr("198.19.1.1") {
		t.Fatalf("the LAN host saw %v, want the router's LAN address 198.19.1.1 (masquerade)", sink.seen())
	}
	if d.pingOnce("198.19.1.2", 500*time.Millisecond) == nil || d.dial("198.19.1.2", 8080, 500*time.Millisecond) {
		t.Fatal("a node without --accept-routes reached the LAN")
	}
	if sysctl(t, r.ns, "net.ipv4.ip_forward") != "1" || !nftHasWarren(r.ns) {
		t.Fatal("router: forwarding or masquerading not on")
	}
	if out := l.must(c.ns, "status", "--socket", c.sock); !regexpLine(out, `router\s+online\s+subnets 198\.19\.1\.0/24`) {
		t.Fatalf("client status does not show the router's subnet:\n%s", out)
	}
	if out := l.must(r.ns, "status", "--socket", r.sock); !strings.Contains(out, "# routing for peers: 198.19.1.0/24") {
		t.Fatalf("router status:\n%s", out)
	}

	// With a policy the router forwards only what it allows: TCP 8080 to
	// the LAN host, not ping; and nothing to the router itself.
	pol := filepath.Join(t.TempDir(), "policy.hujson")
	if err := os.WriteFile(pol, []byte(`{
	"hosts": {"lanhost": "198.19.1.2"},
	"acls": [{"action": "accept", "src": ["alice@"], "dst": ["lanhost:8080"], "proto": "tcp"}],
	"tests": [{"src": "alice@", "accept": ["lanhost:8080"], "deny": ["lanhost:22"]}],
}`), 0o644); err != nil {
		t.Fatal(err)
	}
	r.listen(t, 8080)
	r4, _ := r.ips()
	l.mustAdmin("policy", "set", pol)
	wait.For(t, 5*time.Second, "policy in force on the router", func() bool { return c.pingOnce("198.19.1.2", 300*time.Millisecond) != nil })
	if !c.dial("198.19.1.2", 8080, 2*time.Second) {
		t.Fatal("with the policy, the client cannot reach the LAN host on 8080")
	}
	if c.dial(r4, 8080, 500*time.Millisecond) {
		t.Fatal("the policy's LAN rule opened the router itself")
	}
	l.mustAdmin("policy", "delete")
	wait.For(t, 5*time.Second, "no policy: ping through the router again", func() bool { return c.pingOnce("198.19.1.2", 300*time.Millisecond) == nil })

	// Withdrawn: the client loses the LAN, the router stops forwarding.
	l.mustAdmin("routes", "unapprove", "router", "198.19.1.0/24")
	wait.For(t, 5*time.Second, "router stops forwarding", func() bool {
		return !nftHasWarren(r.ns) && sysctl(t, r.ns, "net.ipv4.ip_forward") == fwdBefore
	})
	wait.For(t, 5*time.Second, "client loses the LAN", func() bool { return c.pingOnce("198.19.1.2", 300*time.Millisecond) != nil })
	if strings.Contains(ipRules(t, c.ns), "lookup 52") {
		t.Fatalf("client kept its tunnel rules without tunnel routes:\n%s", ipRules(t, c.ns))
	}
}

// TestExitNode is issue #8's exit nodes: an "internet" namespace (a host
// at 198.19.20.1 with a DNS server) is reachable only through two exit
// nodes E1 and E2. A client with --exit-node auto reaches it through one
// of them while its control connection and its tunnels to peers keep
// working; a name only that DNS server knows resolves on the client (DNS
// follows the exit node); when the exit node's daemon is SIGKILLed the
// client reaches the internet host through the other within 10 s. With
// --exit-node-allow-lan a host on the client's own LAN stays reachable
// directly; clearing the exit node removes the routes and rules.
func TestExitNode(t *testing.T) {
	needDig(t)
	testExitNode(t, backends(t)[0].DSN(t))
}

func testExitNode(t *testing.T, db string) {
	l := newLab(t, db)
	l.startServer()
	l.mustAdmin("users", "create", "alice")
	key := l.mustAdmin("authkeys", "create", "--user", "alice", "--reusable")

	inet := nettest.NewNS(t, "mrinet")
	inet.Run(t, "ip", "addr", "add", "198.19.20.1/32", "dev", "lo")
	testResolver(t, inet, "198.19.20.1", 53, map[string]string{"internet.test.": "198.19.20.53"})
	sink := newTCPSink(t, inet, "198.19.20.1:8080")

	l.resolv = "nameserver 198.19.20.1\n" // the exit nodes' resolver
	e1, e2 := l.startNode("exit1"), l.startNode("exit2")
	l.resolv = "nameserver 198.18.250.250\n" // the client's: unreachable
	c := l.startNode("client")
	for i, e := range []*node{e1, e2} {
		lnet := []string{"198.19.10", "198.19.11"}[i]
		nettest.Veth(t, e.ns, "inet0", []string{lnet + ".1/24"}, inet, "e"+string(rune('1'+i)), []string{lnet + ".2/24"})
		e.ns.Run(t, "ip", "route", "add", "198.19.20.0/24", "via", lnet+".2")
	}
	clan := nettest.NewNS(t, "mrclan")
	nettest.Veth(t, c.ns, "lan0", []string{"198.19.30.1/24"}, clan, "eth0", []string{"198.19.30.2/24"})

	parallel(t, []*node{e1, e2, c}, func(n *node) error {
		extra := []string{"--advertise-exit-node"}
		if n == c {
			extra = []string{"--exit-node", "auto"}
		}
		_, err := n.upWith(key, extra...)
		return err
	})
	waitPeers(t, []*node{e1, e2, c}, 2, 10*time.Second)
	if c.pingOnce("198.19.20.1", 500*time.Millisecond) == nil {
		t.Fatal("client reached the internet host with no approved exit node")
	}
	if out, err := warren(c.ns, "up", "--socket", c.sock, "--exit-node", "exit1"); err == nil || !strings.Contains(out, "exit1 is not an exit node") {
		t.Fatalf("--exit-node of a peer not approved: %v\n%s", err, out)
	}
	if out, err := warren(c.ns, "up", "--socket", c.sock, "--exit-node", "nosuch"); err == nil || !strings.Contains(out, `no peer "nosuch"`) {
		t.Fatalf("--exit-node of an unknown peer: %v\n%s", err, out)
	}
	l.mustAdmin("routes", "approve", "exit1", "exit")
	l.mustAdmin("routes", "approve", "exit2", "0.0.0.0/0", "::/0")

	wait.For(t, 10*time.Second, "client reaches the internet host", func() bool { return c.pingOnce("198.19.20.1", 300*time.Millisecond) == nil })
	if !c.dial("198.19.20.1", 8080, 2*time.Second) {
		t.Fatal("client cannot connect to the internet host over TCP")
	}
	rs := c.routes(t)
	first := map[string]*node{"exit1": e1, "exit2": e2}[rs.CurrentExitNode]
	if first == nil {
		t.Fatalf("current exit node %q", rs.CurrentExitNode)
	}
	second := e1
	if first == e1 {
		second = e2
	}
	want := netip.MustParseAddr(map[*node]string{e1: "198.19.10.1", e2: "198.19.11.1"}[first])
	if !wait.Poll(2*time.Second, func() bool { return slices.Contains(sink.seen(), want) }) {
		t.Fatalf("the internet host saw %v, not %s's address %s", sink.seen(), first.name, want)
	}
	// The tunnel's own traffic stays on the underlay: the control stream
	// is up and the other exit node's tunnel address answers.
	if st, err := c.status(); err != nil || !st.Connected {
		t.Fatalf("client not connected to the server while using an exit node: %v %+v", err, st)
	}
	s4, _ := second.ips()
	if err := c.pingOnce(s4, 2*time.Second); err != nil {
		t.Fatalf("client cannot ping %s over the tunnel: %v", second.name, err)
	}
	if out := l.must(c.ns, "status", "--socket", c.sock); !strings.Contains(out, "# exit node: "+first.name) || !regexpLine(out, first.name+`\s+online\s+exit node \(in use\)`) {
		t.Fatalf("client status:\n%s", out)
	}
	// The default routes leave link-local traffic to the main table.
	if out, _ := c.ns.Output("ip", "-6", "route", "show", "table", "52"); !strings.Contains(out, "throw fe80::/10") || !strings.Contains(out, "default dev warren0") {
		t.Fatalf("client's IPv6 table 52:\n%s", out)
	}
	// DNS follows the exit node.
	if got := c.dig("@100.100.100.100", "internet.test", "+short"); got != "198.19.20.53" {
		t.Fatalf("internet.test on the client: %q", got)
	}

	// The LAN: through the exit node without allow-lan, directly with it.
	if c.pingOnce("198.19.30.2", 500*time.Millisecond) == nil {
		t.Fatal("client reached its LAN host through the exit node")
	}
	c.set(t, "--exit-node-allow-lan")
	wait.For(t, 10*time.Second, "client reaches its LAN with --exit-node-allow-lan", func() bool { return c.pingOnce("198.19.30.2", 300*time.Millisecond) == nil })
	if !strings.Contains(ipRules(t, c.ns), "suppress_prefixlength 0") {
		t.Fatalf("no LAN rule:\n%s", ipRules(t, c.ns))
	}
	if err := c.pingOnce("198.19.20.1", time.Second); err != nil {
		t.Fatal("with --exit-node-allow-lan the internet host is unreachable")
	}

	// Failover: SIGKILL the exit node's daemon.
	first.kill()
	killed := time.Now()
	if !wait.Poll(10*time.Second, func() bool { return c.pingOnce("198.19.20.1", 300*time.Millisecond) == nil }) {
		t.Fatalf("client did not reach the internet host through %s within 10 s of killing %s; routes %+v", second.name, first.name, c.routes(t))
	}
	failover := time.Since(killed)
	t.Logf("failover from %s to %s: internet host reachable again %v after SIGKILL", first.name, second.name, failover.Round(time.Millisecond))
	if rs := c.routes(t); rs.CurrentExitNode != second.name {
		t.Fatalf("exit node after failover %q, want %s", rs.CurrentExitNode, second.name)
	}
	wait.For(t, 5*time.Second, "internet.test through the second exit node", func() bool {
		return c.dig("@100.100.100.100", "internet.test", "+short") == "198.19.20.53"
	})

	// A dead data path fails over too: the first exit node comes back,
	// then the second's UDP is cut while its control stream stays up (the
	// map still says online); the client notices that nothing comes back.
	first.startDaemon()
	wait.For(t, 10*time.Second, first.name+" back online", func() bool {
		for _, p := range c.routes(t).Peers {
			if p.Name == first.name && p.Online {
				return true
			}
		}
		return false
	})
	second.ns.Run(t, "nft", "add table inet cut")
	second.ns.Run(t, "nft", "add chain inet cut out { type filter hook output priority 0 ; }")
	second.ns.Run(t, "nft", "add rule inet cut out udp sport 41641 drop")
	cut := time.Now()
	if !wait.Poll(10*time.Second, func() bool { return c.pingOnce("198.19.20.1", 300*time.Millisecond) == nil }) {
		t.Fatalf("no failover within 10 s of cutting %s's data path; routes %+v", second.name, c.routes(t))
	}
	t.Logf("failover from %s (data path cut, still online) to %s: %v", second.name, first.name, time.Since(cut).Round(time.Millisecond))
	if rs := c.routes(t); rs.CurrentExitNode != first.name {
		t.Fatalf("exit node after the cut %q, want %s", rs.CurrentExitNode, first.name)
	}

	// No exit node: routes and rules go, the internet host is out of reach.
	c.set(t, "--exit-node=")
	if strings.Contains(ipRules(t, c.ns), "lookup 52") {
		t.Fatalf("rules left after clearing the exit node:\n%s", ipRules(t, c.ns))
	}
	if c.pingOnce("198.19.20.1", 500*time.Millisecond) == nil {
		t.Fatal("internet host reachable with no exit node")
	}
	// An exit node taken down stops forwarding and removes its NAT table.
	fwd := sysctl(t, second.ns, "net.ipv4.ip_forward")
	l.must(second.ns, "down", "--socket", second.sock)
	if nftHasWarren(second.ns) || sysctl(t, second.ns, "net.ipv4.ip_forward") == fwd {
		t.Fatalf("%s after down: NAT table %v, ip_forward %s → %s", second.name, nftHasWarren(second.ns), fwd, sysctl(t, second.ns, "net.ipv4.ip_forward"))
	}
}

// regexpLine reports whether some line of out matches re.
func regexpLine(out, re string) bool {
	return regexp.MustCompile(`(?m)` + re).MatchString(out)
}
