package mesh

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/testutil/unitcaps"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// startNodeWithCaps starts a daemon as warren-daemon.service runs it:
// root, but with only the capabilities in bounding and no new privileges.
func (l *lab) startNodeWithCaps(name, bounding string) *node {
	ns, addr := l.attach("mn")
	dir := l.t.TempDir()
	n := &node{l: l, name: name, ns: ns, dir: dir, sock: filepath.Join(dir, "warrend.sock"), under: addr}
	n.cmd = ns.Start(l.t, "setpriv", "--nnp", "--bounding-set=-all,"+bounding, "--",
		warrenBin, "daemon", "--state-dir", filepath.Join(dir, "state"), "--socket", n.sock, "--tun", "warren0", "--verbose")
	waitDaemonSocket(l.t, name, n.sock)
	l.nodes = append(l.nodes, n)
	return n
}

// TestDaemonWithUnitCapabilities: the capabilities warren-daemon.service
// leaves the daemon are enough for what a node does: create its TUN and
// routes, join, reach a peer with `warren ping` (a raw ICMP socket:
// CAP_NET_RAW), answer MagicDNS on port 53 (CAP_NET_BIND_SERVICE) and
// route a subnet (forwarding sysctls and nftables: CAP_NET_ADMIN). Each
// was checked to fail with that capability left out.
func TestDaemonWithUnitCapabilities(t *testing.T) {
	needDig(t)
	l := newLab(t, "sqlite:"+filepath.Join(t.TempDir(), "warren.db"))
	l.startServer()
	caps := unitcaps.Setpriv(t, "warren-daemon.service")
	l.mustAdmin("users", "create", "carol")
	key := l.mustAdmin("authkeys", "create", "--user", "carol", "--reusable")
	a, b := l.startNodeWithCaps("a", caps), l.startNodeWithCaps("b", caps)
	lan := nettest.NewNS(t, "mclan")
	nettest.Veth(t, a.ns, "lan0", []string{"198.19.2.1/24"}, lan, "eth0", []string{"198.19.2.2/24"})
	if out, err := a.upWith(key, "--advertise-routes", "198.19.2.0/24"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	if out, err := b.upWith(key, "--accept-routes"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	waitPeers(t, []*node{a, b}, 1, 10*time.Second)
	bV4, _ := b.ips()
	if out := l.must(a.ns, "ping", "--socket", a.sock, "-c", "1", "b"); !strings.Contains(out, "1 received") {
		t.Errorf("warren ping with the unit's capabilities:\n%s", out)
	}
	wait.For(t, 10*time.Second, "MagicDNS on a", func() bool {
		return a.dig("+short", "@100.100.100.100", "b.warren.internal") == bV4
	})
	l.mustAdmin("routes", "approve", "a", "198.19.2.0/24")
	wait.For(t, 10*time.Second, "b pings the LAN behind a", func() bool { return b.pingOnce("198.19.2.2", 300*time.Millisecond) == nil })
	if sysctl(t, a.ns, "net.ipv4.ip_forward") != "1" || !nftHasWarren(a.ns) {
		t.Fatal("a: forwarding or masquerading not on")
	}
}
