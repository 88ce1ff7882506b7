package mesh

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// TestPeerRelayHardHard: two nodes behind hard (random-port) NATs never
// go direct and start on the server's TCP relay; a third node on the
// core with a reachable UDP port offers to relay (warren up
// --relay-server-port), and once an admin approves it both move onto it:
// UDP end to end through the peer relay. Throughput through the TCP relay
// and through the peer relay is measured in the same run with iperf3 and
// logged (no assertion on it). While the policy lets no one use the relay
// they stay on the TCP relay. When the peer relay's daemon dies they go
// back to the TCP relay.
func TestPeerRelayHardHard(t *testing.T) {
	needConntrack(t)
	needTool(t, "iperf3")
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	l.startServer("--relay", "--stun-listen", ":3478")
	l.mustAdmin("users", "create", "pr")
	key := l.mustAdmin("authkeys", "create", "--user", "pr", "--reusable")
	hard := natSpec{kind: hardNAT, inputFilter: true, uplink: uplinkISP}
	a := l.startNodeBehind("ha", hard)
	b := l.startNodeBehind("hb", hard)
	relay := l.startNode("relay")
	all := []*node{a.node, b.node, relay}
	parallel(t, []*node{a.node, b.node}, func(n *node) error { _, err := n.up(key); return err })
	if out, err := relay.upWith(key, "--relay-server-port", "3480"); err != nil {
		t.Fatalf("relay up: %v\n%s", err, out)
	}
	waitPeers(t, all, 2, 30*time.Second)
	bV4, _ := b.ips()

	// Not approved yet: the TCP relay carries the pair.
	waitPath(t, a.node, b.node, "relay", 20*time.Second)
	if out := l.mustAdmin("nodes", "relays"); !strings.Contains(out, "relay") || !strings.Contains(out, "3480") || !strings.Contains(out, "not approved") {
		t.Fatalf("nodes relays before approval:\n%s", out)
	}
	wait.For(t, 10*time.Second, "a says why a → b is not direct: probes-unanswered", func() bool {
		a.pingOnce(bV4, 200*time.Millisecond)
		st, err := a.status()
		p := peerNamed(st, b.name)
		return err == nil && p != nil && p.PathReason == "probes-unanswered"
	})
	tcpRate, why := iperf(t, a.node, b.node, bV4, 5)
	if why != "" {
		t.Fatalf("through the TCP relay: %s", why)
	}
	waitPath(t, a.node, b.node, "relay", 5*time.Second) // still: the measurement was of the relay

	// Approved, but a policy lets no one use it: the pair stays on the TCP
	// relay (pings for 5 s); without the policy both move onto the peer
	// relay.
	pol := filepath.Join(t.TempDir(), "policy.hujson")
	if err := os.WriteFile(pol, []byte(`{
	"acls": [{"action": "accept", "src": ["*"], "dst": ["*:*"]}],
	"peerRelays": [{"relay": ["*"], "users": ["nobody@"]}],
}`), 0o644); err != nil {
		t.Fatal(err)
	}
	l.mustAdmin("policy", "set", pol)
	l.mustAdmin("nodes", "approve-relay", "relay")
	if out := l.mustAdmin("nodes", "relays"); !strings.Contains(out, "serving on UDP port 3480") {
		t.Fatalf("nodes relays after approval:\n%s", out)
	}
	for hold := time.Now(); time.Since(hold) < 5*time.Second; {
		a.pingOnce(bV4, 200*time.Millisecond)
		if p, _ := a.path(b.name); p == "peer-relay" {
			t.Fatal("a node the policy does not allow went through the peer relay")
		}
	}
	l.mustAdmin("policy", "delete")
	d := waitPath(t, a.node, b.node, "peer-relay", 30*time.Second)
	t.Logf("a → b on the peer relay %v after the policy allowed it", d.Round(time.Millisecond))
	waitPath(t, b.node, a.node, "peer-relay", 15*time.Second)
	peerRate, why := iperf(t, a.node, b.node, bV4, 5)
	if why != "" {
		t.Fatalf("through the peer relay: %s", why)
	}
	for _, n := range []*node{a.node, b.node} {
		st, err := n.status()
		if err != nil {
			t.Fatal(err)
		}
		if p := peerNamed(st, map[*node]string{a.node: b.name, b.node: a.name}[n]); p == nil || p.Path != "peer-relay" || p.PathRelay != "relay" {
			t.Errorf("%s after the measurement: %+v, want the peer relay through node relay", n.name, peerStatus(st, b.name))
		}
	}
	if got := a.metric(`warren_peer_relay_packets_total{event="sent"}`); got <= 0 {
		t.Errorf("a sent %v packets through the peer relay", got)
	}
	if got := relay.metric(`warren_peer_relay_server_packets_total{event="forwarded"}`); got <= 0 {
		t.Errorf("the relay forwarded %v packets", got)
	}
	t.Logf("iperf3 a → b, 5 s each, same run: TCP relay %.0f Mbit/s, peer relay %.0f Mbit/s", tcpRate, peerRate)

	// The peer relay dies: back to the TCP relay, traffic flows.
	relay.kill()
	d = waitPath(t, a.node, b.node, "relay", 20*time.Second)
	t.Logf("a → b back on the TCP relay %v after the peer relay died", d.Round(time.Millisecond))
	wait.For(t, 10*time.Second, "ping a → b over the TCP relay", func() bool { return a.pingOnce(bV4, time.Second) == nil })
}
