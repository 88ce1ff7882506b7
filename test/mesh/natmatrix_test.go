package mesh

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// natRow is one row (and column) of the NAT matrix: how a node's router
// treats its UDP flows.
type natRow struct {
	name string
	spec natSpec
	// portMap: the router is the hard NAT of startNodeBehindPortMapNAT,
	// running miniupnpd (PCP, NAT-PMP, UPnP-IGD), on its own link to the
	// core (spec is not used).
	portMap bool
}

// The matrix's rows. Every router sits behind an ISP router of its own,
// so two routers are three routers apart (ISP, core, ISP).
var natRows = []natRow{
	{name: "easy, filtering", spec: natSpec{kind: easyNAT, inputFilter: true, uplink: uplinkISP}},
	{name: "easy, no input filter", spec: natSpec{kind: easyNAT, uplink: uplinkISP}},
	{name: "hard", spec: natSpec{kind: hardNAT, inputFilter: true, uplink: uplinkISP}},
	{name: "hard + port mapping", portMap: true},
	{name: "UDP blocked", spec: natSpec{kind: easyNAT, inputFilter: true, uplink: uplinkISP, blockUDP: true}},
}

// natWant is the path each pair of rows must reach (the order of the pair
// does not matter): direct where both map a port that does not depend on
// the destination and UDP passes; the relay when one side picks a random
// port per destination (its peer's port-and-address filter never saw
// that port) or blocks UDP.
func natWant(a, b natRow) string {
	switch {
	case a.spec.blockUDP || b.spec.blockUDP:
		return "relay"
	case a.portMap || b.portMap:
		// The mapped port takes datagrams from anyone: the other side's
		// probes get in whatever port its NAT gives them.
		return "direct"
	case a.spec.kind == hardNAT || b.spec.kind == hardNAT:
		return "relay"
	}
	return "direct"
}

// TestNATMatrix: every pair of rows (each with two nodes, so a row meets
// itself), the path the pair reaches asserted and how long it took, the
// table logged for docs/NAT.md. A direct pair must be direct within 10 s
// of the first packet; a relayed pair must carry pings and stay on the
// relay for 6 s of traffic (three probe rounds).
func TestNATMatrix(t *testing.T) {
	needConntrack(t)
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	l.startServer("--relay", "--stun-listen", ":3478")
	l.mustAdmin("users", "create", "nat")
	key := l.mustAdmin("authkeys", "create", "--user", "nat", "--reusable")
	nodes := make([][2]*natNode, len(natRows))
	var all []*node
	for i, r := range natRows {
		for j := range 2 {
			name := fmt.Sprintf("m%d%c", i, 'a'+j)
			var n *natNode
			if r.portMap {
				n = l.startNodeBehindPortMapNAT(name)
			} else {
				n = l.startNodeBehind(name, r.spec)
			}
			nodes[i][j] = n
			all = append(all, n.node)
		}
	}
	parallel(t, all, func(n *node) error { _, err := n.up(key); return err })
	waitPeers(t, all, len(all)-1, 30*time.Second)
	result := map[[2]int]string{}
	for i := range natRows {
		for j := i; j < len(natRows); j++ {
			a, b := nodes[i][0], nodes[j][0]
			if i == j {
				b = nodes[i][1]
			}
			want := natWant(natRows[i], natRows[j])
			name := natRows[i].name + " × " + natRows[j].name
			t.Run(name, func(t *testing.T) {
				got, d := matrixPair(t, a, b, want)
				result[[2]int{i, j}] = fmt.Sprintf("%s %.2f s", got, d.Seconds())
				if got != want {
					t.Errorf("%s ↔ %s: %s, want %s\nconntrack of %s's router:\n%s\nconntrack of %s's router:\n%s",
						a.name, b.name, got, want, a.name, a.conntrack(), b.name, b.conntrack())
				}
			})
		}
	}
	t.Logf("NAT matrix (path, and time from the first packet to it):\n%s", matrixTable(result))
}

// matrixPair sends pings from a to b and returns the path reached and how
// long after the first ping: for want "direct", the first moment a's path
// is direct (within 10 s, else what it was then); for want "relay", the
// first ping answered, after which the path must stay on the relay for
// 6 s of pings.
func matrixPair(t *testing.T, a, b *natNode, want string) (string, time.Duration) {
	bV4, _ := b.ips()
	start := time.Now()
	last := ""
	if want == "direct" {
		for time.Since(start) < 10*time.Second {
			a.pingOnce(bV4, 200*time.Millisecond)
			if p, err := a.path(b.name); err == nil {
				last = p
				if p == "direct" {
					return p, time.Since(start)
				}
			}
		}
		return last, time.Since(start)
	}
	var answered time.Duration
	for time.Since(start) < 20*time.Second && answered == 0 {
		if a.pingOnce(bV4, time.Second) == nil {
			answered = time.Since(start)
		}
	}
	if answered == 0 {
		return "no path", time.Since(start)
	}
	for hold := time.Now(); time.Since(hold) < 6*time.Second; {
		a.pingOnce(bV4, 200*time.Millisecond)
		if p, err := a.path(b.name); err == nil {
			last = p
			if p == "direct" {
				return p, time.Since(start)
			}
		}
	}
	return last, answered
}

// matrixTable renders the results as a Markdown table.
func matrixTable(result map[[2]int]string) string {
	var sb strings.Builder
	sb.WriteString("| |")
	for _, r := range natRows {
		sb.WriteString(" " + r.name + " |")
	}
	sb.WriteString("\n|---|")
	for range natRows {
		sb.WriteString("---|")
	}
	sb.WriteString("\n")
	for i, r := range natRows {
		sb.WriteString("| " + r.name + " |")
		for j := range natRows {
			k := [2]int{min(i, j), max(i, j)}
			v, ok := result[k]
			if !ok {
				v = "—"
			}
			sb.WriteString(" " + v + " |")
		}
		sb.WriteString("\n")
	}
	return sb.String()
}
