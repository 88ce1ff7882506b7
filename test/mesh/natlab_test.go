package mesh

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// The NAT lab's routers. A node sits on its own LAN (198.19.N.2) behind a
// NAT router namespace doing nftables masquerade; how the router maps
// (port-preserving or random), whether it drops unsolicited datagrams to
// itself, and how it reaches the lab's core router are chosen per node, so
// the rows of a NAT matrix are built from one function:
//
//	uplinkCore:   node ─ NAT ─ core                 (NAT to NAT: one router between)
//	uplinkISP:    node ─ NAT ─ ISP ─ core           (NAT to NAT: ISP, core, ISP)
//	uplinkShared: node ─ NAT ═ shared segment ═ core (NAT to NAT: none, adjacent)

// uplink is how a NAT router reaches the core.
type uplink int

const (
	uplinkCore   uplink = iota // its own link to the core router
	uplinkISP                  // through an ISP router of its own
	uplinkShared               // on one segment (a bridge in the core) with the other shared NATs
)

// natSpec describes one NAT router of the lab.
type natSpec struct {
	kind natKind
	// inputFilter drops unsolicited UDP to the router itself, as a home
	// router's firewall does. Without it (a plain masquerading gateway)
	// a peer's probe that arrives before the router has a mapping for it
	// is kept by conntrack as a flow to the router, and the node's own
	// flow to that peer is then given another port.
	inputFilter bool
	uplink      uplink
	// blockUDP drops every UDP datagram the router would forward, from
	// the start (the node still reaches the server and relay over TCP).
	blockUDP bool
}

func (s natSpec) String() string {
	f := "no input filter"
	if s.inputFilter {
		f = "input filter"
	}
	u := map[uplink]string{uplinkCore: "core", uplinkISP: "via ISP", uplinkShared: "shared segment"}[s.uplink]
	if s.blockUDP {
		u += ", UDP blocked"
	}
	return fmt.Sprintf("%s, %s, %s", s.kind, f, u)
}

// attachWAN creates the NAT router namespace and connects its eth0 to the
// lab as spec.uplink says; it returns the namespace, the LAN index and the
// router's public (WAN) address.
func (l *lab) attachWAN(spec natSpec) (*nettest.NS, int, string) {
	t := l.t
	switch spec.uplink {
	case uplinkISP:
		isp, ispAddr := l.attach("misp")
		n := l.nets
		isp.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
		nat := nettest.NewNS(t, "mnat")
		down := fmt.Sprintf("198.18.%d", 100+n)
		nettest.Veth(t, isp, "down0", []string{down + ".1/24"}, nat, "eth0", []string{down + ".2/24"})
		nat.Run(t, "ip", "route", "add", "default", "via", down+".1")
		l.router.Run(t, "ip", "route", "add", down+".0/24", "via", ispAddr)
		return nat, n, down + ".2"
	case uplinkShared:
		l.nets++
		n := l.nets
		if !l.shared {
			l.router.Run(t, "ip", "link", "add", "shared0", "type", "bridge")
			l.router.Run(t, "ip", "link", "set", "shared0", "up")
			nettest.AddAddr(t, l.router, "shared0", "198.18.250.1/24")
			l.shared = true
		}
		nat := nettest.NewNS(t, "mnat")
		port := fmt.Sprintf("s%d", n)
		nettest.Veth(t, l.router, port, nil, nat, "eth0", []string{fmt.Sprintf("198.18.250.%d/24", 10+n)})
		l.router.Run(t, "ip", "link", "set", port, "master", "shared0")
		nat.Run(t, "ip", "route", "add", "default", "via", "198.18.250.1")
		return nat, n, fmt.Sprintf("198.18.250.%d", 10+n)
	}
	nat, wan := l.attach("mnat")
	return nat, l.nets, wan
}

// startNodeBehind starts a daemon (not yet joined) in a LAN namespace
// behind a NAT router built as spec says.
func (l *lab) startNodeBehind(name string, spec natSpec) *natNode {
	t := l.t
	nat, n, wan := l.attachWAN(spec)
	lan := nettest.NewNS(t, "mlan")
	nettest.Veth(t, nat, "lan0", []string{fmt.Sprintf("198.19.%d.1/24", n)}, lan, "eth0", []string{fmt.Sprintf("198.19.%d.2/24", n)})
	lan.Run(t, "ip", "route", "add", "default", "via", fmt.Sprintf("198.19.%d.1", n))
	nat.Run(t, "sysctl", "-qw", "net.ipv4.ip_forward=1")
	masq := "masquerade"
	if spec.kind == hardNAT {
		masq = "masquerade random"
	}
	gate, input := "", ""
	if spec.blockUDP {
		gate = "meta l4proto udp drop;"
	}
	if spec.inputFilter {
		input = `iifname "eth0" ct state new meta l4proto udp drop;`
	}
	rules := fmt.Sprintf(`table ip nat {
	chain post { type nat hook postrouting priority srcnat; oifname "eth0" %s; }
}
table inet filter {
	chain gate { type filter hook forward priority filter; %s }
	chain input { type filter hook input priority filter; %s }
}
`, masq, gate, input)
	path := filepath.Join(t.TempDir(), "nat.nft")
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		t.Fatal(err)
	}
	nat.Run(t, "nft", "-f", path)
	dir := t.TempDir()
	nd := &node{l: l, name: name, ns: lan, dir: dir, sock: filepath.Join(dir, "warrend.sock"), under: fmt.Sprintf("198.19.%d.2", n)}
	nd.startDaemon()
	l.nodes = append(l.nodes, nd)
	return &natNode{node: nd, nat: nat, wan: wan}
}

// keptFrom reports whether the router's conntrack keeps a flow from the
// other router to the node's port that nobody answered: an unsolicited
// probe held as a flow to the router itself.
func (n *natNode) keptFrom(other *natNode) bool {
	for _, line := range strings.Split(n.conntrack(), "\n") {
		if strings.Contains(line, "src="+other.wan+" dst="+n.wan+" ") && strings.Contains(line, "dport=41641 [UNREPLIED]") {
			return true
		}
	}
	return false
}

// conntrack lists the router's UDP conntrack entries.
func (n *natNode) conntrack() string {
	out, err := n.nat.Output("conntrack", "-L", "-p", "udp")
	if err != nil {
		return err.Error() + "\n" + out
	}
	return out
}

// waitEndpoints waits until every node knows an endpoint of every other
// on the underlay (its NAT's public address, from STUN), so the first
// probe goes out with the candidates the test is about.
func waitEndpoints(t *testing.T, nodes []*node, within time.Duration) {
	t.Helper()
	for _, a := range nodes {
		for _, b := range nodes {
			if a == b {
				continue
			}
			wait.For(t, within, a.name+" knows an underlay endpoint of "+b.name, func() bool {
				st, err := a.status()
				if err != nil {
					return false
				}
				p := peerNamed(st, b.name)
				if p == nil {
					return false
				}
				for _, ep := range p.Endpoints {
					if strings.HasPrefix(ep.Addr().String(), "198.18.") {
						return true
					}
				}
				return false
			})
		}
	}
}

// selfKey is the node's public key as its status shows it.
func (n *node) selfKey(t *testing.T) string {
	t.Helper()
	st, err := n.status()
	if err != nil || st.Self == nil {
		t.Fatalf("%s: status: %v", n.name, err)
	}
	return st.Self.PublicKey
}

// needConntrack skips (or with WARREN_REQUIRE_NETNS=1 fails) without
// the conntrack tool.
func needConntrack(t *testing.T) {
	needNft(t)
	needTool(t, "conntrack")
}
