package mesh

import (
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/warrenmesh/warren/internal/control/admin"
	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// policyPhone: alice's nodes reach everything; the phone (tag:phone)
// reaches alice's nodes on 80 and 5201 only (and pings them).
const policyPhone = `{
	"tagOwners": {"tag:phone": ["alice@"]},
	"acls": [
		{"action": "accept", "src": ["alice@"], "dst": ["*:*"]},
		{"action": "accept", "src": ["tag:phone"], "dst": ["alice@:80,5201"]},
	],
	"tests": [
		{"src": "tag:phone", "accept": ["alice@:80"], "deny": ["alice@:22"]},
		{"src": "alice@", "accept": ["tag:phone:22"]},
	],
}
`

// TestWireGuardDevice is issue #22: a "phone" namespace running stock
// wireguard-go, configured by wg-quick from the file `warren admin nodes
// add-wireguard` printed, joins through a gateway node behind the router.
// It pings and reaches TCP services on two other nodes by MagicDNS name,
// they reach it, the policy denies it one port, the others see it online
// in status, and deleting it cuts it off within 2 s. The throughput phone
// → member through the gateway is logged against a direct Warren path.
func TestWireGuardDevice(t *testing.T) {
	for _, tool := range []string{"wg-quick", "wg", "bash", "timeout"} {
		if _, err := exec.LookPath(tool); err != nil {
			if os.Getenv(nettest.RequireEnv) == "1" {
				t.Fatalf("%s not installed (scripts/install-deps.sh)", tool)
			}
			t.Skipf("%s not installed", tool)
		}
	}
	for _, b := range backends(t) {
		t.Run(b.Name, func(t *testing.T) { testWireGuardDevice(t, b.DSN(t)) })
	}
}

func testWireGuardDevice(t *testing.T, db string) {
	l := newLab(t, db)
	// The phone's traffic reaches the others' maps at most every 2 s here
	// (1 min by default).
	l.startServer("--wg-traffic-interval", "2s")
	l.mustAdmin("users", "create", "alice")
	dir := t.TempDir()
	polFile := filepath.Join(dir, "policy.hujson")
	writeTestFile(t, polFile, 0o644, policyPhone)
	l.mustAdmin("policy", "set", polFile)
	key := l.mustAdmin("authkeys", "create", "--user", "alice", "--reusable")
	gw, alpha, beta := l.startNode("gw"), l.startNode("alpha"), l.startNode("beta")
	nodes := []*node{gw, alpha, beta}
	parallel(t, nodes, func(n *node) error { _, err := n.up(key); return err })
	waitPeers(t, nodes, 2, 10*time.Second)
	for _, n := range []*node{alpha, beta} {
		n.listen(t, 80, 22)
	}
	aV4, _ := alpha.ips()

	// The device, and its configuration exactly as printed.
	conf := l.mustAdmin("nodes", "add-wireguard", "phone", "--user", "alice", "--via", "gw", "--tags", "tag:phone", "--qr")
	if !strings.Contains(conf, "\nPrivateKey = ") || !strings.Contains(conf, "▀") {
		t.Fatalf("add-wireguard printed no private key or QR code:\n%s", conf)
	}
	conf = conf[:strings.Index(conf, "PersistentKeepalive = 25")+len("PersistentKeepalive = 25")] + "\n" // the file, without the QR code
	var phoneNode admin.Node
	var list []admin.Node
	if err := json.Unmarshal([]byte(l.mustAdmin("--json", "nodes", "list")), &list); err != nil {
		t.Fatal(err)
	}
	for _, n := range list {
		if n.Name == "phone" {
			phoneNode = n
		}
	}
	if phoneNode.Via == 0 {
		t.Fatalf("phone not listed with its gateway: %+v", list)
	}
	again := l.mustAdmin("nodes", "wireguard-config", "phone")
	if strings.Contains(again, "\nPrivateKey = ") {
		t.Fatalf("wireguard-config printed the private key again:\n%s", again)
	}
	if out, err := l.admin("nodes", "wireguard-config", "alpha"); err == nil || !strings.Contains(out, "is a Warren node") {
		t.Fatalf("wireguard-config for a Warren node: %v\n%s", err, out)
	}

	phone, _ := l.attach("mph")
	joined := time.Now()
	ifname := fmt.Sprintf("wgp%d", time.Now().UnixNano()%100000)
	wgQuickUp(t, phone, dir, ifname, conf)
	phoneV4 := phoneNode.Addresses[0]

	// The phone reaches both nodes by MagicDNS name: ping and TCP.
	for _, name := range []string{"alpha", "beta"} {
		wait.For(t, 15*time.Second, "phone pings "+name, func() bool {
			_, err := phone.Output("ping", "-c1", "-W1", name)
			return err == nil
		})
		if !phoneDial(phone, name, 80) {
			t.Fatalf("phone cannot reach %s:80 by name", name)
		}
		if phoneDial(phone, name, 22) {
			t.Fatalf("phone reached %s:22, which the policy denies it", name)
		}
	}
	// They reach it, and see it online, named, with its gateway's report.
	for _, n := range []*node{alpha, beta} {
		if err := n.pingOnce(phoneV4, 2*time.Second); err != nil {
			t.Fatalf("%s cannot ping the phone: %v", n.name, err)
		}
		waitPhoneOnline(t, n, true, 10*time.Second)
	}
	// They see its traffic as the gateway reported it: the gateway
	// reports with each handshake and every 30 s, the server publishes
	// at most every 2 s (--wg-traffic-interval).
	for _, n := range []*node{alpha, beta} {
		waitPhoneTraffic(t, n, joined, 45*time.Second)
	}
	if st := l.must(alpha.ns, "status", "--socket", alpha.sock); !strings.Contains(st, "via gw") || !strings.Contains(st, "as reported by gateway gw") {
		t.Errorf("alpha's status does not show the phone via gw with the gateway's report of its traffic:\n%s", st)
	}
	if st := l.must(gw.ns, "status", "--socket", gw.sock); !strings.Contains(st, "wireguard 198.18.") {
		t.Errorf("the gateway's status does not show the phone's WireGuard address:\n%s", st)
	}
	phoneListen(t, phone, phoneV4, 22)
	if !alpha.dial(phoneV4, 22, 2*time.Second) {
		t.Fatal("alpha cannot reach the phone's TCP service")
	}

	// Throughput: phone → alpha through the gateway, and beta → alpha on a
	// direct Warren path (logged, not asserted).
	sink(t, alpha, aV4, 5201)
	viaGW := sendFor(t, phone, aV4, 5201, 2*time.Second)
	direct := sendFor(t, beta.ns, aV4, 5201, 2*time.Second)
	t.Logf("throughput to alpha: phone via gateway %.0f Mbit/s, beta direct %.0f Mbit/s, ratio %.2f", viaGW, direct, viaGW/direct)

	// Its gateway offline: the others show it offline. Back: online again
	// once the phone has handshaken with the restarted gateway.
	gw.kill()
	waitPhoneOnline(t, alpha, false, 15*time.Second)
	gw.startDaemon()
	wait.For(t, 40*time.Second, "phone reaches alpha again through the restarted gateway", func() bool {
		_, err := phone.Output("ping", "-c1", "-W1", "alpha")
		return err == nil
	})
	waitPhoneOnline(t, alpha, true, 10*time.Second)

	// Deleting the phone cuts it off within 2 s.
	l.mustAdmin("nodes", "delete", "phone")
	deleted := time.Now()
	if !wait.Poll(2*time.Second, func() bool { return !phoneDialWithin(phone, aV4, 80, "0.3") }) {
		t.Fatalf("the phone still reaches alpha %v after its deletion", time.Since(deleted))
	}
	t.Logf("phone cut off %v after `nodes delete` returned", time.Since(deleted).Round(time.Millisecond))
	if err := alpha.pingOnce(phoneV4, 500*time.Millisecond); err == nil {
		t.Fatal("alpha still pings the deleted phone")
	}
}

// waitPhoneOnline waits until n's status shows the phone online (or not).
func waitPhoneOnline(t *testing.T, n *node, online bool, d time.Duration) {
	t.Helper()
	wait.For(t, d, fmt.Sprintf("%s sees the phone online=%v", n.name, online), func() bool {
		st, err := n.status()
		if err != nil {
			return false
		}
		for _, p := range st.Peers {
			if p.Name == "phone" {
				return p.Online == online && (!online || !p.LastHandshake.IsZero())
			}
		}
		return false
	})
}

// waitPhoneTraffic waits until n's `status --json` shows the phone's
// traffic (both ways) as its gateway reported it after since.
func waitPhoneTraffic(t *testing.T, n *node, since time.Time, d time.Duration) {
	t.Helper()
	var last string
	if !wait.Poll(d, func() bool {
		st, err := n.status()
		if err != nil {
			return false
		}
		for _, p := range st.Peers {
			if p.Name == "phone" {
				last = fmt.Sprintf("rx %d tx %d reported at %v via %q", p.RxBytes, p.TxBytes, p.TrafficReportedAt, p.Via)
				return p.RxBytes > 0 && p.TxBytes > 0 && p.Via == "gw" && p.TrafficReportedAt.After(since.Add(-time.Second))
			}
		}
		return false
	}) {
		t.Fatalf("%s does not see the phone's traffic as gw reported it after %v (last: %s)", n.name, d, last)
	}
	t.Logf("%s sees the phone's traffic: %s", n.name, last)
}

func writeTestFile(t *testing.T, path string, mode os.FileMode, text string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(text), mode); err != nil {
		t.Fatal(err)
	}
}

// wgQuickUp writes conf to IFNAME.conf and runs `wg-quick up` on it in ns
// with stock wireguard-go as the implementation. The kernel's WireGuard is
// refused (an ip shim, /sys/module hidden), and resolvconf is a shim that
// writes the namespace's own resolv.conf (never the host's).
func wgQuickUp(t *testing.T, ns *nettest.NS, dir, ifname, conf string) {
	t.Helper()
	netnsResolvConf(t, ns, "")
	path := filepath.Join(dir, ifname+".conf")
	writeTestFile(t, path, 0o600, conf)
	bin := filepath.Join(dir, "bin")
	if err := os.MkdirAll(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal(err)
	}
	writeTestFile(t, filepath.Join(bin, "ip"), 0o755, fmt.Sprintf(`#!/bin/sh
if [ "$1 $2 $4 $5" = "link add type wireguard" ]; then
	echo "test shim: kernel WireGuard refused" >&2
	exit 1
fi
exec '%s' "$@"
`, ipPath))
	writeTestFile(t, filepath.Join(bin, "resolvconf"), 0o755, fmt.Sprintf(`#!/bin/sh
# test shim: wg-quick's DNS goes to this namespace's resolv.conf only
case "$1" in
-a) cat > '%s' ;;
esac
exit 0
`, filepath.Join("/etc/netns", ns.Name, "resolv.conf")))
	env := []string{"env", "PATH=" + bin + ":" + os.Getenv("PATH"), "WG_QUICK_USERSPACE_IMPLEMENTATION=" + wggoBin}
	out, err := ns.Output(append(env, "bash", "-c", `mount -t tmpfs warren-test /sys/module && exec wg-quick up "$1"`, "wg-quick-up", path)...)
	t.Logf("wg-quick up:\n%s", out)
	t.Cleanup(func() { ns.Output("ip", "link", "del", "dev", ifname) })
	if err != nil {
		t.Fatalf("wg-quick up: %v", err)
	}
}

// phoneDial reports whether a TCP connection from ns to host:port (a name
// is resolved by the namespace's resolver) is set up within a second.
func phoneDial(ns *nettest.NS, host string, port int) bool {
	return phoneDialWithin(ns, host, port, "1")
}

// phoneDialWithin is phoneDial with a timeout in seconds (timeout(1)).
func phoneDialWithin(ns *nettest.NS, host string, port int, secs string) bool {
	_, err := ns.Output("timeout", secs, "bash", "-c", fmt.Sprintf("exec 3<>/dev/tcp/%s/%d", host, port))
	return err == nil
}

// phoneListen accepts (and closes) TCP connections on addr:port in ns.
func phoneListen(t *testing.T, ns *nettest.NS, addr string, port int) {
	var ln net.Listener
	if err := ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
}

// sink reads and discards what TCP connections to addr:port in n send.
func sink(t *testing.T, n *node, addr string, port int) {
	var ln net.Listener
	if err := n.ns.Do(func() (err error) {
		ln, err = net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }()
		}
	}()
}

// sendFor sends over one TCP connection from ns to addr:port for d and
// returns the rate in Mbit/s.
func sendFor(t *testing.T, ns *nettest.NS, addr string, port int, d time.Duration) float64 {
	t.Helper()
	var sent int64
	var took time.Duration
	err := ns.Do(func() error {
		c, err := net.DialTimeout("tcp", net.JoinHostPort(addr, strconv.Itoa(port)), 3*time.Second)
		if err != nil {
			return err
		}
		defer c.Close()
		buf := make([]byte, 128<<10)
		start := time.Now()
		c.SetWriteDeadline(start.Add(d))
		for {
			n, err := c.Write(buf)
			sent += int64(n)
			if err != nil {
				break
			}
		}
		took = time.Since(start)
		return nil
	})
	if err != nil {
		t.Fatalf("throughput to %s:%d: %v", addr, port, err)
	}
	return float64(sent) * 8 / took.Seconds() / 1e6
}
