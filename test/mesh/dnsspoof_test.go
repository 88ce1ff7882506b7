package mesh

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/sys/unix"

	"github.com/warrenmesh/warren/internal/testutil/wait"
)

// udpNoPorts reads the datagrams ns received for no socket (/proc/net/snmp,
// Udp NoPorts).
func udpNoPorts(t *testing.T, n *node) int {
	t.Helper()
	out, err := n.ns.Output("cat", "/proc/net/snmp")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) < 2 || f[0] != "Udp:" {
			continue
		}
		if names == nil {
			names = f
			continue
		}
		for i, name := range names {
			if name == "NoPorts" && i < len(f) {
				v, _ := strconv.Atoi(f[i])
				return v
			}
		}
	}
	t.Fatalf("no Udp NoPorts in /proc/net/snmp:\n%s", out)
	return 0
}

func dnsQuery(id uint16, name string) []byte {
	m := new(mdns.Msg)
	m.SetQuestion(name, mdns.TypeA)
	m.Id = id
	b, _ := m.Pack()
	return b
}

// TestMagicDNSSpoofedSource: a node's resolver sockets (the MagicDNS
// service address, and an exit node's tunnel address) are bound to the
// tunnel device, so only queries the WireGuard engine decrypted and
// source-checked reach them. A LAN neighbour that routes those addresses
// to the node over the underlay and forges a peer's tunnel address as
// the source gets no query answered (the node would answer the peer
// through the tunnel: a blind open resolver); the real peer, through the
// tunnel, still gets its answers.
func TestMagicDNSSpoofedSource(t *testing.T) {
	l := newLab(t, "")
	l.db = "sqlite:" + t.TempDir() + "/warren.db"
	l.startServer()
	l.mustAdmin("users", "create", "alice")
	key := l.mustAdmin("authkeys", "create", "--user", "alice", "--reusable")
	a, b := l.startNode("a"), l.startNode("b")
	if _, err := a.up(key); err != nil {
		t.Fatal(err)
	}
	if out, err := warren(b.ns, "up", "--socket", b.sock, "--server", l.srv.url, "--auth-key", key, "--hostname", "b", "--advertise-exit-node", "--timeout", "20s"); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	l.mustAdmin("routes", "approve", "b", "exit")
	waitPeers(t, []*node{a, b}, 1, 10*time.Second)
	aV4, _ := a.ips()
	bV4, _ := b.ips()

	// a's socket: its own queries to b go out from it, and answers to
	// queries forged with its address would come back to it.
	var sock *net.UDPConn
	if err := a.ns.Do(func() (err error) {
		sock, err = net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4zero})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	defer sock.Close()
	port := sock.LocalAddr().(*net.UDPAddr).Port
	bDNS := netip.AddrPortFrom(netip.MustParseAddr(bV4), 53)
	// ask sends a query from a to b through the tunnel and returns the
	// IDs of every answer read until its own (false if none).
	ask := func(id uint16) ([]uint16, bool) {
		if _, err := sock.WriteToUDPAddrPort(dnsQuery(id, "b.warren.internal."), bDNS); err != nil {
			t.Fatal(err)
		}
		var ids []uint16
		buf := make([]byte, 1500)
		for {
			sock.SetReadDeadline(time.Now().Add(time.Second))
			n, err := sock.Read(buf)
			if err != nil {
				return ids, false
			}
			var m mdns.Msg
			if m.Unpack(buf[:n]) != nil {
				continue
			}
			ids = append(ids, m.Id)
			if m.Id == id {
				return ids, true
			}
		}
	}
	// The real peer gets answers from b's exit node resolver.
	id := uint16(1)
	wait.For(t, 15*time.Second, "a's query answered by b through the tunnel", func() bool {
		id++
		_, ok := ask(id)
		return ok
	})

	// The LAN neighbour (the router on b's segment) sends b queries to
	// both resolver addresses over the underlay, from a's tunnel address
	// and port; b does not drop them by reverse path.
	b.ns.Run(t, "sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0", "net.ipv4.conf.eth0.rp_filter=0")
	for _, dst := range []string{"100.100.100.100", bV4} {
		l.router.Run(t, "ip", "route", "add", dst+"/32", "via", b.under)
	}
	noPorts := udpNoPorts(t, b)
	const spoofed = 10
	if err := l.router.Do(func() error {
		fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err != nil {
			return err
		}
		defer unix.Close(fd)
		if err := unix.SetsockoptInt(fd, unix.SOL_IP, unix.IP_TRANSPARENT, 1); err != nil {
			return err
		}
		if err := unix.Bind(fd, &unix.SockaddrInet4{Addr: netip.MustParseAddr(aV4).As4(), Port: port}); err != nil {
			return fmt.Errorf("bind to the forged source: %w", err)
		}
		for i := range spoofed {
			dst := netip.MustParseAddr("100.100.100.100")
			if i%2 == 1 {
				dst = netip.MustParseAddr(bV4)
			}
			if err := unix.Sendto(fd, dnsQuery(uint16(1000+i), "b.warren.internal."), 0, &unix.SockaddrInet4{Addr: dst.As4(), Port: 53}); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The real peer's next query is answered; no forged one ever is.
	ids, ok := ask(500)
	if !ok {
		t.Fatal("a's query through the tunnel not answered after the forged ones")
	}
	for _, got := range ids {
		if got >= 1000 {
			t.Fatalf("b answered a query forged with a's address from its LAN (answers %v)", ids)
		}
	}
	// The forged queries did reach b, and found no socket.
	wait.For(t, 5*time.Second, "forged queries refused by b's kernel", func() bool { return udpNoPorts(t, b) >= noPorts+spoofed })
}
