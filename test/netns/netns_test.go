package netns

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/blake2s"

	"github.com/warrenmesh/warren/internal/nettest"
	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// pair sets up A (implementation imA) and B (imB) in two namespaces, each the
// other's peer with the IPv4 and IPv6 tunnel addresses, endpoints on the IPv4
// underlay (or the IPv6 one if v6).
func pair(t *testing.T, imA, imB impl, v6 bool) (a, b *node) {
	t.Helper()
	nsA, nsB, prefix := namespaces(t, v6)
	a = startNode(t, nsA, imA, prefix+"a", portA, tun4A+"/24", tun6A+"/64")
	b = startNode(t, nsB, imB, prefix+"b", portB, tun4B+"/24", tun6B+"/64")
	epA, epB := hostPort(ul4A, portA), hostPort(ul4B, portB)
	if v6 {
		epA, epB = hostPort(ul6A, portA), hostPort(ul6B, portB)
	}
	a.addPeer(t, b, epB, tun4B+"/32", tun6B+"/128")
	b.addPeer(t, a, epA, tun4A+"/32", tun6A+"/128")
	return a, b
}

// traffic pings both ways over IPv4 and IPv6 in the tunnel, moves TCP data
// both ways with iperf3 over both, and checks both sides' wg show dump: a
// fresh handshake, byte counters at least what iperf3 moved in each
// direction, and the other side's underlay endpoint.
func traffic(t *testing.T, a, b *node) {
	t.Helper()
	a.ping(t, tun4B)
	b.ping(t, tun4A)
	a.ping(t, tun6B)
	b.ping(t, tun6A)
	r4 := iperf(t, a, b, tun4B) // A is the client: up is A to B
	r6 := iperf(t, b, a, tun6A) // B is the client: up is B to A
	aToB, bToA := r4.up+r6.down, r4.down+r6.up
	checkPeer(t, a, b, hostPort(ul4B, portB), bToA, aToB)
	checkPeer(t, b, a, hostPort(ul4A, portA), aToB, bToA)
}

// TestWarrenWireguardGo: Warren (in the foreground) and wireguard-go
// interoperate: handshake, ICMP and TCP both ways over IPv4 and IPv6, and
// Warren's wg show reports the session, the traffic and the endpoint. Warren
// runs once with its TUN offloads (where the kernel has them) and once
// without.
func TestWarrenWireguardGo(t *testing.T) {
	nettest.NeedNetns(t)
	needTools(t, "iperf3", "ss")
	for _, im := range []impl{warrenFG, warrenFGPlain} {
		name := "offload"
		if im == warrenFGPlain {
			name = "plain"
		}
		t.Run(name, func(t *testing.T) {
			a, b := pair(t, im, wireguardGo, false)
			link, err := a.ns.Output("ip", "-d", "link", "show", "dev", a.ifname)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: %s", a.impl, strings.Join(strings.Fields(link), " "))
			if im == warrenFGPlain && !strings.Contains(link, "vnet_hdr off") {
				t.Errorf("WARREN_TUN_NO_OFFLOAD=1 but the TUN device has a vnet header:\n%s", link)
			}
			traffic(t, a, b)
		})
	}
}

// TestWarrenWarren: two Warrens, one daemonized by `warren wg IF` and one in
// the foreground, make the same tunnel; the daemon exits, removing its
// socket, when its interface is deleted.
func TestWarrenWarren(t *testing.T) {
	nettest.NeedNetns(t)
	needTools(t, "iperf3", "ss")
	a, b := pair(t, warrenDaemon, warrenFG, false)
	traffic(t, a, b)

	a.stop(t) // ip link del, then wait for the socket and the process to go
	if out, err := a.ns.Output("ip", "link", "show", "dev", a.ifname); err == nil {
		t.Errorf("%s still exists after ip link del:\n%s", a.ifname, out)
	}
}

// TestWgQuick: wg-quick brings up an interface with Warren as its userspace
// implementation, configures it from a file (addresses, key, port, peer),
// the tunnel works against wireguard-go, and wg-quick down removes the
// interface, upon which Warren exits.
func TestWgQuick(t *testing.T) {
	nettest.NeedNetns(t)
	needTools(t, "wg-quick", "bash")
	nsA, nsB, prefix := namespaces(t, false)
	b := startNode(t, nsB, wireguardGo, prefix+"b", portB, tun4B+"/24", tun6B+"/64")
	a := &node{ns: nsA, impl: warrenDaemon, ifname: prefix + "a", key: newKey(t), port: portA}
	b.addPeer(t, a, hostPort(ul4A, portA), tun4A+"/32", tun6A+"/128")

	dir := t.TempDir()
	conf := filepath.Join(dir, a.ifname+".conf")
	writeFile(t, conf, 0o600, fmt.Sprintf(`[Interface]
Address = %s/24, %s/64
PrivateKey = %s
ListenPort = %d

[Peer]
PublicKey = %s
AllowedIPs = %s/32, %s/128
Endpoint = %s
`, tun4A, tun6A, a.key.priv, a.port, b.key.pub, tun4B, tun6B, hostPort(ul4B, portB)))

	// WG_QUICK_USERSPACE_IMPLEMENTATION is run as "$IMPL" "$INTERFACE":
	// invoked through a symlink named warren-wg, the binary acts as
	// `warren wg`, which is what users are told to do.
	bin := filepath.Join(dir, "bin")
	if err := os.Mkdir(bin, 0o755); err != nil {
		t.Fatal(err)
	}
	wrapper := filepath.Join(bin, "warren-wg")
	if err := os.Symlink(warrenBin, wrapper); err != nil {
		t.Fatal(err)
	}
	// wg-quick tries `ip link add IF type wireguard` first and falls back to
	// the userspace implementation only if that fails and there is no
	// /sys/module/wireguard. Where the kernel has WireGuard (as on CI
	// runners) it would test the kernel instead of Warren, so shadow ip to
	// refuse that link type, and hide /sys/module in the private mount
	// namespace of `ip netns exec`.
	ipPath, err := exec.LookPath("ip")
	if err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(bin, "ip"), 0o755, fmt.Sprintf(`#!/bin/sh
if [ "$1 $2 $4 $5" = "link add type wireguard" ]; then
	echo "test shim: kernel WireGuard refused" >&2
	exit 1
fi
exec '%s' "$@"
`, ipPath))
	env := []string{"env", "-u", "LOG_LEVEL", "PATH=" + bin + ":" + os.Getenv("PATH"),
		"WG_QUICK_USERSPACE_IMPLEMENTATION=" + wrapper}

	up := append(env, "bash", "-c", `mount -t tmpfs warren-test /sys/module && exec wg-quick up "$1"`, "wg-quick-up", conf)
	out, err := nsA.Output(up...)
	t.Logf("wg-quick up:\n%s", out)
	// If it failed half-way, take down whatever it created.
	t.Cleanup(func() {
		if _, err := os.Stat(socketPath(a.ifname)); err == nil {
			nsA.Output("ip", "link", "del", "dev", a.ifname)
			wait.Poll(10*time.Second, func() bool { _, err := os.Stat(socketPath(a.ifname)); return err != nil })
		}
	})
	if err != nil {
		t.Fatalf("wg-quick up: %v", err)
	}

	// It is Warren's TUN, not a kernel interface, and it has its addresses.
	pid := findDaemon(t, a.ifname)
	link, err := nsA.Output("ip", "-d", "link", "show", "dev", a.ifname)
	if err != nil || !strings.Contains(link, "tun") || strings.Contains(link, "wireguard") {
		t.Fatalf("%s is not a TUN device: %v\n%s", a.ifname, err, link)
	}
	addrs, err := nsA.Output("ip", "-o", "addr", "show", "dev", a.ifname)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{tun4A + "/24", tun6A + "/64"} {
		if !strings.Contains(addrs, " "+want+" ") {
			t.Errorf("%s lacks address %s:\n%s", a.ifname, want, addrs)
		}
	}
	if got := a.peer(t, b); got.endpoint != hostPort(ul4B, portB) {
		t.Errorf("wg-quick configured endpoint %q, want %q", got.endpoint, hostPort(ul4B, portB))
	}
	a.ping(t, tun4B)
	b.ping(t, tun4A)
	a.ping(t, tun6B)
	b.ping(t, tun6A)
	checkPeer(t, a, b, hostPort(ul4B, portB), 1, 1)

	down := append(env, "wg-quick", "down", conf)
	out, err = nsA.Output(down...)
	t.Logf("wg-quick down:\n%s", out)
	if err != nil {
		t.Fatalf("wg-quick down: %v", err)
	}
	if out, err := nsA.Output("ip", "link", "show", "dev", a.ifname); err == nil {
		t.Errorf("%s still exists after wg-quick down:\n%s", a.ifname, out)
	}
	checkGone(t, a, pid)
}

// TestIPv6Underlay: the tunnel runs over an IPv6-only path between the
// namespaces' underlay addresses; the side without a configured endpoint
// learns the other's IPv6 endpoint from its packets.
func TestIPv6Underlay(t *testing.T) {
	nettest.NeedNetns(t)
	for _, imB := range []impl{wireguardGo, warrenFG} {
		t.Run(strings.ReplaceAll(imB.String(), " ", ""), func(t *testing.T) {
			a, b := pair(t, warrenFG, imB, true)
			// B has no endpoint for A; it must learn [fd00:198:18::1]:portA.
			b.wg(t, "set", b.ifname, "peer", a.key.pub, "remove")
			b.addPeer(t, a, "", tun4A+"/32", tun6A+"/128")
			a.ping(t, tun4B)
			a.ping(t, tun6B)
			b.ping(t, tun6A)
			checkPeer(t, a, b, hostPort(ul6B, portB), 1, 1)
			checkPeer(t, b, a, hostPort(ul6A, portA), 1, 1)
		})
	}
}

// TestRoaming: when wireguard-go moves to another port, Warren follows its
// authenticated packets to the new endpoint; when Warren moves, it sends from
// its new port and wireguard-go follows.
func TestRoaming(t *testing.T) {
	nettest.NeedNetns(t)
	a, b := pair(t, warrenFG, wireguardGo, false)
	a.ping(t, tun4B)
	b.ping(t, tun4A)
	checkPeer(t, a, b, hostPort(ul4B, portB), 1, 1)

	const newB = 51899
	b.wg(t, "set", b.ifname, "listen-port", strconv.Itoa(newB))
	b.ping(t, tun4A)
	if got := a.peer(t, b).endpoint; got != hostPort(ul4B, newB) {
		t.Errorf("after the peer moved to port %d, Warren's endpoint is %q, want %q", newB, got, hostPort(ul4B, newB))
	}
	a.ping(t, tun4B) // and replies go there

	const newA = 51898
	a.wg(t, "set", a.ifname, "listen-port", strconv.Itoa(newA))
	if out, err := a.ns.Output("wg", "show", a.ifname, "listen-port"); err != nil || strings.TrimSpace(out) != strconv.Itoa(newA) {
		t.Errorf("wg show %s listen-port: %q %v, want %d", a.ifname, out, err, newA)
	}
	a.ping(t, tun4B)
	if got := b.peer(t, a).endpoint; got != hostPort(ul4A, newA) {
		t.Errorf("after Warren moved to port %d, wireguard-go's endpoint is %q, want %q", newA, got, hostPort(ul4A, newA))
	}
	b.ping(t, tun4A)
}

// TestGarbageInput: datagrams that are not valid WireGuard (truncated,
// oversized, unknown types, junk handshakes with and without a valid MAC1,
// junk transport, random bytes) sent at Warren's port get no answer at all,
// and the tunnel keeps working.
func TestGarbageInput(t *testing.T) {
	nettest.NeedNetns(t)
	a, b := pair(t, warrenFG, wireguardGo, false)
	a.ping(t, tun4B)

	pub, err := base64.StdEncoding.DecodeString(a.key.pub)
	if err != nil {
		t.Fatal(err)
	}
	var conn *net.UDPConn
	if err := b.ns.Do(func() error {
		var err error
		conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ul4B)})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	dst := &net.UDPAddr{IP: net.ParseIP(ul4A), Port: portA}
	send := func(p []byte) {
		t.Helper()
		if _, err := conn.WriteToUDP(p, dst); err != nil {
			t.Fatalf("send %d bytes: %v", len(p), err)
		}
	}

	// First a few handshake messages that pass MAC1 (anyone who knows
	// Warren's public key can make them) but nothing else; few enough not
	// to put Warren under load (where a cookie reply would be correct).
	init := withMAC1(pub, typed(1, 148))
	send(init)
	send(withMAC1(pub, typed(1, 148)))
	send(withMAC1(pub, typed(2, 92))) // response to no initiation of ours
	time.Sleep(100 * time.Millisecond)

	send(nil)
	for _, n := range []int{1, 3, 4, 5, 31, 32, 47} {
		send(random(n))
	}
	send(init[:100])                           // truncated initiation
	send(init[:147])                           // one byte short
	send(append(append([]byte{}, init...), 0)) // one byte long
	for i := 0; i < 50; i++ {
		send(typed(1, 148)) // junk initiations, bad MAC1
	}
	send(typed(2, 92))  // junk response
	send(typed(3, 64))  // junk cookie reply
	send(typed(4, 32))  // empty transport, unknown receiver
	send(typed(4, 200)) // junk transport
	for _, ty := range []byte{0, 5, 255} {
		send(typed(ty, 148)) // unknown types
	}
	for i := 0; i < 50; i++ {
		var n [2]byte
		rand.Read(n[:])
		send(random(int(n[0])<<2 | int(n[1])&3)) // 0..1023 random bytes
	}

	conn.SetReadDeadline(time.Now().Add(1500 * time.Millisecond))
	buf := make([]byte, 2048)
	n, from, err := conn.ReadFromUDP(buf)
	var ne net.Error
	if err == nil {
		t.Errorf("got a %d-byte answer from %v to garbage: %s", n, from, hex.EncodeToString(buf[:n]))
	} else if !errors.As(err, &ne) || !ne.Timeout() {
		t.Errorf("read: %v", err)
	}

	// Still alive, the session intact and new ones possible.
	a.ping(t, tun4B)
	b.ping(t, tun4A)
	a.ping(t, tun6B)
	checkPeer(t, a, b, hostPort(ul4B, portB), 1, 1)
}

// typed returns an n-byte message of type ty (3 reserved zero bytes) filled
// with random bytes.
func typed(ty byte, n int) []byte {
	p := random(n)
	if n >= 4 {
		p[0], p[1], p[2], p[3] = ty, 0, 0, 0
	}
	return p
}

func random(n int) []byte {
	p := make([]byte, n)
	rand.Read(p)
	return p
}

// withMAC1 sets the MAC1 of handshake message p (MAC1 and MAC2 are its last
// 32 bytes) for a responder with public key pub, and zeroes MAC2.
func withMAC1(pub, p []byte) []byte {
	h, _ := blake2s.New256(nil)
	h.Write([]byte("mac1----"))
	h.Write(pub)
	key := h.Sum(nil)
	m := len(p) - 32
	mac, _ := blake2s.New128(key)
	mac.Write(p[:m])
	copy(p[m:], mac.Sum(nil))
	clear(p[m+16:])
	return p
}

// TestLowOrderPeer: Warren sends nothing at all to peers whose public key is
// a low-order point, even with a persistent keepalive of one second and
// traffic routed to them, while a control peer with an ordinary key
// configured the same way does get handshake initiations.
func TestLowOrderPeer(t *testing.T) {
	nettest.NeedNetns(t)
	nsA, nsB, prefix := namespaces(t, false)
	a := startNode(t, nsA, warrenFG, prefix+"a", portA, tun4A+"/24")

	lowOrder := []string{
		"0000000000000000000000000000000000000000000000000000000000000000", // 0
		"0100000000000000000000000000000000000000000000000000000000000000", // 1
		"e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800", // order 8
		"5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157", // order 8
		"ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f", // p-1
	}
	type target struct {
		pub, addr string
		port      int
		conn      *net.UDPConn
	}
	var targets []*target
	for i, h := range lowOrder {
		k, _ := hex.DecodeString(h)
		targets = append(targets, &target{pub: base64.StdEncoding.EncodeToString(k), addr: fmt.Sprintf("100.64.0.%d", 10+i), port: 52000 + i})
	}
	control := &target{pub: newKey(t).pub, addr: "100.64.0.99", port: 52099}

	// Listen first, so that nothing Warren sends is missed.
	for _, tg := range append(targets, control) {
		if err := nsB.Do(func() error {
			var err error
			tg.conn, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.ParseIP(ul4B), Port: tg.port})
			return err
		}); err != nil {
			t.Fatal(err)
		}
		defer tg.conn.Close()
	}
	for _, tg := range append(targets, control) {
		a.wg(t, "set", a.ifname, "peer", tg.pub, "allowed-ips", tg.addr+"/32",
			"endpoint", hostPort(ul4B, tg.port), "persistent-keepalive", "1")
	}
	// Route traffic to them too (no reply is possible).
	for _, tg := range append(targets, control) {
		a.ns.Start(t, "ping", "-n", "-q", "-i", "0.5", "-w", "3", tg.addr)
	}

	type result struct {
		tg   *target
		n    int
		data []byte
	}
	results := make(chan result)
	for _, tg := range append(targets, control) {
		go func() {
			tg.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
			buf := make([]byte, 2048)
			r := result{tg: tg}
			for {
				n, _, err := tg.conn.ReadFromUDP(buf)
				if err != nil {
					break
				}
				if r.n == 0 {
					r.data = append([]byte{}, buf[:n]...)
				}
				r.n++
			}
			results <- r
		}()
	}
	for range len(targets) + 1 {
		r := <-results
		if r.tg == control {
			if r.n == 0 || len(r.data) != 148 || r.data[0] != 1 {
				t.Errorf("control peer (ordinary key) got %d datagrams, first %x; want handshake initiations: the test cannot see what Warren sends", r.n, r.data)
			}
			continue
		}
		if r.n != 0 {
			t.Errorf("low-order peer %s got %d datagrams, first %x", r.tg.pub, r.n, r.data)
		}
	}
	dump := a.dump(t)
	for _, tg := range targets {
		p, ok := dump[tg.pub]
		if !ok {
			t.Errorf("low-order peer %s missing from wg show dump", tg.pub)
			continue
		}
		if p.handshake != 0 || p.tx != 0 || p.rx != 0 {
			t.Errorf("low-order peer %s: handshake %d, tx %d, rx %d; want all 0", tg.pub, p.handshake, p.tx, p.rx)
		}
	}
}

func writeFile(t *testing.T, name string, mode os.FileMode, data string) {
	t.Helper()
	if err := os.WriteFile(name, []byte(data), mode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(name, mode); err != nil { // whatever the umask
		t.Fatal(err)
	}
}
