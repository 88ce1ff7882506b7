package mesh

import (
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/localapi"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

func peerNamed(st *localapi.Status, name string) *localapi.PeerStatus {
	for i := range st.Peers {
		if st.Peers[i].Name == name {
			return &st.Peers[i]
		}
	}
	return nil
}

// TestNodeLifecycle: a daemon killed with SIGKILL comes back on its saved
// state with the same addresses; `up --force-reauth` rotates the node key
// without breaking reachability; `logout` removes the node from every
// peer; an ephemeral node whose daemon dies is deleted after the grace
// period.
func TestNodeLifecycle(t *testing.T) {
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	l.startServer("--ephemeral-grace", "1s")
	l.mustAdmin("users", "create", "carol")
	key := l.mustAdmin("authkeys", "create", "--user", "carol", "--reusable")
	eph := l.mustAdmin("authkeys", "create", "--user", "carol", "--reusable", "--ephemeral")
	a, b, c := l.startNode("a"), l.startNode("b"), l.startNode("c")
	for _, n := range []*node{a, b} {
		if _, err := n.up(key); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := c.up(eph); err != nil {
		t.Fatal(err)
	}
	waitPeers(t, []*node{a, b, c}, 2, 10*time.Second)
	aV4, aV6 := a.ips()

	// Restart after SIGKILL: same key, same addresses, reachable again.
	a.kill()
	a.startDaemon()
	wait.For(t, 10*time.Second, "a running again", func() bool {
		st, err := a.status()
		return err == nil && st.BackendState == "Running" && st.Connected
	})
	if v4, v6 := a.ips(); v4 != aV4 || v6 != aV6 {
		t.Fatalf("addresses after restart %s %s, were %s %s", v4, v6, aV4, aV6)
	}
	if !wait.Poll(5*time.Second, func() bool { return b.pingOnce(aV4, time.Second) == nil }) {
		t.Fatal("b cannot reach a after a's restart")
	}

	// Key rotation on b.
	before, err := a.status()
	if err != nil {
		t.Fatal(err)
	}
	oldKey := peerNamed(before, "b").PublicKey
	bV4, _ := b.ips()
	out, err := warren(b.ns, "up", "--socket", b.sock, "--force-reauth")
	if err != nil {
		t.Fatalf("force-reauth: %v\n%s", err, out)
	}
	wait.For(t, 3*time.Second, "b's new key at a", func() bool {
		st, err := a.status()
		p := peerNamed(st, "b")
		return err == nil && p != nil && p.PublicKey != oldKey
	})
	if v4, _ := b.ips(); v4 != bV4 {
		t.Fatalf("b's address changed with its key: %s -> %s", bV4, v4)
	}
	if !wait.Poll(5*time.Second, func() bool { return a.pingOnce(bV4, time.Second) == nil }) {
		t.Fatal("a cannot reach b after b rotated its key")
	}

	// Logout: b leaves every map; its address answers no more.
	if out := l.must(b.ns, "logout", "--socket", b.sock); !strings.Contains(out, "logged out") {
		t.Fatalf("logout printed %q", out)
	}
	wait.For(t, 2*time.Second, "b gone from a's peers", func() bool {
		st, err := a.status()
		return err == nil && peerNamed(st, "b") == nil
	})
	if st, err := b.status(); err != nil || st.BackendState != "NeedsLogin" {
		t.Fatalf("b after logout: %+v %v", st, err)
	}
	if list := l.mustAdmin("nodes", "list"); strings.Contains(list, " b ") {
		t.Fatalf("logged-out node still listed:\n%s", list)
	}

	// The ephemeral node's daemon dies: it is deleted after the grace.
	c.kill()
	wait.For(t, 20*time.Second, "ephemeral c deleted", func() bool {
		st, err := a.status()
		return err == nil && peerNamed(st, "c") == nil
	})
}

// TestNodeExpiry: an admin expires a connected node: it is logged out at
// once, peers stop reaching it within 2 s and show it expired; joining
// again with an auth key brings it back with the same addresses.
func TestNodeExpiry(t *testing.T) {
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	l.startServer()
	l.mustAdmin("users", "create", "dave")
	key := l.mustAdmin("authkeys", "create", "--user", "dave", "--reusable")
	a, b := l.startNode("a"), l.startNode("b")
	for _, n := range []*node{a, b} {
		if _, err := n.up(key); err != nil {
			t.Fatal(err)
		}
	}
	waitPeers(t, []*node{a, b}, 1, 10*time.Second)
	bV4, _ := b.ips()
	if !wait.Poll(5*time.Second, func() bool { return a.pingOnce(bV4, time.Second) == nil }) {
		t.Fatal("a cannot reach b")
	}
	l.mustAdmin("nodes", "expire", "b")
	expiredAt := time.Now()
	if !wait.Poll(2*time.Second-time.Since(expiredAt), func() bool { return a.pingOnce(bV4, 200*time.Millisecond) != nil }) {
		t.Fatal("a still reaches expired b after 2 s")
	}
	wait.For(t, 3*time.Second, "b logged out", func() bool {
		st, err := b.status()
		return err == nil && st.BackendState == "NeedsLogin" && len(st.Health) > 0 && strings.Contains(st.Health[0], "expired")
	})
	// The pings stop as soon as either side acts on the expiry, and b has
	// (it logged out): a's map may show it a moment later.
	var ast string
	if !wait.Poll(5*time.Second, func() bool { ast = l.must(a.ns, "status", "--socket", a.sock); return strings.Contains(ast, "expired") }) {
		t.Errorf("a's status does not show b expired:\n%s", ast)
	}
	// Re-authenticating brings b back, same address.
	if _, err := b.up(key); err != nil {
		t.Fatal(err)
	}
	if v4, _ := b.ips(); v4 != bV4 {
		t.Fatalf("b's address changed: %s -> %s", bV4, v4)
	}
	if !wait.Poll(5*time.Second, func() bool { return a.pingOnce(bV4, time.Second) == nil }) {
		t.Fatal("a cannot reach b after it re-authenticated")
	}
}
