package mesh

import (
	"bytes"
	"encoding/base64"
	"fmt"
	"testing"
	"time"
)

// TestNATCollidingMappings (#19): two nodes behind port-preserving
// masquerade routers that do not filter unsolicited input, with three
// routers between the NATs (ISP, core, ISP). A probe that reaches the far
// NAT before that NAT has a mapping for the flow is kept by its conntrack
// as a flow to the router itself, and the far node's own flow towards us
// is then given another port: neither side ever learns a port that works,
// unless the path layer opens its own NAT first with probes that do not
// reach the far one. The pair must go direct within 10 s whichever side
// sends first (lower node key, higher node key, both at once; and with
// only the core router between the NATs), and stay direct in both
// directions. The routers' conntrack tables are logged
// (the evidence in docs/NAT.md).
func TestNATCollidingMappings(t *testing.T) {
	needConntrack(t)
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	l.startServer("--relay", "--stun-listen", ":3478")
	l.mustAdmin("users", "create", "nat")
	key := l.mustAdmin("authkeys", "create", "--user", "nat", "--reusable")
	spec := natSpec{kind: easyNAT, uplink: uplinkISP}
	// The last pair's routers hang off the core directly: one router
	// between them is enough for the opening probes to die on the way.
	orders := []string{"lower key first", "higher key first", "both at once", "one router between"}
	var pairs [][2]*natNode
	var all []*node
	for i, order := range orders {
		spec := spec
		if order == "one router between" {
			spec.uplink = uplinkCore
		}
		a := l.startNodeBehind(fmt.Sprintf("p%da", i), spec)
		b := l.startNodeBehind(fmt.Sprintf("p%db", i), spec)
		pairs = append(pairs, [2]*natNode{a, b})
		all = append(all, a.node, b.node)
	}
	parallel(t, all, func(n *node) error { _, err := n.up(key); return err })
	waitPeers(t, all, len(all)-1, 15*time.Second)
	for i, order := range orders {
		a, b := pairs[i][0], pairs[i][1]
		waitEndpoints(t, []*node{a.node, b.node}, 10*time.Second)
		if keyLess(t, b.node, a.node) {
			a, b = b, a // a has the lower key
		}
		if order == "higher key first" {
			a, b = b, a
		}
		t.Run(order, func(t *testing.T) {
			defer func() {
				t.Logf("conntrack of %s's router:\n%s", a.name, a.conntrack())
				t.Logf("conntrack of %s's router:\n%s", b.name, b.conntrack())
			}()
			var stop chan struct{}
			if order == "both at once" {
				stop = make(chan struct{})
				done := make(chan struct{})
				aV4, _ := a.ips()
				go func() {
					defer close(done)
					for {
						select {
						case <-stop:
							return
						default:
							b.pingOnce(aV4, 200*time.Millisecond)
						}
					}
				}()
				defer func() { close(stop); <-done }()
			}
			d := waitPath(t, a.node, b.node, "direct", 10*time.Second)
			t.Logf("%s → %s direct after %v (%s)", a.name, b.name, d.Round(time.Millisecond), order)
			waitPath(t, b.node, a.node, "direct", 3*time.Second)
			if a.keptFrom(b) || b.keptFrom(a) {
				t.Errorf("a router keeps an unsolicited probe of the other's as a flow to itself")
			}
		})
	}
}

// keyLess reports whether a's node key sorts before b's (as bytes).
func keyLess(t *testing.T, a, b *node) bool {
	t.Helper()
	ka, err := base64.StdEncoding.DecodeString(a.selfKey(t))
	if err != nil {
		t.Fatal(err)
	}
	kb, err := base64.StdEncoding.DecodeString(b.selfKey(t))
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Compare(ka, kb) < 0
}

// TestNATAdjacentCollide: the same routers with no router between them
// (their WAN ports on one segment). A probe that passes its own NAT
// arrives at the other with its time to live left, whatever it was set
// to, so the first probe either way is kept by the far router and the
// node's own flow is given another port: the pair stays on the relay
// (data flows there), and the routers' conntrack shows the collision (a
// flow to the router itself, and the node's flow on another port).
func TestNATAdjacentCollide(t *testing.T) {
	needConntrack(t)
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	l.startServer("--relay", "--stun-listen", ":3478")
	l.mustAdmin("users", "create", "nat")
	key := l.mustAdmin("authkeys", "create", "--user", "nat", "--reusable")
	spec := natSpec{kind: easyNAT, uplink: uplinkShared}
	a := l.startNodeBehind("adja", spec)
	b := l.startNodeBehind("adjb", spec)
	all := []*node{a.node, b.node}
	parallel(t, all, func(n *node) error { _, err := n.up(key); return err })
	waitPeers(t, all, 1, 15*time.Second)
	waitEndpoints(t, all, 10*time.Second)
	defer func() {
		t.Logf("conntrack of %s's router:\n%s", a.name, a.conntrack())
		t.Logf("conntrack of %s's router:\n%s", b.name, b.conntrack())
	}()
	bV4, _ := b.ips()
	for start := time.Now(); time.Since(start) < 10*time.Second; {
		a.pingOnce(bV4, 200*time.Millisecond)
		if p, _ := a.path(b.name); p == "direct" {
			t.Fatalf("direct between adjacent colliding NATs after %v", time.Since(start))
		}
	}
	if a.pingOnce(bV4, 2*time.Second) != nil {
		t.Fatal("no traffic over the relay")
	}
	if p, _ := a.path(b.name); p != "relay" {
		t.Fatalf("path %q, want relay", p)
	}
	// The collision: each router keeps the other's probe as a flow to
	// itself on the node's port, and the node's flow leaves from another.
	if !a.keptFrom(b) && !b.keptFrom(a) {
		t.Errorf("neither router keeps an unsolicited flow from the other to port 41641")
	}
}
